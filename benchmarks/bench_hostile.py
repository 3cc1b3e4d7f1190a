"""Hostile-but-fair loads against `photodedup serve --model photodedup-tiny --weights random`: peak server
RSS and a well-behaved client's latency during each, the 1M-empty-items message, and SIGTERM under load.

Peak RSS is the kernel's high-water mark (VmHWM), reset before each load (/proc/PID/clear_refs), so each
row is that load's own peak. A polite client sends one 224 px thumbnail per Embed every 100 ms on its own
connection, from its own process, throughout; its p99 is the "well-behaved client" column.

Usage: bench_hostile.py [--only flood,mixed,idle,bombs,empty,sigterm] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import machine_line, write_section  # noqa: E402
from serverproc import ServerProcess  # noqa: E402

from photodedup.v1 import embed_pb2, embed_pb2_grpc, wire  # noqa: E402

log = logging.getLogger(__name__)
TINY = ["--model", "photodedup-tiny", "--weights", "random", "--threads", "1"]
LOADS = ("flood", "mixed", "idle", "bombs", "empty", "sigterm")


# ---------------------------------------------------------------------------------------------- helpers


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def unread_refusals(srv: ServerProcess) -> int:
    """EmbedService calls the server refused before reading their request (its metrics endpoint)."""
    with urllib.request.urlopen(f"http://{srv.metrics_address}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("photodedup_unread_refusals_total "):
                return int(float(line.split()[1]))
    return 0


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def small_jpegs(n: int, size: tuple[int, int] = (320, 240)) -> list[bytes]:
    """Photo-like JPEGs of ~30 KB (gradients plus noise), distinct per index."""
    rng = np.random.default_rng(7)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        base = np.stack(
            [127 + 100 * np.sin(xx / w * (1 + i % 5) + c) * np.cos(yy / h * (1 + i % 3)) for c in range(3)], -1
        )
        arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def png_bomb(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (side, side), (30, 60, 90, 200)).save(buf, "PNG")
    return buf.getvalue()


def channel(address: str) -> grpc.aio.Channel:
    """A channel with its own TCP connection: gRPC otherwise shares one connection among a process's channels
    to the same target, and the server's per-connection limit and fair decoding would see one client."""
    return grpc.aio.insecure_channel(address, options=[*wire.channel_options(), ("grpc.use_local_subchannel_pool", 1)])


class Polite:
    """One thumbnail per Embed every 100 ms on its own connection, in its own process (a well-behaved client
    is not the flood's process: sharing its event loop would time the flood's own serialisation); records
    latencies and errors."""

    def __init__(self, address: str, thumb: bytes) -> None:
        self.address = address
        self.thumb = thumb
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._stop, self._results = ctx.Event(), ctx.Event(), ctx.Queue()
        self._proc = ctx.Process(
            target=_polite_process, args=(address, thumb, self._ready, self._stop, self._results), daemon=True
        )

    async def start(self) -> None:
        """Start the client and wait until it is connected (its first, warm-up call is not counted)."""
        self._proc.start()
        if not await asyncio.to_thread(self._ready.wait, 120):
            raise RuntimeError("the polite client did not start")

    async def stop(self) -> None:
        self._stop.set()
        self.latencies, errors = await asyncio.to_thread(self._results.get, True, 120)
        self.errors = Counter(errors)
        await asyncio.to_thread(self._proc.join, 30)

    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies, 99) * 1000) if self.latencies else float("nan")


def _polite_process(address: str, thumb: bytes, ready: Any, stop: Any, results: Any) -> None:
    async def run() -> tuple[list[float], dict[str, int]]:
        request = embed_pb2.EmbedRequest(images=[embed_pb2.Image(encoded=thumb)])
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        async with channel(address) as ch:
            stub = embed_pb2_grpc.EmbedServiceStub(ch)
            await stub.Embed(request, timeout=60)
            ready.set()
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    reply = await stub.Embed(request, timeout=30)
                    if reply.results[0].WhichOneof("result") != "embedding":
                        errors[wire.status_name(reply.results[0].error.code)] += 1
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.1)
        return latencies, dict(errors)

    results.put(asyncio.run(run()))


async def embed(address: str, images: list[bytes], counts: Counter[str]) -> None:
    async with channel(address) as ch:
        try:
            reply = await embed_pb2_grpc.EmbedServiceStub(ch).Embed(
                embed_pb2.EmbedRequest(images=[embed_pb2.Image(encoded=b) for b in images]), timeout=300
            )
        except grpc.aio.AioRpcError as exc:
            counts[f"call {exc.code().name}"] += 1
            return
        for r in reply.results:
            counts["OK" if r.WhichOneof("result") == "embedding" else wire.status_name(r.error.code)] += 1


async def stream(address: str, images: list[bytes], messages: int, counts: Counter[str], tag: str) -> None:
    async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
        for m in range(messages):
            yield embed_pb2.EmbedStreamRequest(
                items=[
                    embed_pb2.StreamItem(id=f"{tag}.{m}.{i}", image=embed_pb2.Image(encoded=b))
                    for i, b in enumerate(images)
                ]
            )

    async with channel(address) as ch:
        try:
            async for resp in embed_pb2_grpc.EmbedServiceStub(ch).EmbedStream(requests(), timeout=300):
                for r in resp.results:
                    counts["OK" if r.WhichOneof("result") == "embedding" else wire.status_name(r.error.code)] += 1
        except grpc.aio.AioRpcError as exc:
            counts[f"stream {exc.code().name}"] += 1


async def measured(srv: ServerProcess, thumb: bytes, load: Any) -> dict[str, Any]:
    """Run `load()` with the polite client alongside; the server's peak RSS over it."""
    reset_peak(srv.pid)
    before = rss_mb(srv.pid, "VmRSS")
    unread = unread_refusals(srv)
    polite = Polite(srv.address, thumb)
    await polite.start()
    t0 = time.perf_counter()
    try:
        detail = await load()
    finally:
        await polite.stop()
    return {
        "peak_mb": rss_mb(srv.pid, "VmHWM"),
        "before_mb": before,
        "seconds": time.perf_counter() - t0,
        "polite_p99_ms": polite.p99_ms(),
        "polite_n": len(polite.latencies),
        "polite_errors": dict(polite.errors),
        "detail": detail,
        "unread": unread_refusals(srv) - unread,
    }


# ---------------------------------------------------------------------------------------------- loads


async def load_flood(address: str, jpegs: list[bytes]) -> str:
    counts: Counter[str] = Counter()
    await asyncio.gather(*(embed(address, jpegs, counts) for _ in range(24)))
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))


async def load_mixed(address: str, jpegs: list[bytes]) -> str:
    counts: Counter[str] = Counter()
    await asyncio.gather(
        *(embed(address, jpegs, counts) for _ in range(30)),
        *(stream(address, jpegs, 2, counts, f"s{i}") for i in range(10)),
    )
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))


async def load_idle(address: str) -> str:
    stop = asyncio.Event()

    async def idle(ch: grpc.aio.Channel) -> None:
        async def nothing() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
            await stop.wait()
            return
            yield  # pragma: no cover

        try:
            async for _ in embed_pb2_grpc.EmbedServiceStub(ch).EmbedStream(nothing()):
                pass
        except grpc.aio.AioRpcError:
            pass

    chans = [channel(address) for _ in range(20)]
    tasks = [asyncio.create_task(idle(chans[i % 20])) for i in range(200)]
    await asyncio.sleep(10)
    stop.set()
    await asyncio.gather(*tasks)
    for ch in chans:
        await ch.close()
    return "200 streams open 10 s, nothing sent"


async def load_bombs(address: str, bomb: bytes) -> str:
    counts: Counter[str] = Counter()
    await asyncio.gather(*(embed(address, [bomb], counts) for _ in range(30)))
    return f"30 × {len(bomb) // 1024} KB RGBA PNG, 8,900 × 8,900 px: " + ", ".join(
        f"{k} {v}" for k, v in sorted(counts.items())
    )


async def load_empty(address: str) -> dict[str, Any]:
    health_lat: list[float] = []
    done = asyncio.Event()

    async def health() -> None:
        async with channel(address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while not done.is_set():
                t0 = time.perf_counter()
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
                health_lat.append(time.perf_counter() - t0)
                await asyncio.sleep(0.02)

    message = embed_pb2.EmbedStreamRequest(items=[embed_pb2.StreamItem()] * 1_000_000)
    body = message.SerializeToString()
    checker = asyncio.create_task(health())
    await asyncio.sleep(0.3)
    async with channel(address) as ch:
        call = ch.stream_stream(
            wire.STREAM_METHOD,
            request_serializer=lambda b: b,
            response_deserializer=embed_pb2.EmbedStreamResponse.FromString,
        )

        async def one() -> AsyncIterator[bytes]:
            yield body

        t0 = time.perf_counter()
        answers = 0
        status = "OK"
        try:
            async for resp in call(one(), timeout=60):
                answers += len(resp.results)
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
        took = time.perf_counter() - t0
    await asyncio.sleep(0.3)
    done.set()
    await checker
    return {
        "answer_s": took,
        "status": status,
        "item_answers": answers,
        "message_mb": len(body) / 1e6,
        "health_max_ms": max(health_lat) * 1000 if health_lat else float("nan"),
        "health_median_ms": float(np.median(health_lat)) * 1000 if health_lat else float("nan"),
        "health_n": len(health_lat),
    }


async def load_sigterm(srv: ServerProcess, jpegs: list[bytes]) -> dict[str, Any]:
    """Four streams send a 64-image message every 50 ms through SIGTERM. Every message the server read must be
    answered in full (OK, or UNAVAILABLE once draining) and the ones it never read get nothing."""
    counts: Counter[str] = Counter()
    last_answer = [0.0]
    sent: dict[str, list[list[str]]] = {}
    answered: dict[str, set[str]] = {}

    async def one_stream(tag: str) -> None:
        sent[tag], answered[tag] = [], set()

        async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
            for m in range(400):
                ids = [f"{tag}.{m}.{i}" for i in range(64)]
                sent[tag].append(ids)
                yield embed_pb2.EmbedStreamRequest(
                    items=[
                        embed_pb2.StreamItem(id=rid, image=embed_pb2.Image(encoded=b))
                        for rid, b in zip(ids, jpegs[:64], strict=True)
                    ]
                )
                await asyncio.sleep(0.05)

        async with channel(srv.address) as ch:
            try:
                async for resp in embed_pb2_grpc.EmbedServiceStub(ch).EmbedStream(requests(), timeout=120):
                    last_answer[0] = time.perf_counter()
                    for r in resp.results:
                        answered[tag].add(r.id)
                        counts["OK" if r.WhichOneof("result") == "embedding" else wire.status_name(r.error.code)] += 1
            except grpc.aio.AioRpcError as exc:
                counts[f"stream {exc.code().name}"] += 1
                log.warning("stream %s ended with %s: %s", tag, exc.code().name, exc.details())

    tasks = [asyncio.create_task(one_stream(f"s{i}")) for i in range(4)]
    await asyncio.sleep(2.0)
    t_term = time.perf_counter()
    os.kill(srv.pid, signal.SIGTERM)
    await asyncio.gather(*tasks)
    proc = srv._proc
    assert proc is not None
    while proc.poll() is None:
        await asyncio.sleep(0.01)
    t_exit = time.perf_counter()
    for line in srv.log_text().splitlines():
        if any(word in line for word in ("ERROR", "WARNING", "Traceback", "INTERNAL")):
            log.warning("server: %s", line)
    partial = sum(
        1 for tag, msgs in sent.items() for ids in msgs if 0 < sum(i in answered[tag] for i in ids) < len(ids)
    )
    read = sum(1 for tag, msgs in sent.items() for ids in msgs if ids[0] in answered[tag])
    return {
        "exit_after_term_s": t_exit - t_term,
        "exit_after_last_answer_s": t_exit - last_answer[0],
        "answers": dict(counts),
        "messages_read": read,
        "messages_unread": sum(map(len, sent.values())) - read,
        "messages_in_part": partial,
        "rc": proc.returncode,
    }


# ---------------------------------------------------------------------------------------------- main


async def run(only: set[str], cache: Path) -> list[str]:
    jpegs = small_jpegs(1024)
    thumb = small_jpegs(1, (224, 224))[0]
    rows: list[str] = []
    extra: list[str] = []
    header = ["| load | peak server RSS | polite client p99 (n) | took | what the load got |", "|---|---|---|---|---|"]
    flags = [*TINY, "--cache-dir", str(cache)]
    with ServerProcess(flags):
        pass  # the ONNX export, once: a deployed server starts from a warm cache (torch never loads)
    with ServerProcess(flags) as srv:
        log.info("server up, RSS %.0f MB", rss_mb(srv.pid, "VmRSS"))
        cases: list[tuple[str, str, Any]] = [
            (
                "flood",
                f"24 concurrent Embed × 1,024 JPEGs ({sum(map(len, jpegs)) * 24 / 1e6:.0f} MB sent)",
                lambda: load_flood(srv.address, jpegs),
            ),
            ("mixed", "30 unary + 10 streams × 1,024 JPEGs", lambda: load_mixed(srv.address, jpegs)),
            ("idle", "200 idle streams", lambda: load_idle(srv.address)),
            ("bombs", "30 PNG bombs at the pixel limit", lambda: load_bombs(srv.address, png_bomb(8900))),
        ]
        for key, name, load in cases:
            if key not in only:
                continue
            r = await measured(srv, thumb, load)
            log.info("%s: %s", key, r)
            errs = f", errors {r['polite_errors']}" if r["polite_errors"] else ""
            rows.append(
                f"| {name} | {r['peak_mb']:.0f} MB (idle {r['before_mb']:.0f}) | "
                f"{r['polite_p99_ms']:.0f} ms ({r['polite_n']}{errs}) "
                f"| {r['seconds']:.1f} s | {r['detail']}"
                + (f" ({r['unread']} of the calls refused before their request was read)" if r["unread"] else "")
                + " |"
            )
        if "empty" in only:
            reset_peak(srv.pid)
            before = rss_mb(srv.pid, "VmRSS")
            e = await load_empty(srv.address)
            growth = rss_mb(srv.pid, "VmHWM") - before
            log.info("empty: %s growth %.0f MB", e, growth)
            extra.append(
                f"One EmbedStream message of 1,000,000 empty items ({e['message_mb']:.0f} MB): answered once "
                f"({e['status']}, {e['item_answers']} per-item answers) in {e['answer_s'] * 1000:.0f} ms; peak RSS "
                f"growth {growth:.0f} MB; health checks every 20 ms meanwhile ({e['health_n']}): median "
                f"{e['health_median_ms']:.0f} ms, slowest {e['health_max_ms']:.0f} ms."
            )
    if "sigterm" in only:
        with ServerProcess(flags) as srv:
            s = await load_sigterm(srv, jpegs)
            log.info("sigterm: %s", s)
            answers = ", ".join(f"{k} {v:,}" for k, v in sorted(s["answers"].items()))
            extra.append(
                "SIGTERM with 4 streams each sending a 64-image message every 50 ms: exit "
                f"{s['exit_after_term_s']:.2f} s after the signal and {s['exit_after_last_answer_s']:.2f} s after "
                f"the last answer (rc {s['rc']}); answers: {answers}; {s['messages_read']} messages read and "
                f"answered, {s['messages_in_part']} answered in part, {s['messages_unread']} sent after the "
                "streams ended (never read, so never accepted)."
                + (
                    " A stream's INTERNAL is grpc's asyncio client reporting its own failed write instead of the "
                    "server's OK when a write races the end of the call (grpc/grpc#36066); with the sync client "
                    "every stream ends OK (tests/integration/test_serve_process.py)."
                    if "stream INTERNAL" in s["answers"]
                    else ""
                )
            )
    return [*header, *rows, "", *extra] if rows else extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(LOADS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    only = set(args.only.split(","))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache:
        lines = asyncio.run(run(only, Path(cache)))
    nice = os.nice(0)
    command = " ".join(
        ["nice", "-n", str(nice)] * bool(nice) + ["python", "benchmarks/bench_hostile.py", *sys.argv[1:]]
    )
    text = (
        "## Bounded under hostile load\n\n"
        f"{machine_line()}. `{command}`: tiny model, default limits, server and clients on the same 2 cores, "
        f"which other work shared throughout (1-minute load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; the run was niced), so latencies are upper bounds for this load. "
        "Targets: peak RSS ≤ 1.5 GB and polite p99 ≤ 1 s under each load; the 1M-item message answered once "
        "within 1 s with ≤ 100 MB growth and no health stall; exit within in-flight work + 1 s with every "
        "accepted image answered or UNAVAILABLE.\n\n" + "\n".join(lines)
    )
    print(text)
    if not args.no_write:
        write_section("bench_hostile", text)


if __name__ == "__main__":
    main()

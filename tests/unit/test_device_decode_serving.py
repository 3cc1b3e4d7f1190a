"""The served path when the engine decodes JPEG on its GPU, with a fake engine on CPU: thumbnails travel
encoded to the engine, odd images are decoded on the CPU pool, and an image no decoder can read fails
alone (its batch-mates are answered)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from photodedup.engines.base import BatchOutput, EngineStatus, ModelInfo
from photodedup.engines.jpeg_route import DeviceJpeg
from photodedup.errors import InvalidImageError
from photodedup.imaging import Preprocessing, decode_for_model
from photodedup.server.admission import Admission
from photodedup.server.batcher import DynamicBatcher
from photodedup.server.decoding import FairDecoder, decode_images, measure_images
from photodedup.server.metrics import Metrics
from photodedup.server.pipeline import Pipeline, Runtime
from photodedup.settings import Settings
from photodedup.v1 import embed_pb2

SIZE = 32


def jpeg(value: int, size: int = SIZE, **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


def corrupt_scan() -> bytes:
    """A good header and scan data cut short: only decoding can tell."""
    data = jpeg(50)
    return data[: data.index(b"\xff\xda") + 20]


class DeviceDecodingEngine:
    """Decodes DeviceJpeg items itself, as the torch engine on CUDA does with nvJPEG (here with the CPU
    decoder), and reports an unreadable one as that row's error. Embedding: the first pixel's red value."""

    name: ClassVar[str] = "fake-device-decode"

    def __init__(self) -> None:
        self.device = "cuda:0"
        self.precision = "fp16"
        self.info = ModelInfo("fake", "none", 1, Preprocessing(input_size=SIZE))
        self.decodes_jpeg = True
        self.kinds: list[str] = []

    def load(self) -> None: ...
    def warmup(self, batch_sizes: Sequence[int]) -> None: ...
    def close(self) -> None: ...
    def status(self) -> EngineStatus:
        return EngineStatus()

    def preprocess(self, images: Sequence[Any]) -> list[Any]:
        return list(images)

    def infer(self, batch: list[Any]) -> np.ndarray | BatchOutput:
        vectors = np.zeros((len(batch), 1), np.float32)
        errors: dict[int, Exception] = {}
        for i, item in enumerate(batch):
            self.kinds.append("device" if isinstance(item, DeviceJpeg) else "cpu")
            try:
                pixels = decode_for_model(item.data, SIZE, 10**8) if isinstance(item, DeviceJpeg) else item
            except InvalidImageError as exc:
                errors[i] = exc
                continue
            vectors[i, 0] = pixels[0, 0, 0]
        return BatchOutput(vectors, errors) if errors else vectors


def test_decode_passes_thumbnails_on_encoded_and_decodes_the_rest() -> None:
    images = [
        embed_pb2.Image(encoded=jpeg(10)),
        embed_pb2.Image(encoded=jpeg(20, progressive=True)),
        embed_pb2.Image(encoded=jpeg(30, size=64)),
        embed_pb2.Image(encoded=b"not an image"),
    ]
    out = decode_images(images, SIZE, 10**8, device_decode=True)
    assert isinstance(out[0], DeviceJpeg)
    assert isinstance(out[1], np.ndarray) and isinstance(out[2], np.ndarray)
    assert isinstance(out[3], InvalidImageError)
    assert measure_images(images[:2], SIZE, 10**8, device_decode=True) == [0, SIZE * SIZE]
    assert all(isinstance(d, np.ndarray) for d in decode_images(images[:3], SIZE, 10**8))  # the default: CPU


async def test_served_path_with_a_device_decoding_engine() -> None:
    settings = Settings(max_batch_size=8, max_queue_delay_ms=20)
    engine = DeviceDecodingEngine()
    metrics = Metrics()
    pool = ThreadPoolExecutor(2)
    batcher = DynamicBatcher([engine], {"cuda:0": ThreadPoolExecutor(1)}, pool, metrics, 8, 0.02, 100)  # type: ignore[list-item]
    batcher.start()
    pipeline = Pipeline(
        settings,
        Runtime([engine], batcher, engine.info),  # type: ignore[list-item]
        FairDecoder(pool, 2, 10**8, 10**7),
        Admission(settings),
        metrics,
    )
    images = [
        embed_pb2.Image(encoded=jpeg(40)),
        embed_pb2.Image(encoded=corrupt_scan()),
        embed_pb2.Image(encoded=jpeg(60, progressive=True)),
        embed_pb2.Image(encoded=jpeg(80)),
    ]
    admitted = await pipeline.admit("peer", images, all_or_nothing=False)
    outcomes = await asyncio.gather(*admitted, return_exceptions=True)
    assert sorted(engine.kinds) == ["cpu", "device", "device", "device"]  # the progressive one went via the CPU
    assert isinstance(outcomes[1], InvalidImageError)  # fails alone...
    values = [float(o[0]) for i, o in enumerate(outcomes) if i != 1]
    assert [round(v / 10) * 10 for v in values] == [40, 60, 80]  # ...and its batch-mates are answered
    assert metrics.registry.get_sample_value("photodedup_device_decoded_images_total") == 3
    await batcher.close()

"""The PyTorch CUDA path's logic, on CPU: batch-size buckets, padding dropped from outputs, batches that
mix pixels with JPEGs left for nvJPEG, and per-image decode fallback. No GPU: eager calls stand in for
captured graphs and a fake function for nvJPEG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from photodedup.engines import create_engine
from photodedup.engines.jpeg_route import DeviceJpeg
from photodedup.engines.torch_cuda import (
    BucketedRunner,
    assemble,
    bucket_for,
    bucket_sizes,
    decode_jpegs,
    eager_capture,
    split_batch,
)
from photodedup.errors import InvalidImageError
from photodedup.imaging import decode_for_model

from helpers import encode, photo, tiny_settings

torch = pytest.importorskip("torch")
SIZE = 224


@pytest.mark.parametrize(
    ("max_batch", "buckets"),
    [(1, (1,)), (2, (1, 2)), (32, (1, 2, 4, 8, 16, 32)), (100, (1, 2, 4, 8, 16, 32, 64, 100))],
)
def test_buckets_are_powers_of_two_up_to_the_max_batch(max_batch: int, buckets: tuple[int, ...]) -> None:
    assert bucket_sizes(max_batch) == buckets
    assert len(bucket_sizes(256)) == 9


@pytest.mark.parametrize(("n", "bucket"), [(1, 1), (3, 4), (4, 4), (17, 32), (64, 64), (65, 100), (100, 100)])
def test_a_batch_pads_up_to_the_smallest_bucket_that_holds_it(n: int, bucket: int) -> None:
    assert bucket_for(n, bucket_sizes(100)) == bucket


@pytest.mark.parametrize("n", [0, 101])
def test_batches_outside_the_buckets_are_refused(n: int) -> None:
    with pytest.raises(ValueError):
        bucket_for(n, bucket_sizes(100))


def test_padding_rows_are_zeroed_and_dropped_from_the_output() -> None:
    seen: list[Any] = []

    def model(x: Any) -> Any:
        seen.append(x.clone())
        return x.float().sum(dim=(1, 2, 3)).unsqueeze(1)

    runner = BucketedRunner(model, bucket_sizes(8), lambda b: torch.zeros((b, 2, 2, 3), dtype=torch.uint8))
    runner.capture(eager_capture)
    assert runner.captured == (1, 2, 4, 8)
    full = torch.full((4, 2, 2, 3), 7, dtype=torch.uint8)
    assert runner(full).tolist() == [[84.0]] * 4
    out = runner(torch.full((3, 2, 2, 3), 1, dtype=torch.uint8))  # bucket 4 again, one padding row
    assert out.tolist() == [[12.0]] * 3
    assert seen[-1][3].sum().item() == 0  # the stale row of the previous batch was zeroed
    assert runner.runs == [(4, 4), (3, 4)]
    with pytest.raises(ValueError):
        runner(torch.zeros((9, 2, 2, 3), dtype=torch.uint8))


def test_padded_batches_give_the_vectors_of_unpadded_ones_on_the_real_tower(model_cache: Path) -> None:
    # Rows must not influence each other in the ViT (no batch statistics), or padding would change vectors.
    engine = create_engine(tiny_settings(model_cache).replace(engine="torch"), "cpu")
    size = engine.info.preprocessing.input_size
    images = [np.asarray(photo(i, (size, size))) for i in range(5)]
    x = engine.preprocess(images)
    runner = BucketedRunner(engine._model, bucket_sizes(8), lambda b: torch.zeros((b, 3, size, size)))
    runner.capture(eager_capture, sizes=[8])
    with torch.inference_mode():
        padded = runner(x)
        plain = engine._model(x)
    assert runner.runs == [(5, 8)]
    assert padded.shape == plain.shape
    assert torch.allclose(padded, plain, atol=1e-5)
    engine.close()


def _jpeg(seed: int) -> bytes:
    return encode(photo(seed, (SIZE, SIZE)), quality=85)


def test_a_batch_keeps_its_order_across_pixels_and_device_jpegs() -> None:
    arrays = [np.full((SIZE, SIZE, 3), v, np.uint8) for v in (10, 20)]
    items = [arrays[0], DeviceJpeg(_jpeg(1)), arrays[1], DeviceJpeg(_jpeg(2))]
    batch = split_batch(items, lambda a: torch.from_numpy(np.stack(a)))
    assert batch.pixel_rows == [0, 2] and batch.jpeg_rows == [1, 3]
    assert batch.pixels.shape == (2, SIZE, SIZE, 3)
    decoded = [torch.full((SIZE, SIZE, 3), 30, dtype=torch.uint8), None]  # the second JPEG failed
    x = assemble(torch, batch, batch.pixels, decoded, SIZE)
    assert [int(x[i, 0, 0, 0]) for i in range(4)] == [10, 30, 20, 0]


def test_a_batch_of_pixels_only_is_not_copied() -> None:
    batch = split_batch([np.zeros((SIZE, SIZE, 3), np.uint8)], lambda a: torch.from_numpy(np.stack(a)))
    assert assemble(torch, batch, batch.pixels, [], SIZE) is batch.pixels


def _cpu_decode(data: bytes) -> Any:
    return torch.from_numpy(decode_for_model(data, SIZE, 10**8).copy())


def test_one_bad_jpeg_falls_back_alone_and_fails_alone() -> None:
    good, corrupt = _jpeg(3), b"\xff\xd8" + b"\x00" * 100
    refused = _jpeg(4)  # nvJPEG refuses it; the CPU decodes it

    def device(datas: list[bytes]) -> list[Any]:
        if any(d in (corrupt, refused) for d in datas):
            raise RuntimeError("nvjpeg: bad data")
        return [_cpu_decode(d) for d in datas]

    out, errors = decode_jpegs([good, corrupt, refused], device, _cpu_decode)
    assert list(errors) == [1] and isinstance(errors[1], InvalidImageError)
    assert out[1] is None and out[0].shape == (SIZE, SIZE, 3) and out[2].shape == (SIZE, SIZE, 3)
    ok, none = decode_jpegs([good], device, _cpu_decode)
    assert none == {} and torch.equal(ok[0], out[0])

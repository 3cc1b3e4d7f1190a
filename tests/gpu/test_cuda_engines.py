"""GPU checks: each engine on every visible CUDA device, fp16 against the fp32 CPU reference.

Skipped cleanly where torch sees no CUDA device (CI, laptops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from photodedup.engines import create_engine
from photodedup.errors import EngineUnavailableError
from photodedup.imaging import decode_for_model

from helpers import encode, photo, tiny_settings

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _photos(n: int) -> list[np.ndarray]:
    return [decode_for_model(encode(photo(i, (640, 480))), 224, 10**8) for i in range(n)]


@pytest.mark.parametrize("engine_name", ["torch", "onnx"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_engine_matches_cpu_reference(engine_name: str, precision: str, model_cache: Path) -> None:
    settings = tiny_settings(model_cache, model_name="ViT-B-32")
    images = _photos(8)
    ref_engine = create_engine(settings.replace(engine="torch"), "cpu")
    reference = ref_engine.infer(ref_engine.preprocess(images))
    ref_engine.close()
    try:
        engine = create_engine(settings.replace(engine=engine_name, precision=precision), "cuda:0")
    except EngineUnavailableError as exc:
        pytest.skip(f"{engine_name} cannot run on CUDA here: {exc}")
    try:
        engine.warmup([1, 8])
        out = engine.infer(engine.preprocess(images))
    finally:
        engine.close()
    cos = (out * reference).sum(axis=1)
    assert cos.min() >= (0.999 if engine.precision == "fp32" else 0.995), cos

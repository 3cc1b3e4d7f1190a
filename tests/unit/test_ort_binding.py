"""ONNX Runtime I/O binding: which binding a session gets (faked providers, no GPU), and the OrtValue
binding itself on CPU, where ONNX Runtime binds host memory the same way it binds the GPU's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from photodedup.engines import create_engine
from photodedup.engines.base import Device, warmup_images
from photodedup.engines.ort_binding import Binding, OrtValueRunner, choose_binding

from helpers import tiny_settings

ort = pytest.importorskip("onnxruntime")
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
TRT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU = ["CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("device", "providers", "torch_cuda", "binding"),
    [
        (Device("cuda", 0), CUDA, True, Binding.TORCH),
        (Device("cuda", 1), TRT, True, Binding.TORCH),
        (Device("cuda", 0), CUDA, False, Binding.ORTVALUE),  # the GPU image without torch
        (Device("cuda", 0), CPU, True, Binding.HOST),  # a session that fell back to the CPU
        (Device("cpu"), CPU, True, Binding.HOST),
        (Device("cpu"), TRT, True, Binding.HOST),  # a GPU build serving the CPU
    ],
)
def test_binding_follows_where_the_session_really_runs(
    device: Device, providers: list[str], torch_cuda: bool, binding: Binding
) -> None:
    assert choose_binding(device, providers, torch_cuda) is binding


def test_ortvalue_binding_gives_what_session_run_gives(model_cache: Path) -> None:
    engine = create_engine(tiny_settings(model_cache).replace(engine="onnx", precision="fp32"), "cpu")
    assert engine.binding is Binding.HOST and "io=host" in engine.status().detail
    batch = engine.preprocess(warmup_images(engine.info, 5))
    session = engine._session
    runner = OrtValueRunner(ort, session, session.get_inputs()[0].name, session.get_outputs()[0].name, "cpu", 0)
    (plain,) = session.run(None, {session.get_inputs()[0].name: batch})
    bound = runner(batch)
    assert bound.shape == plain.shape == (5, engine.info.embedding_dim)
    np.testing.assert_allclose(bound, plain, rtol=1e-6, atol=1e-6)
    engine.close()

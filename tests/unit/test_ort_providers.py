"""ONNX Runtime provider choice, with the available providers faked (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from photodedup.engines.base import Device
from photodedup.engines.ort_providers import choose_providers
from photodedup.errors import EngineUnavailableError

CPU_ONLY = ["CPUExecutionProvider"]
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
ALL = ["tensorrt", "cuda", "cpu"]


def test_cpu_device_gets_only_the_cpu_provider_even_on_a_gpu_build() -> None:
    assert choose_providers(Device("cpu"), ALL, GPU_BUILD, "fp32", Path("/c")) == ["CPUExecutionProvider"]


def test_cuda_device_gets_tensorrt_then_cuda_with_its_device_id_and_caches() -> None:
    out = choose_providers(Device("cuda", 1), ALL, GPU_BUILD, "fp16", Path("/c/trt"))
    (trt, trt_opts), (cuda, cuda_opts), cpu = out
    assert (trt, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt_opts["device_id"] == 1 and trt_opts["trt_fp16_enable"] is True
    assert trt_opts["trt_engine_cache_path"] == "/c/trt" and trt_opts["trt_timing_cache_enable"]
    assert cuda_opts == {"device_id": 1}


def test_fp32_keeps_tensorrt_provider_out_of_fp16() -> None:
    (_, opts), *_ = choose_providers(Device("cuda", 0), ["tensorrt"], GPU_BUILD, "fp32", Path("/c"))
    assert opts["trt_fp16_enable"] is False


def test_preference_order_and_missing_providers_are_skipped() -> None:
    out = choose_providers(
        Device("cuda", 0),
        ["cuda", "tensorrt", "cpu"],
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "fp16",
        Path("/c"),
    )
    assert out == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]


def test_cuda_device_on_a_cpu_only_build_is_a_clear_error() -> None:
    with pytest.raises(EngineUnavailableError, match="no CUDA or TensorRT provider for cuda:0.*onnxruntime-gpu"):
        choose_providers(Device("cuda", 0), ALL, CPU_ONLY, "fp16", Path("/c"))


def test_unknown_provider_names_and_mps_are_refused() -> None:
    with pytest.raises(EngineUnavailableError, match="unknown ONNX providers"):
        choose_providers(Device("cpu"), ["openvino"], CPU_ONLY, "fp32", Path("/c"))
    with pytest.raises(EngineUnavailableError, match="no MPS provider"):
        choose_providers(Device("mps"), ALL, CPU_ONLY, "fp32", Path("/c"))


def test_device_parsing() -> None:
    assert Device.parse("cuda:3") == Device("cuda", 3) and str(Device.parse("cuda:3")) == "cuda:3"
    assert Device.parse("cpu") == Device("cpu", 0)
    with pytest.raises(EngineUnavailableError, match="unknown device"):
        Device.parse("tpu:0")

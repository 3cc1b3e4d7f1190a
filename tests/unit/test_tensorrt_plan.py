"""TensorRT engine parts that run without a GPU: plan-cache keys, profile shapes, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from photodedup.engines import create_engine, engine_class
from photodedup.engines.tensorrt_engine import Profile, plan_key, plan_path, profile_for
from photodedup.errors import EngineUnavailableError

from helpers import tiny_settings

BASE = dict(
    onnx_sha256="a" * 64,
    trt_version="10.13.2",
    gpu_name="NVIDIA H100 80GB HBM3",
    capability=(9, 0),
    profile=Profile(1, 256, 256),
    recipe="fp16",
)


def test_plan_key_changes_with_everything_a_plan_depends_on() -> None:
    key = plan_key(**BASE)
    assert key == plan_key(**BASE)
    for change in (
        {"onnx_sha256": "b" * 64},
        {"trt_version": "10.14.1"},
        {"gpu_name": "NVIDIA H200"},
        {"capability": (8, 9)},
        {"profile": Profile(1, 32, 256)},
        {"recipe": "fp16-strongly-typed"},
    ):
        assert plan_key(**{**BASE, **change}) != key, change


def test_plan_sits_beside_the_onnx_export(tmp_path: Path) -> None:
    onnx = tmp_path / "onnx" / "ViT-B-32-x.onnx"
    plan = plan_path(onnx, "k1")
    assert plan.parent == onnx.parent and plan.name == "ViT-B-32-x-trt-k1.plan"


def test_profile_covers_batch_one_to_max_and_is_tuned_for_a_full_batch() -> None:
    p = profile_for(256)
    assert (p.min_batch, p.opt_batch, p.max_batch) == (1, 256, 256)
    assert p.shapes(224) == ((1, 3, 224, 224), (256, 3, 224, 224), (256, 3, 224, 224))
    with pytest.raises(ValueError):
        profile_for(0)


def test_tensorrt_refuses_cpu_with_one_clear_line_and_auto_never_tries_it(model_cache: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="TensorRT needs a CUDA device") as err:
        engine_class("tensorrt")(tiny_settings(model_cache), "cpu").load()
    assert "\n" not in str(err.value)
    with pytest.raises(EngineUnavailableError, match="no engine can run on cpu"):
        create_engine(tiny_settings(model_cache, engine="tensorrt"), "cpu")

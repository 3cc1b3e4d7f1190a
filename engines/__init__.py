"""Engines: one runtime each, registered by name and imported only when chosen.

`--engine onnx` never imports torch (unless it must export the model once) and never imports TensorRT.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from photodedup.errors import EngineUnavailableError, ModelUnavailableError

if TYPE_CHECKING:
    from photodedup.engines.base import Engine
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

ENGINES: dict[str, str] = {
    "torch": "photodedup.engines.torch_engine:TorchEngine",
    "onnx": "photodedup.engines.onnx_engine:OnnxEngine",
    # Not yet run on a GPU; not in AUTO_ORDER until a recorded GPU run puts it there.
    "tensorrt": "photodedup.engines.tensorrt_engine:TensorRTEngine",
}

# Tried in this order by `--engine auto`. CPU: ONNX Runtime measured fastest (docs/BENCHMARKS.md).
# CUDA: not yet measured on our GPUs; PyTorch FP16 first because it needs no extra runtime.
# (CPU, ViT-B-32, one run: ONNX/torch 1.56x at batch 1, 1.04x at 8, 1.12x at 32.)
AUTO_ORDER: dict[str, list[str]] = {
    "cpu": ["onnx", "torch"],
    "cuda": ["torch", "onnx"],
    "mps": ["torch"],
}


def engine_class(name: str) -> type[Engine]:
    """Import the engine named `name` on first use."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise EngineUnavailableError(f"unknown engine {name!r}; choose from {', '.join(sorted(ENGINES))}") from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailableError(f"engine {name!r} cannot be imported here: {exc}") from None
    return getattr(module, cls_name)


def candidates(engine: str, device: str) -> list[str]:
    if engine != "auto":
        return [engine]
    return AUTO_ORDER[device.split(":")[0]]


def create_engine(settings: Settings, device: str) -> Engine:
    """Create and load the engine for one device, falling back along AUTO_ORDER when `auto`."""
    errors: list[str] = []
    for name in candidates(settings.model.engine, device):
        try:
            engine = engine_class(name)(settings, device)
            engine.load()
            return engine
        except ModelUnavailableError:
            raise  # every engine needs the weights: trying the next one would fail the same way
        except Exception as exc:  # a runtime that fails to load (export error, bad cache dir, driver) -> next one
            errors.append(f"{name}: {exc}")
            log.warning("engine %s unavailable on %s: %s", name, device, exc)
    raise EngineUnavailableError(f"no engine can run on {device}: " + "; ".join(errors))

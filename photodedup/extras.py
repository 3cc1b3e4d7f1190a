"""Which optional install (`pip install 'photodedup[EXTRA]'`) provides which module, and the one-line
error a command gives when it needs one that is not installed. The base install is the CLI and remote
scanning; the model runtimes are extras."""

from __future__ import annotations

import importlib.util

from photodedup.errors import PhotodedupError

# top-level module -> the extra that installs it
EXTRA_FOR_MODULE: dict[str, str] = {
    "torch": "local",
    "torchvision": "local",
    "open_clip": "local",
    "faiss": "ann",
    "onnxruntime": "cpu",
    "onnx": "cpu",
    "tensorrt": "tensorrt",
}


class MissingExtraError(PhotodedupError):
    """A command needs an optional dependency group that is not installed."""


def missing_extra_message(module: str, purpose: str = "", extra: str | None = None) -> str:
    top = module.split(".")[0]
    extra = extra or EXTRA_FOR_MODULE.get(top, "local")
    return f"{purpose or 'this'} needs {top}, which is not installed: pip install 'photodedup[{extra}]'"


def require(purpose: str, extra: str, *modules: str) -> None:
    """Raise MissingExtraError naming `extra` when any of `modules` is missing. Checks without
    importing them, so it is cheap to call before any work starts."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(missing_extra_message(module, purpose, extra))

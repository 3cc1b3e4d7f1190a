"""The image tower exported once to ONNX, cached for the ONNX Runtime engine and the Triton export.

The export lives under `<cache_dir>/onnx/`, keyed by model, weights, opset and open_clip version (and
the hash of our bundled config), written atomically (temp file + rename) under a file lock so that
concurrent servers export once. A cache hit needs no torch import at all.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from photodedup.engines.base import ModelInfo
from photodedup.errors import ModelUnavailableError
from photodedup.imaging import Preprocessing

if TYPE_CHECKING:
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "embedding"


def cache_key(settings: Settings) -> str:
    """File-name-safe key for everything that changes the exported graph."""
    from photodedup.engines.openclip_loader import bundled_config_hash, package_version, weights_id

    key = (
        f"{settings.model.model_name}-{weights_id(settings)}-opset{OPSET}-openclip{package_version('open_clip_torch')}"
    )
    config = bundled_config_hash(settings.model.model_name)  # our own configs change without an open_clip release
    if config:
        key += f"-cfg{config}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def export_path(settings: Settings) -> Path:
    return settings.model.cache_dir / "onnx" / (cache_key(settings) + ".onnx")


def export_lock(path: Path) -> FileLock:
    """The one lock that guards every file derived from the export at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_suffix(".lock")))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a half-written one."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ensure_onnx(settings: Settings) -> tuple[Path, ModelInfo]:
    """Return the exported model and its description, exporting it first if the cache lacks it.

    With `settings.model.onnx_model` the given export is served as it is: no cache, no torch (the CPU image).
    """
    if settings.model.onnx_model is not None:
        given = Path(settings.model.onnx_model)
        given_meta = given.with_suffix(".json")
        if not (given.is_file() and given_meta.is_file()):
            raise ModelUnavailableError(f"--onnx-model: {given} and {given_meta.name} beside it must both exist")
        return given, _info_from_meta(json.loads(given_meta.read_text()))
    path = export_path(settings)
    meta_path = path.with_suffix(".json")
    with export_lock(path):
        if not (path.is_file() and meta_path.is_file()):
            _export(settings, path, meta_path)
        meta = json.loads(meta_path.read_text())
    return path, _info_from_meta(meta)


def _info_from_meta(meta: dict) -> ModelInfo:
    prep = meta["preprocessing"]
    return ModelInfo(
        model_name=meta["model_name"],
        weights_id=meta["weights_id"],
        embedding_dim=int(meta["embedding_dim"]),
        preprocessing=Preprocessing(
            input_size=int(prep["input_size"]),
            mean=tuple(prep["mean"]),
            std=tuple(prep["std"]),
            interpolation=prep["interpolation"],
        ),
    )


def _export(settings: Settings, path: Path, meta_path: Path) -> None:
    import warnings

    import torch

    from photodedup.engines.openclip_loader import load_visual

    log.info("exporting %s to ONNX at %s (once)", settings.model.model_name, path)
    visual, info = load_visual(settings, "fp32")
    size = info.preprocessing.input_size
    example = torch.randn(2, 3, size, size)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            visual,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    meta = {
        "model_name": info.model_name,
        "weights_id": info.weights_id,
        "embedding_dim": info.embedding_dim,
        "preprocessing": asdict(info.preprocessing),
    }
    os.replace(tmp, path)  # the metadata file, written last, marks the export complete
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())

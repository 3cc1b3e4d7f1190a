"""Load an open_clip image tower: pretrained tag (open_clip's own hub code), local file, or random.

Offline machines fail fast with one clear ModelUnavailableError instead of a minute of retries and a
traceback: the hub is probed first, and when it cannot be reached only the local cache is consulted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from contextlib import contextmanager
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from photodedup.errors import ModelUnavailableError

if TYPE_CHECKING:
    import torch

    from photodedup.engines.base import ModelInfo
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

RANDOM_SEED = 0
_register_lock = threading.Lock()
_registered = False
_file_hashes: dict[tuple[str, int, int], str] = {}


def package_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "none"


def _register_configs() -> None:
    """Add our bundled model configs (the tiny test/benchmark ViT) to open_clip's registry."""
    global _registered
    with _register_lock:
        if _registered:
            return
        import open_clip

        folder = resources.files("photodedup") / "model_configs"
        with resources.as_file(folder) as path:
            open_clip.add_model_config(Path(path))
        _registered = True


def bundled_config_hash(model_name: str) -> str | None:
    """sha256 prefix of our bundled config for `model_name`, or None for open_clip's own models."""
    path = resources.files("photodedup") / "model_configs" / f"{model_name}.json"
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _sha256_prefix(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _file_hashes:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _file_hashes[key] = digest.hexdigest()[:16]
    return _file_hashes[key]


def weights_id(settings: Settings) -> str:
    """A stable name for the weights; part of model ids and export cache keys. Needs no torch."""
    if settings.model.weights_is_random:
        return f"random-seed{RANDOM_SEED}-torch{package_version('torch')}"
    if settings.model.weights:
        path = Path(settings.model.weights).expanduser()
        if not path.is_file():
            raise ModelUnavailableError(f"weights file {path} does not exist")
        return f"file-{_sha256_prefix(path)}"
    return settings.model.pretrained


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hugging Face hub (or HF_ENDPOINT)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _hub_offline(offline: bool):
    """Make huggingface_hub answer from its local cache only, without its network retries."""
    if not offline:
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip depends on it
        yield
        return
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def load_visual(settings: Settings, precision: str = "fp32") -> tuple[torch.nn.Module, ModelInfo]:
    """Build the model on CPU and return its image tower (eval mode) and description."""
    try:
        import open_clip
        import torch
    except ImportError as exc:
        raise ModelUnavailableError(f"open_clip/torch are not installed: {exc}") from None
    # Here, not at import: a scan asks `weights_id` and `hub_reachable` without loading any model.
    from photodedup.engines.base import ModelInfo
    from photodedup.imaging import Preprocessing

    _register_configs()
    name = settings.model.model_name
    if name not in open_clip.list_models():
        raise ModelUnavailableError(f"unknown open_clip model {name!r}")
    wid = weights_id(settings)
    kwargs: dict[str, Any] = {"precision": precision if precision in ("fp16", "bf16") else "fp32"}
    if settings.model.weights_is_random:
        torch.manual_seed(RANDOM_SEED)
        model = open_clip.create_model(name, pretrained=None, **{**kwargs, "precision": "fp32"})
        if precision == "fp16":
            model = model.half()
    elif settings.model.weights:
        path = Path(settings.model.weights).expanduser()
        try:
            model = open_clip.create_model(name, pretrained=str(path), **kwargs)
        except Exception as exc:  # open_clip raises bare RuntimeError/KeyError on bad checkpoints
            raise ModelUnavailableError(f"cannot load weights file {path} for {name}: {exc}") from None
    else:
        tag = settings.model.pretrained
        tags = open_clip.list_pretrained_tags_by_model(name)
        if tag not in tags:
            raise ModelUnavailableError(
                f"{name} has no pretrained tag {tag!r}; known tags: {', '.join(tags) or 'none'}"
            )
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable()
        try:
            with _hub_offline(offline):
                model = open_clip.create_model(name, pretrained=tag, **kwargs)
        except Exception as exc:
            where = "offline and not in the local cache" if offline else f"download failed ({exc})"
            raise ModelUnavailableError(
                f"cannot load {name} weights {tag!r}: {where}; pass --weights FILE with a local checkpoint"
            ) from None
    visual = model.visual.eval()
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    prep = Preprocessing(
        input_size=int(size),
        mean=tuple(cfg.get("mean", Preprocessing.mean)),
        std=tuple(cfg.get("std", Preprocessing.std)),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )
    info = ModelInfo(model_name=name, weights_id=wid, embedding_dim=int(visual.output_dim), preprocessing=prep)
    return visual, info

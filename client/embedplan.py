"""What a scan can expect from an embedder, settled before any file is hashed and without loading a
model: which model id the embeddings will carry, what thumbnail it wants, and how to open it.

A remote plan costs one GetInfo per server. A local plan reads the model's config and checks that the
weights and the in-process engine's packages are there, without importing torch or open_clip; the
engine itself is opened only when some file still needs an embedding for the planned model id.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from photodedup.client.embedders import Embedder, LocalEmbedder, Mode, RemoteEmbedder
from photodedup.errors import EngineUnavailableError, ModelUnavailableError, PhotodedupError
from photodedup.extras import MissingExtraError, require

if TYPE_CHECKING:
    from photodedup.client.hashing import ThumbKind
    from photodedup.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class EmbedPlan:
    """`opener` is None when no embedder is available; then `skipped_reason` says why in one line."""

    model_id: str | None = None
    input_size: int = 0
    thumb_kind: ThumbKind = "none"
    skipped_reason: str | None = None
    opener: Callable[[], Embedder] | None = None

    @property
    def available(self) -> bool:
        return self.opener is not None

    def open(self) -> Embedder:
        """Open the embedder (load the model, or start the server streams). Raises PhotodedupError."""
        if self.opener is None:
            raise PhotodedupError(self.skipped_reason or "no embedder")
        return self.opener()


def plan_embedder(settings: Settings, mode: Mode) -> EmbedPlan:
    """auto: the configured servers if any answers, else the in-process engine if its weights and
    packages are here. Never raises for a missing model: the plan carries a one-line reason instead."""
    if mode == "none":
        return EmbedPlan(skipped_reason="similar tier skipped: --no-similar")
    if mode in ("auto", "remote") and settings.scan.servers:
        plan = _remote_plan(settings)
        if plan.available or mode == "remote":
            return plan
        log.info("%s; using the in-process engine", plan.skipped_reason)
    elif mode == "remote":
        return EmbedPlan(skipped_reason="similar tier skipped: --server gives no address")
    return _local_plan(settings)


def _remote_plan(settings: Settings) -> EmbedPlan:
    from photodedup.transport import probe_server

    probes = [probe_server(a, settings) for a in settings.scan.servers]
    good = [p for p in probes if p.error is None]
    if not good:
        reasons = "; ".join(f"{p.address}: {p.error}" for p in probes)
        return EmbedPlan(skipped_reason=f"similar tier skipped: no embedding server reachable ({reasons})")
    first = good[0]
    return EmbedPlan(
        model_id=first.model_id,
        input_size=first.input_size,
        thumb_kind=RemoteEmbedder.thumb_kind,
        opener=lambda: RemoteEmbedder.connect([p.address for p in good], settings),
    )


def _local_plan(settings: Settings) -> EmbedPlan:
    try:
        model_id, input_size = local_model(settings)
    except (ModelUnavailableError, EngineUnavailableError) as exc:
        return EmbedPlan(skipped_reason=f"similar tier skipped: {exc}")

    def opener() -> Embedder:
        with held_logs():
            embedder = LocalEmbedder.create(settings)
        # The stored embeddings are keyed by the planned id; a quantised engine (`+int8`, chosen by its
        # self-check when it loads) keys them by its own id, which the scan then adopts.
        if embedder.model_id != model_id and not embedder.model_id.startswith(model_id + "+"):
            embedder.close()
            raise EngineUnavailableError(f"the engine loaded {embedder.model_id}, expected {model_id}")
        return embedder

    return EmbedPlan(model_id=model_id, input_size=input_size, thumb_kind=LocalEmbedder.thumb_kind, opener=opener)


def local_model(settings: Settings) -> tuple[str, int]:
    """The model id and input size the in-process engine would have, without importing torch or
    open_clip. Raises EngineUnavailableError when its packages are missing and ModelUnavailableError
    when the weights are neither given, cached nor downloadable."""
    if settings.model.onnx_model is not None:  # an export served as is: ONNX Runtime only, no torch
        try:
            require("--onnx-model", "cpu", "onnxruntime")
        except MissingExtraError as exc:
            raise EngineUnavailableError(str(exc)) from None
        from photodedup.engines.onnx_engine import ensure_onnx

        _, info = ensure_onnx(settings)
        return info.model_id, info.preprocessing.input_size
    try:
        require("the in-process engine", "local", "torch", "open_clip")
    except MissingExtraError as exc:
        raise EngineUnavailableError(str(exc)) from None
    from photodedup.engines.openclip_loader import hub_reachable, weights_id

    name = settings.model.model_name
    config = _model_config(name)
    if config is None:
        raise ModelUnavailableError(f"unknown open_clip model {name!r}")
    wid = weights_id(settings)  # checks that a --weights file exists
    if not settings.model.weights and not _pretrained_cached(settings.model.pretrained):
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable(settings.scan.connect_timeout_s):
            raise ModelUnavailableError(
                f"cannot load {name} weights {settings.model.pretrained!r}: offline and not in the local cache; "
                "pass --weights FILE with a local checkpoint"
            )
    size = config.get("vision_cfg", {}).get("image_size", 224)
    size = size[0] if isinstance(size, list) else size
    return f"{name}@{wid}", int(size)


def _model_config(name: str) -> dict | None:
    """Our bundled config, else open_clip's own, read from its package folder without importing it."""
    import photodedup

    folders = [Path(photodedup.__file__).parent / "model_configs"]
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) / "model_configs" for p in spec.submodule_search_locations]
    for folder in folders:
        path = folder / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _pretrained_cached(tag: str) -> bool:
    """Whether the Hugging Face cache holds a model repository named after the pretrained tag (open_clip's
    hub ids carry it, e.g. laion/CLIP-ViT-B-32-laion2B-s34B-b79K for laion2b_s34b_b79k)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"), "hub"
    )
    folder = Path(hub).expanduser()
    want = _squash(tag)
    try:
        return any(want in _squash(p.name) for p in folder.iterdir() if p.name.startswith("models--"))
    except OSError:
        return False


@contextmanager
def held_logs() -> Iterator[None]:
    """Hold log records while a model loads. A failed load is then reported in one line, not with the
    loader's own errors (open_clip logs its download failures on the root logger); after a good load
    photodedup's own records (e.g. "exporting to ONNX") are passed on."""
    held: dict[int, logging.LogRecord] = {}

    class Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            held[id(record)] = record
            return False

    hold = Hold()
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(hold)
    ok = False
    try:
        yield
        ok = True
    finally:
        for h in handlers:
            h.removeFilter(hold)
        if ok:
            for record in held.values():
                if record.name.startswith("photodedup"):
                    for h in handlers:
                        if record.levelno >= h.level:
                            h.handle(record)

"""The PyTorch engine's CUDA path: batch-size buckets run as CUDA graphs, pinned uploads, nvJPEG decode.

NOT YET RUN ON A GPU: the logic below is tested on CPU (buckets, padding, batch assembly, per-image
decode fallback) with eager functions standing in for captured graphs; the CUDA calls themselves have
not run. Why each piece:
- CUDA graphs: eager PyTorch launches hundreds of small kernels per ViT forward under the GIL; a graph
  replays them in one launch. A graph has fixed shapes, so each batch is padded up to the next bucket
  (1, 2, 4, ... max_batch_size) and the padding rows are dropped from the output (rows are independent in
  a ViT: no batch norm). Graphs are thread-bound: captured and replayed on the engine's device thread.
- Uploads: uint8 NHWC (4x fewer bytes than float) from page-locked host memory (torch's caching host
  allocator reuses the blocks and tracks their copies), normalised on the device; NHWC permuted to NCHW
  is already channels-last, which the patch-embedding convolution prefers.
- nvJPEG: `torchvision.io.decode_jpeg(list, device="cuda")` decodes a batch of thumbnails on the GPU. A
  file that nvJPEG refuses is decoded alone on the CPU; one that both refuse gets its own error.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from photodedup.engines.jpeg_route import DeviceJpeg
from photodedup.errors import InvalidImageError

log = logging.getLogger(__name__)


def bucket_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below `max_batch_size`, then `max_batch_size` itself: what each batch is padded up to.
    At most half a batch of padding, and log2(max) graphs to capture."""
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if (1 << i) < max_batch_size]
    return (*sizes, max_batch_size)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `n` images."""
    if n < 1 or n > buckets[-1]:
        raise ValueError(f"a batch of {n} does not fit buckets up to {buckets[-1]}")
    return buckets[bisect.bisect_left(buckets, n)]


# A captured forward: called with nothing, reads its static input, returns its static output.
Replay = Callable[[], Any]
# Makes a Replay for a static input (CUDA: captures a graph; CPU tests: calls the model eagerly).
Capture = Callable[[Callable[[Any], Any], Any], Replay]


class BucketedRunner:
    """Runs `model` on any batch size <= max through one fixed-shape replay per bucket.

    Each bucket owns a static input buffer; a batch is copied into the front of its bucket's buffer, the
    rest is zeroed (padding), the replay runs, and only the batch's own rows come back (copied, since the
    next replay overwrites the static output)."""

    def __init__(self, model: Callable[[Any], Any], buckets: Sequence[int], make_input: Callable[[int], Any]) -> None:
        self.model = model
        self.buckets = tuple(buckets)
        self._make_input = make_input  # bucket size -> a static input tensor of that batch size
        self._inputs: dict[int, Any] = {}
        self._replays: dict[int, Replay] = {}
        self.runs: list[tuple[int, int]] = []  # (images, bucket) per call, newest last, for tests and logs

    def capture(self, capture: Capture, sizes: Sequence[int] | None = None) -> None:
        """Capture the buckets (largest first, so smaller ones can reuse its memory pool)."""
        for b in sorted(sizes or self.buckets, reverse=True):
            if b not in self._replays:
                static = self._make_input(b)
                self._inputs[b] = static
                self._replays[b] = capture(self.model, static)

    @property
    def captured(self) -> tuple[int, ...]:
        return tuple(sorted(self._replays))

    def __call__(self, x: Any) -> Any:
        n = int(x.shape[0])
        b = bucket_for(n, self.buckets)
        if b not in self._replays:
            raise RuntimeError(f"bucket {b} was not captured (captured: {self.captured})")
        static = self._inputs[b]
        static[:n].copy_(x)
        if n < b:
            static[n:].zero_()
        out = self._replays[b]()
        self.runs.append((n, b))
        return out[:n].clone()


def eager_capture(model: Callable[[Any], Any], static: Any) -> Replay:
    """A stand-in for graph capture (CPU tests, or CUDA graphs turned off): runs the model on each call."""
    return lambda: model(static)


def cuda_graph_capture(torch: Any, pool: Any) -> Capture:
    """Capture with `torch.cuda.CUDAGraph`: warm up on a side stream, then record one forward."""

    def capture(model: Callable[[Any], Any], static: Any) -> Replay:  # pragma: no cover - needs CUDA
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                model(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            out = model(static)

        def replay() -> Any:
            graph.replay()
            return out

        return replay

    return capture


@dataclass
class MixedBatch:
    """A batch as preprocess hands it to infer: decoded pixels and encoded JPEGs, in the batch's order."""

    size: int  # images
    pixel_rows: list[int] = field(default_factory=list)
    pixels: Any = None  # uint8 [len(pixel_rows), H, W, 3] (pinned on CUDA), or None
    jpeg_rows: list[int] = field(default_factory=list)
    jpegs: list[bytes] = field(default_factory=list)


def split_batch(images: Sequence[np.ndarray | DeviceJpeg], stack: Callable[[list[np.ndarray]], Any]) -> MixedBatch:
    """Separate decoded images (stacked by `stack`, e.g. into pinned memory) from JPEGs left for the device."""
    batch = MixedBatch(len(images))
    arrays: list[np.ndarray] = []
    for i, image in enumerate(images):
        if isinstance(image, DeviceJpeg):
            batch.jpeg_rows.append(i)
            batch.jpegs.append(image.data)
        else:
            batch.pixel_rows.append(i)
            arrays.append(image)
    if arrays:
        batch.pixels = stack(arrays)
    return batch


def decode_jpegs(
    jpegs: Sequence[bytes],
    decode_batch: Callable[[list[bytes]], list[Any]],
    decode_cpu: Callable[[bytes], Any],
) -> tuple[list[Any], dict[int, Exception]]:
    """Decode on the device in one call; when that call fails, each image alone, and each that the device
    still refuses on the CPU. Returns one image per input (None where both failed) and the
    error of each image that failed both ways, so one bad file fails only itself. Both decoders give
    HWC uint8."""
    if not jpegs:
        return [], {}
    try:
        return list(decode_batch(list(jpegs))), {}
    except Exception as exc:  # noqa: BLE001 - nvJPEG raises RuntimeError for any bad file in the batch
        log.debug("device decode of %d JPEGs failed (%s); decoding one by one", len(jpegs), exc)
    out: list[Any] = []
    errors: dict[int, Exception] = {}
    for i, data in enumerate(jpegs):
        try:
            out.append(decode_batch([data])[0])
            continue
        except Exception:  # noqa: BLE001 - fall back to the CPU decoder, which gives the precise error
            pass
        try:
            out.append(decode_cpu(data))
        except InvalidImageError as exc:
            out.append(None)
            errors[i] = exc
        except Exception as exc:  # noqa: BLE001 - a decoder's surprise is still bad input
            out.append(None)
            errors[i] = InvalidImageError(f"cannot decode image: {exc}")
    return out, errors


def assemble(torch: Any, batch: MixedBatch, pixels: Any, decoded: Sequence[Any], size: int) -> Any:
    """One uint8 NHWC tensor in the batch's order from the uploaded pixels (NHWC) and the decoded JPEGs
    (HWC each); rows that failed to decode stay zero, their errors travel beside the output."""
    if not batch.jpeg_rows:
        return pixels
    like = pixels if pixels is not None else next((d for d in decoded if d is not None), None)
    device = like.device if like is not None else "cpu"
    x = torch.zeros((batch.size, size, size, 3), dtype=torch.uint8, device=device)
    if pixels is not None:
        x[batch.pixel_rows] = pixels
    for row, image in zip(batch.jpeg_rows, decoded, strict=True):
        if image is not None:
            x[row] = image
    return x

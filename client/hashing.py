"""Read each photo once and decode it once: content hash, perceptual hashes and the model thumbnail.

The MD5 comes from the bytes; dHash, pHash and the model thumbnail all come from one reduced-size decode
(JPEG DCT scaling via `draft`, an integer box reduction for other formats), taken after EXIF orientation
is applied; for a server, a small upright JPEG is its own thumbnail (`AS_IS_BYTES`). `hash_file` never
raises for a bad file: the error is part of its result. `HashPool` runs it on all cores in worker processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

import numpy as np

from photodedup.client.content import (
    PAGE_CONTRAST,
    WINDOWS,
    content_box,
    contrast,
    crop_summed_area,
    outer_borders,
    picture_pixels,
    row_medians,
    rows_to_ints,
    summed_area,
    transparent_share,
    window_hashes,
)
from photodedup.client.fidelity import fidelity
from photodedup.client.walk import SNIFF_BYTES, sniff_format
from photodedup.errors import InvalidImageError

log = logging.getLogger(__name__)

ThumbKind = Literal["none", "array", "jpeg"]
EXIF_IFD = 0x8769
TAG_ORIENTATION = 0x0112
TAG_DATETIME = 0x0132
TAG_DATETIME_ORIGINAL = 0x9003
# Decode at least this many pixels on the short side even without a model: enough for stable pHash.
MIN_DECODE_SIDE = 256
# For a server (`jpeg` thumbnails): an upright JPEG no bigger than this, of at most AS_IS_PIXELS times the
# model input's pixels, travels as it is instead of as a thumbnail made here. It is already about a
# thumbnail's size, so resizing and encoding it again (~0.8 ms, a fifth of hashing a 320 px photo) would
# only move the work off the server and add a second generation of JPEG loss; the server decodes and
# resizes it as it does any upload. Larger files (a camera's) still travel as 224 px thumbnails.
AS_IS_BYTES = 32 * 1024
AS_IS_PIXELS = 4
# Files per worker task: amortises the process hand-off over several small photos.
CHUNK_FILES = 8
# glibc malloc in a hash worker: blocks up to MMAP_THRESHOLD come from the heap, and up to TRIM_THRESHOLD of
# freed heap is kept instead of handed back to the kernel. By default a file's numpy temporaries (hundreds
# of KB each) were returned and faulted in again on the next file: a fifth of a small photo's CPU.
MALLOC_MMAP_THRESHOLD = 8 << 20
MALLOC_TRIM_THRESHOLD = 32 << 20


@dataclass
class HashResult:
    """Everything the index stores about one file, plus the thumbnail for the embedder (not stored)."""

    path: str
    size: int
    mtime_ns: int
    md5: str | None = None
    dhash: int | None = None
    phash: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    exif_time: float | None = None
    error: str | None = None
    # (dhash, phash) of the decoded image turned 90, 180 and 270 degrees, signed like the others: lets
    # grouping find copies whose pixels (not just their EXIF tag) were rotated.
    rotated: tuple[tuple[int, int], ...] = ()
    # The picture inside uniform borders, (left, top, right, bottom) in upright full-size pixels; the
    # hashes above are of this box. None when not computed.
    content: tuple[int, int, int, int] | None = None
    # Pixels of the picture itself: the frame less added bars and any filled corners of a rotated copy
    # (`content.picture_pixels`; a plain background the content box trims is still picture).
    picture_pixels: int | None = None
    # (dhash, phash) of sub-windows of the content (`content.WINDOWS`), signed like the others: lets
    # grouping find cropped copies.
    windows: tuple[tuple[int, int], ...] = ()
    # What the keeper policy ranks copies by (see `fidelity`): camera EXIF present, estimated quality
    # (0 for a lossless file carrying JPEG block traces), a grey picture.
    camera: bool | None = None
    quality: int | None = None
    grey: bool | None = None
    # Grey standard deviation of the content at 32 x 32 px: a low-contrast picture's hashes say little.
    contrast: float | None = None
    # Share of the frame at most half opaque (`content.transparent_share`): a cut-out is a drawn graphic.
    transparent: float | None = None
    thumb: np.ndarray | bytes | None = None


def to_signed64(value: int) -> int:
    """SQLite INTEGER is signed 64-bit; store a 64-bit hash as its two's-complement value."""
    return value - (1 << 64) if value >= (1 << 63) else value


def to_unsigned64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def _exif_time(exif: object) -> float | None:
    """Capture time from EXIF (DateTimeOriginal, else DateTime) as a UTC-naive timestamp, or None."""
    try:
        raw = exif.get_ifd(EXIF_IFD).get(TAG_DATETIME_ORIGINAL) or exif.get(TAG_DATETIME)  # type: ignore[attr-defined]
        if not raw:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        stamp = datetime.strptime(text.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
        return stamp.replace(tzinfo=timezone.utc).timestamp()
    except (ValueError, TypeError, AttributeError, KeyError, OSError):
        return None


def _bits_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.flatten()).tobytes(), "big")


def _dhash(pixels: np.ndarray) -> int:
    """ImageHash's dHash of 8 rows x 9 columns of gray pixels: is each brighter than its left neighbour."""
    return _bits_int(pixels[:, 1:] > pixels[:, :-1])


def _phashes(squares: np.ndarray) -> list[int]:
    """ImageHash's pHash of each of a stack of 32x32 gray pictures (the 8x8 lowest DCT frequencies against
    their median), in one transform call per axis."""
    import scipy.fftpack

    low = scipy.fftpack.dct(scipy.fftpack.dct(squares, axis=1), axis=2)[:, :8, :8].reshape(len(squares), 64)
    bits = low > row_medians(low)
    return rows_to_ints(bits)


def hash_family(gray: object) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """Signed dHash and pHash of a gray PIL image, and of the image turned 90, 180 and 270 degrees
    (counter-clockwise, as Image.Transpose.ROTATE_90/180/270). The image's own hashes are bit-identical
    to ImageHash's; the turned ones come from turning the few resized pixels both hashes are made of,
    instead of turning the decoded image and resizing it again: three resizes instead of eight."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    wide = np.asarray(gray.resize((9, 8), lanczos))  # type: ignore[attr-defined]
    tall = np.asarray(gray.resize((8, 9), lanczos))  # type: ignore[attr-defined]
    square = np.asarray(gray.resize((32, 32), lanczos))  # type: ignore[attr-defined]
    phashes = _phashes(np.stack([np.rot90(square, k) for k in range(4)]))
    turned = tuple(
        (to_signed64(_dhash(np.rot90(tall if k % 2 else wide, k))), to_signed64(phashes[k])) for k in (1, 2, 3)
    )
    return to_signed64(_dhash(wide)), to_signed64(phashes[0]), turned


def hash_bytes(
    data: bytes, max_pixels: int, thumb_size: int | None = None, thumb_kind: ThumbKind = "none", quality: int = 90
) -> HashResult:
    """Hash and thumbnail encoded image bytes; raises InvalidImageError for anything undecodable."""
    from PIL import Image

    from photodedup.imaging import encode_jpeg, load_rgb, open_image, to_model_array

    res = HashResult(path="", size=len(data), mtime_ns=0, md5=hashlib.md5(data).hexdigest())
    img = open_image(data, max_pixels)
    res.format = img.format or "UNKNOWN"
    width, height = img.size
    exif = None
    upright = False  # EXIF read, and it turns nothing
    try:
        exif = img.getexif()
        orientation = int(exif.get(TAG_ORIENTATION, 1) or 1)
        upright = orientation == 1
        res.exif_time = _exif_time(exif)
    except Exception:  # noqa: BLE001 - broken EXIF is common and must not lose the photo
        orientation = 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    res.width, res.height = width, height
    side = max(thumb_size or 0, MIN_DECODE_SIDE)
    if res.format == "HEIF":
        # pillow-heif's draft decodes an embedded thumbnail instead, when one is a big enough scaled copy.
        try:
            img.draft("RGB", (side, side))
        except (OSError, ValueError, RuntimeError) as exc:
            log.debug("no HEIF thumbnail decode: %s", exc)
    rgb = load_rgb(img, min_side=side)
    res.transparent = transparent_share(img)  # `img` is decoded now, its alpha not yet flattened
    traits = fidelity(img, res.format, np.asarray(rgb), exif)  # before the reduction: block traces need full size
    res.camera, res.quality, res.grey = traits.camera, traits.quality, traits.grey
    factor = min(rgb.size) // side
    if factor >= 2:  # what draft does for JPEG, for every other format: never hash 16 MP
        rgb = rgb.reduce(factor)
    try:
        pixels = np.asarray(rgb)
        full_gray = rgb.convert("L")  # converted once: the page test and the hashes both read it
        full_area = summed_area(np.asarray(full_gray))  # one table for both contrasts and the windows
        full_contrast = contrast(np.asarray(full_gray), full_area)
        page = full_contrast < PAGE_CONTRAST
        borders = outer_borders(pixels)  # both the content box and the added bars start from them
        box = content_box(pixels, keep_background=page, borders=borders)
        sx, sy = width / rgb.width, height / rgb.height
        res.content = (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
        res.picture_pixels = round(picture_pixels(pixels, borders) * sx * sy)
        cropped = box != (0, 0, rgb.width, rgb.height)
        gray = full_gray.crop(box) if cropped else full_gray
        area = crop_summed_area(full_area, box) if cropped else full_area
        res.dhash, res.phash, res.rotated = hash_family(gray)
        gray_pixels = np.asarray(gray)
        res.windows = tuple((to_signed64(d), to_signed64(p)) for d, p in window_hashes(gray_pixels, WINDOWS, area))
        res.contrast = contrast(gray_pixels, area) if cropped else full_contrast
        if thumb_kind == "jpeg" and thumb_size and upright and _as_is(data, res, thumb_size):
            res.thumb = data
        elif thumb_kind != "none" and thumb_size:
            arr = to_model_array(rgb, thumb_size)
            res.thumb = encode_jpeg(arr, quality) if thumb_kind == "jpeg" else arr
    except (OSError, ValueError) as exc:
        raise InvalidImageError(f"cannot hash image: {exc}") from None
    finally:
        if isinstance(img, Image.Image):
            img.close()
    return res


def _as_is(data: bytes, res: HashResult, thumb_size: int) -> bool:
    """Whether an upright file itself goes to the server instead of a thumbnail (`AS_IS_BYTES`): a JPEG,
    small in bytes and pixels."""
    return (
        res.format == "JPEG"
        and len(data) <= AS_IS_BYTES
        and res.width * res.height <= AS_IS_PIXELS * thumb_size * thumb_size
    )


def hash_file(
    path: str,
    size: int,
    mtime_ns: int,
    max_pixels: int,
    thumb_size: int | None = None,
    thumb_kind: ThumbKind = "none",
    quality: int = 90,
) -> HashResult:
    """Read the file once and hash it; every failure becomes `error` on the result, never an exception."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return HashResult(path, size, mtime_ns, error=f"cannot read: {exc.strerror or exc}")
    if not data:
        return HashResult(path, size, mtime_ns, error="empty file")
    if sniff_format(data[:SNIFF_BYTES]) is None:
        kind = "text" if _looks_like_text(data[:512]) else "unknown data"
        return HashResult(
            path,
            size,
            mtime_ns,
            md5=hashlib.md5(data).hexdigest(),
            error=f"not a supported photo format (content is {kind})",
        )
    try:
        res = hash_bytes(data, max_pixels, thumb_size, thumb_kind, quality)
    except InvalidImageError as exc:
        return HashResult(path, size, mtime_ns, md5=hashlib.md5(data).hexdigest(), error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not end the scan
        log.debug("unexpected error hashing %s", path, exc_info=True)
        return HashResult(path, size, mtime_ns, md5=hashlib.md5(data).hexdigest(), error=f"{type(exc).__name__}: {exc}")
    res.path, res.size, res.mtime_ns = path, size, mtime_ns
    return res


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def keep_freed_memory() -> bool:
    """Tune glibc malloc for the hash path (`MALLOC_MMAP_THRESHOLD`, `MALLOC_TRIM_THRESHOLD`); False where
    the C library has no `mallopt` (macOS) or refuses it. Process-wide: called in the hash workers only."""
    from photodedup.heap import set_thresholds

    return set_thresholds(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD)


def _init_worker() -> None:
    import signal
    import threading

    from photodedup.imaging import register_heif

    register_heif()
    keep_freed_memory()
    # A worker must not steal the terminal's Ctrl-C: the parent stops the pool and records progress.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker holds both ends of its task pipe, so it never sees the scan die; if the scan is killed
    # (SIGKILL, OOM), the worker notices it has been re-parented and exits instead of lingering.
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass(frozen=True)
class HashJob:
    path: str
    size: int
    mtime_ns: int


def hash_files(
    jobs: list[HashJob], max_pixels: int, thumb_size: int | None, thumb_kind: ThumbKind, quality: int
) -> list[HashResult]:
    """A chunk of files per task: one pickle round trip for several small photos instead of one each."""
    return [hash_file(j.path, j.size, j.mtime_ns, max_pixels, thumb_size, thumb_kind, quality) for j in jobs]


class HashPool:
    """Hashes files on `workers` processes, keeping a bounded number in flight so memory stays flat."""

    def __init__(
        self,
        workers: int = 0,
        max_pixels: int = 80_000_000,
        thumb_size: int | None = None,
        thumb_kind: ThumbKind = "none",
        quality: int = 90,
    ) -> None:
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.max_pixels = max_pixels
        self.thumb_size = thumb_size
        self.thumb_kind = thumb_kind
        self.quality = quality
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        # spawn: the parent may already run gRPC or torch threads, which fork would copy broken; and
        # spawned workers are the scan's own children, so they can tell when it is gone.
        return cf.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
        )

    def map_unordered(
        self, jobs: Iterable[HashJob], in_flight: int | None = None, chunk: int = CHUNK_FILES
    ) -> Iterator[HashResult]:
        """Yield results as they finish. Files go to the workers `chunk` at a time (the hand-off costs
        more than hashing a small photo), with at most `in_flight` chunks (default 2 per worker)
        outstanding so memory stays flat. A worker that dies (a decoder crash on a hostile file) breaks
        the pool: it is rebuilt and the unfinished files retried one per task; a file that breaks it
        again gets an error result.
        """
        limit = in_flight or self.workers * 2
        pending: dict[cf.Future[list[HashResult]], tuple[list[HashJob], int]] = {}
        retry: list[tuple[list[HashJob], int]] = []
        it = iter(jobs)
        exhausted = False
        while True:
            while len(pending) < limit and (retry or not exhausted):
                if retry:
                    batch, attempt = retry.pop()
                else:
                    batch, attempt = list(itertools.islice(it, chunk)), 0
                    if not batch:
                        exhausted = True
                        break
                fut = self._pool.submit(
                    hash_files, batch, self.max_pixels, self.thumb_size, self.thumb_kind, self.quality
                )
                pending[fut] = (batch, attempt)
            if not pending:
                return
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            broken = False
            for fut in done:
                batch, attempt = pending.pop(fut)
                try:
                    yield from fut.result()
                except BrokenProcessPool:
                    broken = True
                    if attempt >= 1 and len(batch) == 1:
                        job = batch[0]
                        yield HashResult(job.path, job.size, job.mtime_ns, error="the decoder crashed on this file")
                    else:
                        retry.extend(([job], attempt + 1) for job in batch)
            if broken:
                log.warning("a hashing worker died; restarting the pool")
                retry.extend(([job], attempt + 1) for batch, attempt in pending.values() for job in batch)
                pending.clear()
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()

    def close(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)

    def __enter__(self) -> HashPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(cancel=exc[0] is not None)

"""One read, one decode: hashes and thumbnails for every format; bad files become errors, not crashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from client_files import BROKEN, save_broken, save_exif_rotated, save_formats
from PIL import Image

from photodedup.client.grouping import hamming_bits
from photodedup.client.hashing import HashJob, HashPool, hash_bytes, hash_file, to_signed64, to_unsigned64

from helpers import encode, photo


def _bits(a: int, b: int) -> int:
    return hamming_bits((a, 0), (b, 0))


def _hash(path: Path, **kw: object) -> object:
    st = path.stat()
    return hash_file(str(path), st.st_size, st.st_mtime_ns, 80_000_000, **kw)  # type: ignore[arg-type]


def test_signed_roundtrip() -> None:
    for v in (0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1):
        s = to_signed64(v)
        assert -(1 << 63) <= s < (1 << 63)
        assert to_unsigned64(s) == v


def test_every_format_hashes_alike(tmp_path: Path) -> None:
    img = photo(3, (320, 240))
    files = save_formats(tmp_path, img)
    ref = _hash(files["PNG"], thumb_size=64, thumb_kind="array")
    assert ref.error is None
    for fmt, path in files.items():
        res = _hash(path, thumb_size=64, thumb_kind="array")
        assert res.error is None, (fmt, res.error)
        assert res.format == fmt
        assert (res.width, res.height) == (320, 240)
        assert res.md5 and len(res.md5) == 32
        assert isinstance(res.thumb, np.ndarray) and res.thumb.shape == (64, 64, 3)
        assert len(res.rotated) == 3
        # Lossy and palette formats move a few bits; a different photo moves about half of them.
        limit = 12 if fmt == "GIF" else 6
        assert _bits(res.dhash, ref.dhash) + _bits(res.phash, ref.phash) <= limit, fmt
    other = _hash(save_formats(tmp_path / "other", photo(99, (320, 240)))["PNG"])
    assert _bits(other.dhash, ref.dhash) + _bits(other.phash, ref.phash) > 30


def test_gif_uses_its_first_frame(tmp_path: Path) -> None:
    img = photo(4, (200, 150))
    res = _hash(save_formats(tmp_path, img)["GIF"], thumb_size=32, thumb_kind="array")
    assert res.error is None
    # The second frame is solid red; the first is the photo, which is not.
    assert res.thumb[..., 1].std() > 10


def test_exif_orientation_is_applied_before_hashing(tmp_path: Path) -> None:
    img = photo(5, (400, 300))
    upright = _hash(save_formats(tmp_path, img)["PNG"], thumb_size=64, thumb_kind="array")
    rotated = _hash(save_exif_rotated(tmp_path / "rotated.jpg", img), thumb_size=64, thumb_kind="array")
    assert rotated.error is None
    assert (rotated.width, rotated.height) == (400, 300)
    assert _bits(rotated.dhash, upright.dhash) + _bits(rotated.phash, upright.phash) <= 8
    assert np.abs(rotated.thumb.astype(int) - upright.thumb.astype(int)).mean() < 8
    assert rotated.exif_time is not None
    # A copy whose pixels were turned (no EXIF tag) matches one of the rotated hashes.
    turned = img.transpose(Image.Transpose.ROTATE_90)
    turned.save(tmp_path / "turned.png")
    t = _hash(tmp_path / "turned.png")
    assert min(_bits(d, t.dhash) + _bits(p, t.phash) for d, p in upright.rotated) <= 4


def test_jpeg_thumbnail_is_small(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    photo(6, (750, 500)).resize((3000, 2000)).save(path, quality=95)
    res = _hash(path, thumb_size=224, thumb_kind="jpeg", quality=90)
    assert res.error is None and isinstance(res.thumb, bytes)
    assert res.thumb[:3] == b"\xff\xd8\xff"
    assert len(res.thumb) <= 15_000
    assert Image.open(__import__("io").BytesIO(res.thumb)).size == (224, 224)


def test_a_small_upright_jpeg_travels_to_a_server_as_it_is(tmp_path: Path) -> None:
    """A JPEG about a thumbnail's size is its own thumbnail: the server makes of its bytes the very pixels the
    scan would have encoded. A turned, larger or non-JPEG file still travels as a 224 px JPEG thumbnail."""
    import io

    from photodedup.imaging import decode_for_model, load_rgb, to_model_array

    small = tmp_path / "small.jpg"
    photo(8, (320, 240)).save(small, quality=85)
    res = _hash(small, thumb_size=224, thumb_kind="jpeg", quality=90)
    assert res.error is None and res.thumb == small.read_bytes()
    made_here = to_model_array(load_rgb(Image.open(small), min_side=256), 224)
    assert np.array_equal(decode_for_model(res.thumb, 224, 80_000_000), made_here)

    photo(8, (320, 240)).save(tmp_path / "small.png")
    photo(8, (1200, 900)).save(tmp_path / "larger.jpg", quality=85)
    save_exif_rotated(tmp_path / "turned.jpg", photo(8, (320, 240)))
    for name in ("small.png", "larger.jpg", "turned.jpg"):
        res = _hash(tmp_path / name, thumb_size=224, thumb_kind="jpeg", quality=90)
        assert isinstance(res.thumb, bytes) and res.thumb != (tmp_path / name).read_bytes()
        assert Image.open(io.BytesIO(res.thumb)).size == (224, 224), name
    # In-process embedding takes arrays, whatever the file.
    assert isinstance(_hash(small, thumb_size=224, thumb_kind="array").thumb, np.ndarray)


def test_large_jpeg_is_decoded_at_reduced_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import photodedup.imaging as imaging

    seen: list[tuple[int, int]] = []
    real = imaging.load_rgb

    def spy(img: Image.Image, min_side: int | None = None) -> Image.Image:
        out = real(img, min_side)
        seen.append(out.size)
        return out

    monkeypatch.setattr(imaging, "load_rgb", spy)
    res = hash_bytes(encode(photo(7, (800, 600)).resize((4000, 3000)), "JPEG"), 80_000_000, 224, "array")
    assert (res.width, res.height) == (4000, 3000)
    assert seen and max(seen[0]) <= 1000  # DCT scaling: 1/4 or 1/8 of the full size, never 12 MP


@pytest.mark.parametrize("name", BROKEN)
def test_broken_files_are_errors(tmp_path: Path, name: str) -> None:
    files = save_broken(tmp_path, encode(photo(8, (800, 600)), "JPEG"))
    res = _hash(files[name], thumb_size=64, thumb_kind="jpeg")
    assert res.error, name
    assert res.dhash is None and res.thumb is None


def test_bomb_error_names_the_limit(tmp_path: Path) -> None:
    files = save_broken(tmp_path, encode(photo(8), "JPEG"))
    assert "pixels" in _hash(files["bomb.png"]).error
    assert "text" in _hash(files["text.jpg"]).error
    assert _hash(files["zero.jpg"]).error == "empty file"
    assert "cannot read" in hash_file(str(tmp_path / "gone.jpg"), 1, 1, 80_000_000).error


def test_pool_hashes_everything_once(tmp_path: Path) -> None:
    paths = []
    for i in range(12):
        p = tmp_path / f"{i}.jpg"
        photo(i, (120, 90)).save(p)
        paths.append(p)
    (tmp_path / "bad.jpg").write_text("nope")
    paths.append(tmp_path / "bad.jpg")
    jobs = [HashJob(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    with HashPool(workers=2, thumb_size=32, thumb_kind="jpeg") as pool:
        results = list(pool.map_unordered(jobs, in_flight=3))
    assert sorted(r.path for r in results) == sorted(str(p) for p in paths)
    assert [r.path for r in results if r.error] == [str(tmp_path / "bad.jpg")]
    assert all(isinstance(r.thumb, bytes) for r in results if not r.error)


@pytest.mark.skipif(
    __import__("platform").libc_ver()[0] != "glibc", reason="malloc tuning is glibc's mallopt; elsewhere a no-op"
)
def test_hash_workers_keep_freed_memory_on_glibc() -> None:
    """The hash workers' malloc tuning takes effect where the scanner runs (glibc): without it a small photo's
    temporaries were faulted in afresh on every file."""
    import subprocess
    import sys

    code = "from photodedup.client.hashing import keep_freed_memory as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"

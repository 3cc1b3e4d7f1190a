"""Real photo files for the client tests: every format, EXIF-rotated copies and broken files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image

from photodedup.imaging import register_heif

# Files that must end up as errors, never in a group and never crash the scan.
BROKEN = ("corrupt.jpg", "truncated.jpg", "zero.jpg", "text.jpg", "bomb.png")


def save_formats(folder: Path, img: Image.Image, stem: str = "img") -> dict[str, Path]:
    """The same picture in every supported format; the GIF is animated and its first frame is `img`."""
    register_heif()
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for fmt, ext, kw in (
        ("JPEG", "jpg", {"quality": 92}),
        ("PNG", "png", {}),
        ("WEBP", "webp", {"quality": 92}),
        ("TIFF", "tif", {}),
        ("BMP", "bmp", {}),
        ("HEIF", "heic", {"quality": 92}),
    ):
        path = folder / f"{stem}.{ext}"
        img.save(path, format=fmt, **kw)
        out[fmt] = path
    gif = folder / f"{stem}.gif"
    second = Image.new("RGB", img.size, (255, 0, 0))
    img.convert("P", palette=Image.Palette.ADAPTIVE).save(
        gif, save_all=True, append_images=[second.convert("P")], duration=100, loop=0
    )
    out["GIF"] = gif
    return out


def save_exif_rotated(path: Path, img: Image.Image) -> Path:
    """A JPEG whose pixels are turned 90 degrees and whose EXIF orientation (6) turns them back to `img`."""
    stored = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 10:30:00"
    stored.save(path, format="JPEG", quality=92, exif=exif.tobytes())
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels: a decompression bomb as far as any decoder can tell."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def save_broken(folder: Path, good_jpeg: bytes) -> dict[str, Path]:
    """Corrupt, truncated, zero-byte, text-as-.jpg and decompression-bomb files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "corrupt.jpg": good_jpeg[:600] + bytes(range(256)) * 40,
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 3],
        "zero.jpg": b"",
        "text.jpg": b"this is a shopping list, not a photo\n" * 10,
        "bomb.png": png_header_only(40_000, 40_000),
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out

"""Which encoded images the engine's GPU decodes (nvJPEG) and which the server's CPUs decode.

A PyTorch engine on CUDA can decode a batch of JPEGs on the device (`torchvision.io.decode_jpeg(...,
device="cuda")`), so the server's CPUs do no pixel work. Only what nvJPEG decodes to exactly the pixels
the CPU path gives goes there: a baseline (sequential, Huffman) 8-bit YCbCr JPEG already at the model's
input size, with nothing that could rotate it. Everything else (progressive, CMYK/YCCK, greyscale,
arithmetic or lossless coding, other sizes, EXIF, PNG, corrupt headers) keeps the CPU path, with its
per-image errors. The choice reads the header only: a few microseconds, no decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# Start-of-frame markers (0xC4 DHT, 0xC8 JPG and 0xCC DAC are not frames).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_BASELINE = frozenset({0xC0, 0xC1})  # baseline and extended sequential, Huffman-coded
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


class Decoder(Enum):
    DEVICE = "device"
    CPU = "cpu"


@dataclass(frozen=True)
class JpegHeader:
    """What the frame header and the segments before it say."""

    width: int
    height: int
    components: int
    precision: int  # bits per sample
    sof: int  # the start-of-frame marker: 0xC0 baseline, 0xC2 progressive, ...
    adobe: bool  # an Adobe APP14 segment (its colour transform marks CMYK/YCCK files)
    rgb_ids: bool  # component ids 'R', 'G', 'B': stored as RGB, not YCbCr
    exif: bool  # an EXIF APP1 segment (may carry an orientation)


@dataclass(frozen=True)
class Route:
    decoder: Decoder
    reason: str  # why, for tests and debug logs


@dataclass(frozen=True, slots=True)
class DeviceJpeg:
    """Encoded bytes the batcher carries in place of pixels, for an engine that decodes them on its device."""

    data: bytes


def parse_jpeg_header(data: bytes) -> JpegHeader | None:
    """The header up to the first frame marker; None when `data` is not a JPEG or its header is malformed."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(data)
    adobe = exif = False
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            return None
        body = data[pos + 4 : pos + 2 + length]
        if marker in _SOF:
            if len(body) < 6:
                return None
            height = int.from_bytes(body[1:3], "big")
            width = int.from_bytes(body[3:5], "big")
            ids = bytes(body[6 + 3 * i] for i in range(body[5]) if 6 + 3 * i < len(body))
            return JpegHeader(width, height, body[5], body[0], marker, adobe, ids == b"RGB", exif)
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            exif = True
        elif marker == 0xEE and body.startswith(b"Adobe"):
            adobe = True
        elif marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        pos += 2 + length
    return None


def choose_decoder(data: bytes, size: int, device_decode: bool) -> Route:
    """Where to decode one encoded image for a model of input `size`.

    Args:
        data: the encoded bytes as received.
        size: the model's input size; only thumbnails already at size x size go to the device (no resize there).
        device_decode: whether every engine that may run the batch decodes JPEG on its device
            (`TorchEngine.decodes_jpeg`: PyTorch on CUDA with torchvision, and the setting on).
    """
    if not device_decode:
        return Route(Decoder.CPU, "the engine does not decode on its device")
    header = parse_jpeg_header(data)
    if header is None:
        return Route(Decoder.CPU, "not a JPEG, or its header is malformed")
    if header.sof not in _BASELINE:
        return Route(Decoder.CPU, "progressive, arithmetic or lossless JPEG" if header.sof != 0xC2 else "progressive")
    if header.components != 3 or header.adobe or header.rgb_ids:
        return Route(Decoder.CPU, f"{header.components} components, not plain YCbCr")
    if header.precision != 8:
        return Route(Decoder.CPU, f"{header.precision}-bit samples")
    if (header.width, header.height) != (size, size):
        return Route(Decoder.CPU, f"{header.width}x{header.height}, not the model's {size}x{size}")
    if header.exif or b"Orientation" in data:  # as the CPU fast path: any hint of a rotation (EXIF or XMP)
        return Route(Decoder.CPU, "EXIF may rotate it")
    return Route(Decoder.DEVICE, "baseline YCbCr JPEG at the model's size")

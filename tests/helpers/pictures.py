"""Small synthetic pictures and encodings shared by the image tests."""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageDraw, ImageFilter

# TIFF field types of EXIF entries
SHORT, ASCII, RATIONAL = 3, 2, 5
ORIENTATION, X_RESOLUTION = 0x0112, 0x011A


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    """The bytes of `image` saved in `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def cabochon(colour: tuple[int, int, int]) -> Image.Image:
    """A polished stone on white: the same cut in any colour has the same phash."""
    image = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 20, 130, 100), fill=colour)
    draw.ellipse((55, 35, 85, 55), fill=tuple(min(255, c + 80) for c in colour))
    return image.filter(ImageFilter.GaussianBlur(2))


def exif_block(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A raw EXIF block (as a JPEG's APP1 holds it) with one IFD of (tag, type, count, value)
    entries, written as given: the types need not be the ones the standard says."""
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd, extra = struct.pack("<H", len(entries)), b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, count, data_offset + len(extra))
            extra += value
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + extra

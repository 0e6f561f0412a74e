"""Small synthetic pictures and encodings shared by the image tests."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFilter


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

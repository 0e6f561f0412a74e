"""decode_image: every hostile or unusual file either becomes plain 8-bit RGB or fails clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf.images import ImageError, decode_image, downscale_to_short_side
from pictures import encoded




def test_truncated_jpeg_fails(tmp_path: Path) -> None:
    data = encoded(Image.new("RGB", (64, 48), (200, 30, 30)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot decode"):
        decode_image(path)


def test_text_file_named_jpg_fails(tmp_path: Path) -> None:
    path = tmp_path / "error-page.jpg"
    path.write_text("<html><body>404 Not Found</body></html>", encoding="utf-8")
    with pytest.raises(ImageError, match="not an image"):
        decode_image(path)


def test_one_pixel_image_decodes() -> None:
    # The size check is clean's job (clean.min_side), not the decoder's: see test_clean.
    image = decode_image(encoded(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    assert image.size == (1, 1) and image.mode == "RGB"


def test_cmyk_becomes_rgb() -> None:
    image = decode_image(encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"))
    assert image.mode == "RGB"
    red, green, blue = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60


def test_palette_transparency_becomes_white() -> None:
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    image = decode_image(encoded(palette, "PNG", transparency=0))
    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[4, 4]) == (255, 255, 255)  # transparent: white, not black


def test_rgba_transparency_becomes_white() -> None:
    image = decode_image(encoded(Image.new("RGBA", (4, 4), (10, 20, 30, 0)), "PNG"))
    assert tuple(np.asarray(image)[0, 0]) == (255, 255, 255)


def test_grayscale_becomes_rgb() -> None:
    image = decode_image(encoded(Image.new("L", (8, 8), 77), "PNG"))
    assert image.mode == "RGB" and tuple(np.asarray(image)[0, 0]) == (77, 77, 77)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    image = decode_image(encoded(Image.new("I;16", (8, 8), 40000), "PNG"))
    assert tuple(np.asarray(image)[0, 0]) == (156, 156, 156)  # 40000 / 256


def test_exif_orientation_rotates() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image = decode_image(encoded(Image.new("RGB", (40, 20), "blue"), "JPEG", exif=exif))
    assert image.size == (20, 40)


def test_decompression_bomb_fails() -> None:
    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(encoded(Image.new("L", (200, 100)), "PNG"), max_pixels=10_000)


def test_real_photo_decodes(flowers_mini: Path) -> None:
    path = sorted((flowers_mini / "daisy").glob("*.jpg"))[0]
    image = decode_image(path)
    assert image.mode == "RGB" and min(image.size) > 100


def test_downscale_keeps_aspect_and_never_enlarges() -> None:
    assert downscale_to_short_side(Image.new("RGB", (300, 200)), 64).size == (96, 64)
    assert downscale_to_short_side(Image.new("RGB", (50, 40)), 64).size == (50, 40)

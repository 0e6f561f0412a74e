"""decode_image: every hostile or unusual file either becomes plain 8-bit RGB or fails clearly."""

from __future__ import annotations

import io
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from imgclf.core import images
from imgclf.core.images import (
    ImageError,
    PixelBudget,
    decode,
    decode_image,
    downscale_to_short_side,
)

from helpers.pictures import ASCII, ORIENTATION, SHORT, X_RESOLUTION, encoded, exif_block


def gradient(width: int, height: int) -> Image.Image:
    """A picture whose every pixel differs, so that a wrong rotation or flip shows."""
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8))


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


def test_exif_rational_written_as_text_still_rotates() -> None:
    # Some photo editors write XResolution (a rational) as text. ImageOps.exif_transpose re-writes
    # the EXIF block and raised TypeError ("bad operand type for abs(): 'str'") on such photos.
    exif = exif_block([(ORIENTATION, SHORT, 1, struct.pack("<H", 6)),
                       (X_RESOLUTION, ASCII, 6, b"72/1\0\0")])
    image = decode_image(encoded(Image.new("RGB", (40, 20), "blue"), "JPEG", exif=exif))
    assert image.size == (20, 40)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillows_transpose(orientation: int) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    data = encoded(gradient(48, 32), "PNG", exif=exif)
    with Image.open(io.BytesIO(data)) as reference:
        expected = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"))
    decoded = decode(data)
    assert np.array_equal(np.asarray(decoded.image), expected)
    assert decoded.size == decoded.image.size  # upright width and height


@pytest.mark.parametrize("exif", [
    b"Exif\0\0" + b"\xff" * 40,  # not TIFF at all
    exif_block([(ORIENTATION, ASCII, 2, b"6\0")]),  # the orientation as text
    exif_block([(ORIENTATION, SHORT, 1, struct.pack("<H", 77))]),  # no such orientation
    exif_block([(ORIENTATION, SHORT, 1000, b"")]),  # its value points past the end
], ids=["garbage", "text", "unknown-value", "past-the-end"])
@pytest.mark.filterwarnings("ignore:Tag data larger than file")
def test_unreadable_orientation_keeps_the_picture_as_stored(exif: bytes) -> None:
    image = decode_image(encoded(gradient(40, 20), "JPEG", exif=exif))
    assert image.size == (40, 20)


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


def psnr(first: Image.Image, second: Image.Image) -> float:
    error = np.mean((np.asarray(first, dtype=float) - np.asarray(second, dtype=float)) ** 2)
    return float(10 * np.log10(255 ** 2 / error))


def test_downscale_stays_close_to_lanczos_on_real_photos(flowers_mini: Path) -> None:
    # The cheaper filter must not visibly change the cleaned pictures: measured 38.4 dB at worst
    # and 46.6 dB for the median photo; a box filter gives about 35 dB at worst.
    photos = [image for image in map(decode_image, sorted(flowers_mini.glob("*/*.jpg")))
              if min(image.size) > 300]
    assert len(photos) >= 50
    ratios = []
    for photo in photos:
        small = downscale_to_short_side(photo, 256)
        ratios.append(psnr(small, photo.resize(small.size, Image.Resampling.LANCZOS)))
    assert min(ratios) >= 38
    assert np.median(ratios) >= 45


@pytest.mark.parametrize("width, height", [(1_000_000, 1), (1, 100_000), (210, 10)])
def test_elongated_images_are_refused_before_decoding(width: int, height: int) -> None:
    # A 1,000,000 x 1 PNG is 3 KB and within the pixel limit, but Resize(73) in predict or the
    # data loader turns it into 73 x 73,000,000 pixels.
    data = encoded(Image.new("L", (width, height)), "PNG")
    with pytest.raises(ImageError, match=rf"too elongated: {width}x{height}"):
        decode_image(data)


def test_panoramas_up_to_the_aspect_limit_decode() -> None:
    assert decode_image(encoded(Image.new("RGB", (200, 10)), "PNG")).size == (200, 10)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX"])
def test_only_the_allowed_formats_are_parsed(fmt: str) -> None:
    picture = Image.new("RGB", (32, 32), "green")
    assert decode_image(encoded(picture, "PNG")).size == (32, 32)
    with pytest.raises(ImageError, match="not an image file in an allowed format"):
        decode_image(encoded(picture, fmt))


def test_reduced_jpeg_decode_keeps_the_short_side_and_reports_the_stored_size() -> None:
    picture = gradient(2000, 1500)
    data = encoded(picture, "JPEG", quality=90)
    reduced = decode(data, short_side=256)
    assert reduced.size == (2000, 1500)
    assert reduced.image.size == (500, 375)  # 1/4: 1/8 would make the short side 188 < 256
    full = downscale_to_short_side(decode_image(data), 256)
    both = [np.asarray(downscale_to_short_side(image, 256), dtype=float)
            for image in (reduced.image, full)]
    assert np.abs(both[0] - both[1]).mean() < 2  # the same picture, to the eye
    # Below the requested short side nothing is reduced.
    assert decode(data, short_side=1000).image.size == (2000, 1500)


def test_reduced_decode_still_reads_every_byte() -> None:
    data = encoded(gradient(2000, 1500), "JPEG")
    with pytest.raises(ImageError, match="cannot decode"):
        decode(data[: len(data) * 2 // 3], short_side=256)


def test_any_parser_failure_becomes_an_image_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded(Image.new("RGB", (8, 8)), "PNG")
    for failure, message in ((TypeError("bad operand"), "cannot decode: bad operand"),
                             (MemoryError(), "out of memory while decoding")):
        def fail(self, failure=failure):
            raise failure
        monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
        with pytest.raises(ImageError, match=message):
            decode_image(data)


def test_files_larger_than_any_photo_are_not_read(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(encoded(gradient(64, 64), "PNG"))
    monkeypatch.setattr(images, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(ImageError, match="larger than"):
        decode_image(path)


def test_missing_file_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read: No such file or directory"):
        decode_image(tmp_path / "gone.jpg")


def test_identify_reads_the_format_from_the_content(flowers_mini: Path, plants_40: Path) -> None:
    jpeg = sorted((flowers_mini / "daisy").glob("*.jpg"))[0].read_bytes()
    webp = next(sorted(plants_40.iterdir())[0].glob("*.webp")).read_bytes()
    assert (images.identify(jpeg), images.identify(webp)) == (".jpg", ".webp")
    for data, message in ((bytes(4096), "not an image file"),
                          (encoded(Image.new("L", (100_000, 1)), "PNG"), "too elongated")):
        with pytest.raises(ImageError, match=message):
            images.identify(data)


class RecordingBudget(PixelBudget):
    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.requests: list[int] = []

    def hold(self, pixels: int):
        self.requests.append(pixels)
        return super().hold(pixels)


def test_decode_holds_the_decoded_pixels_from_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = RecordingBudget(images.MAX_PIXELS)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    decode(encoded(gradient(40, 20), "PNG"))
    decode(encoded(gradient(2000, 1500), "JPEG"), short_side=256)
    assert budget.requests == [40 * 20, 500 * 375]


def test_pixel_budget_never_lets_threads_exceed_it() -> None:
    budget, lock = PixelBudget(100), threading.Lock()
    held, peak = [0], [0]

    def work(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                held[0] += min(pixels, 100)
                peak[0] = max(peak[0], held[0])
            time.sleep(0.02)
            with lock:
                held[0] -= min(pixels, 100)

    threads = [threading.Thread(target=work, args=(pixels,))
               for pixels in (60, 60, 30, 30, 10, 500, 40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)  # a request above capacity ran too
    assert peak[0] <= 100


def test_the_data_loader_refuses_a_strip_before_resizing_it(tmp_path: Path) -> None:
    # The door of 7.5: Resize(73) of this 3 KB file would have asked for 73 x 73,000,000 pixels.
    from imgclf.training.datasets import ImageListDataset, Sample
    from imgclf.training.transforms import Preprocessing

    strip = tmp_path / "strip.png"
    strip.write_bytes(encoded(Image.new("L", (1_000_000, 1)), "PNG"))
    assert strip.stat().st_size < 5_000
    dataset = ImageListDataset([Sample(strip, 0)], Preprocessing.for_size(64).eval_transform())
    with pytest.raises(ImageError, match=f"{strip}: too elongated"):
        dataset[0]

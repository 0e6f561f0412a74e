"""Decoding untrusted image files into plain RGB pictures.

Every image that enters the pipeline (a scraped download, a file of the user's folder, an image
given to `predict`, the training and test sets) goes through `decode`, and a file that cannot be
used fails with `ImageError` and a reason, never with anything else:

- only the formats of IMAGE_SUFFIXES are opened (never EPS, which Pillow hands to Ghostscript,
  nor any of Pillow's rarely used parsers);
- the header is checked before any pixel is decoded: at most MAX_PIXELS pixels (decompression
  bombs) and an aspect ratio of at most MAX_ASPECT_RATIO (a 1,000,000 x 1 strip is within the
  pixel limit, but resizing it to a short side of 73 px would make 73 x 73,000,000 pixels);
- a full decode, so that a truncated file fails here and not in the middle of training;
- the EXIF orientation: tag 274 is read alone and applied. `ImageOps.exif_transpose` also
  re-writes the whole EXIF block, which raises on fields of an unexpected type (a rational
  written as text by some photo editors), so one odd photo would have stopped a stage;
- every mode (palette, alpha, CMYK, grayscale, 16-bit) becomes 8-bit RGB.

Memory: one process decodes at most MAX_PIXELS pixels at a time (`DECODE_BUDGET`, shared by
threads such as the download workers), and a caller that shrinks the picture anyway can ask for a
reduced-size JPEG decode (`short_side`), which needs up to 64 times less memory. Measured in
benchmarks/bench_memory.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image, UnidentifiedImageError

from imgclf.core.errors import ImgclfError

# The one pixel limit of the project: every decode uses it (scrape's sources, clean, label, the
# training and test sets, predict). It is a safety bound, not a tuning knob: a parameter would
# have to be read by every stage and by predict, and a change would re-run all of them.
MAX_PIXELS = 50_000_000  # about 7000 x 7000: far above any photo we train on
# The longest side may be at most this many times the shortest: wide panoramas (about 10:1) pass,
# strips that only a resize would blow up do not.
MAX_ASPECT_RATIO = 20
MAX_FILE_BYTES = 100 * 1024 * 1024  # a larger file is refused unread: no photo needs more
# Pillow's format name -> the suffix a stored copy gets. MPO is the JPEG variant that many
# cameras write (a JPEG with a second, preview picture); Pillow opens it through its JPEG parser.
IMAGE_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
                  "BMP": ".bmp", "TIFF": ".tif"}
OPENED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # the parsers Pillow may use
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
WHITE = (255, 255, 255)
# EXIF orientation (tag 274) -> the transposition that shows the picture upright.
ORIENTATION_TAG = 0x0112
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
QUARTER_TURNS = {5, 6, 7, 8}  # orientations that swap width and height


class ImageError(ImgclfError, ValueError):
    """The file is not an image we can use; the message says why."""


def image_extensions() -> set[str]:
    """File extensions (lower case, with the dot) of the formats in IMAGE_SUFFIXES."""
    return {extension for extension, image_format in Image.registered_extensions().items()
            if image_format in IMAGE_SUFFIXES}


class PixelBudget:
    """At most `capacity` pixels decoded at once by the threads of one process.

    A decoded picture costs 3 to 8 bytes per pixel while it is converted; with eight download
    threads, eight pictures near the pixel limit would need about 4 GB. A thread waits until the
    pixels it needs are free; a picture larger than the whole budget waits until it is alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.capacity)
        with self._changed:
            self._changed.wait_for(lambda: self._free >= pixels)
            self._free -= pixels
        try:
            yield
        finally:
            with self._changed:
                self._free += pixels
                self._changed.notify_all()


DECODE_BUDGET = PixelBudget(MAX_PIXELS)
# Pillow stores a large picture in blocks (16 MB by default). glibc serves blocks under 32 MB from
# per-thread heaps that keep freed memory, so eight download threads kept about 1.4 GB after their
# 49-megapixel pictures were freed, budget or not; blocks of 64 MB are mapped and unmapped
# directly (measured in benchmarks/bench_memory.py). Pictures under 16 MB are not affected.
LARGE_PICTURE_BLOCK_BYTES = 64 * 1024 * 1024
Image.core.set_block_size(LARGE_PICTURE_BLOCK_BYTES)


@dataclasses.dataclass(frozen=True)
class Decoded:
    image: Image.Image       # upright, RGB; smaller than `size` after a reduced-size decode
    format: str              # Pillow's format name, a key of IMAGE_SUFFIXES
    size: tuple[int, int]    # the stored picture's upright width and height


@contextlib.contextmanager
def _image_errors() -> Iterator[None]:
    """Turn whatever parsing untrusted bytes raises into ImageError with a reason."""
    try:
        yield
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("out of memory while decoding") from None
    except UnidentifiedImageError:
        raise ImageError(f"not an image file in an allowed format ({FORMAT_NAMES})") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"decompression bomb: {error}") from None
    except Exception as error:  # noqa: BLE001 - on purpose, see below
        # Pillow reports corrupt data as OSError, SyntaxError, ValueError or EOFError, but its
        # parsers meet hostile bytes with anything (TypeError, IndexError, struct.error, ...):
        # whatever the bytes do, the caller gets one kind of error to record and move past.
        raise ImageError(f"cannot decode: {str(error)[:200] or type(error).__name__}") from None


def decode(source: Path | bytes, max_pixels: int = MAX_PIXELS,
           short_side: int | None = None) -> Decoded:
    """Open `source` (a path or the file's bytes), decode it fully and return it upright, RGB.

    With `short_side`, a JPEG may be decoded at 1/2, 1/4 or 1/8 of its size as long as its
    shorter side stays at least `short_side`: the same picture for a caller that shrinks it to
    that size anyway, for a fraction of the memory and time.
    """
    with _image_errors():
        data = source if isinstance(source, bytes) else _read(source)
        image = _open(data, max_pixels)
        width, height = image.size
        if short_side is not None:
            image.draft(image.mode, (short_side, short_side))  # JPEG only; others ignore it
        with DECODE_BUDGET.hold(image.width * image.height):
            image.load()  # decode every byte now: truncated data raises here
            orientation = _orientation(image)
            upright = image.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else image
            size = (height, width) if orientation in QUARTER_TURNS else (width, height)
            return Decoded(to_rgb(upright), image.format, size)


def decode_image(source: Path | bytes, max_pixels: int = MAX_PIXELS,
                 short_side: int | None = None) -> Image.Image:
    """The upright RGB picture of `source`; see `decode`."""
    return decode(source, max_pixels, short_side).image


def identify(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    """The suffix to store `data` under, from its header alone (no pixel is decoded).

    Raises ImageError unless the header is one of an allowed format within the limits.
    """
    with _image_errors():
        return IMAGE_SUFFIXES[_open(data, max_pixels).format]


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return read_at_most(handle.read)
    except OSError as error:
        raise ImageError(f"cannot read: {error.strerror or error}") from None


def read_at_most(read: Callable[[int], bytes]) -> bytes:
    """All that `read(n)` gives, refusing more than MAX_FILE_BYTES: one byte past the limit is
    read, because a size from a listing or an archive's header can be stale or lie."""
    data = read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"larger than {MAX_FILE_BYTES} bytes")
    return data


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Pillow's lazy image of `data` (only the header is read), within the limits."""
    image = Image.open(io.BytesIO(data), formats=OPENED_FORMATS)
    width, height = image.size
    if min(width, height) < 1:
        raise ImageError(f"no pixels: {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(f"too many pixels: {width}x{height} > {max_pixels}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(f"too elongated: {width}x{height}, the longer side may be at most "
                         f"{MAX_ASPECT_RATIO} times the shorter")
    return image


def _orientation(image: Image.Image) -> int:
    """EXIF tag 274, or 1 (as stored) when there is none or the EXIF cannot be read.

    Broken metadata is no reason to lose a picture whose pixels decode.
    """
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - any parse failure of the EXIF block means "unknown"
        return 1
    return value if isinstance(value, int) else 1


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB; transparent pixels become white rather than black."""
    if image.mode == "RGB":
        return image  # no copy: a picture near the pixel limit is 150 MB
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping at 255.
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert("RGB")


# Bicubic rather than Lanczos: Pillow's resize costs about a fixed 0.8 ms plus 0.23 ms per filter
# tap at 500 -> 256 px, and bicubic's support of 2 needs 9 taps where Lanczos's 3 needs 13. On
# plants-40 that is 2.9 ms instead of 4.0 (the clean stage's largest cost); the cleaned JPEGs are
# at 39 dB PSNR or more against the Lanczos ones (48.7 dB for the median picture), and the same
# images are kept and dropped (docs/benchmarks.md, "Clean stage throughput"). The cheaper filters
# fell to 34-38 dB at worst (Hamming, bilinear, box, or reduce(2) then a short upscale).
DOWNSCALE_FILTER = Image.Resampling.BICUBIC


def downscale_to_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Shrink so that the shorter side is `short_side`; smaller images are left as they are."""
    width, height = image.size
    scale = short_side / min(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, DOWNSCALE_FILTER, reducing_gap=3.0)

"""Decoding untrusted image files into plain RGB pictures.

Every image that enters the pipeline (a scraped download, a file of the user's folder, an image
given to `predict`) goes through `decode_image`: a pixel limit against decompression bombs, a full
decode (a truncated file fails here, not in the middle of training), EXIF orientation, and a
conversion of every mode (palette, alpha, CMYK, grayscale, 16-bit) to 8-bit RGB.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from imgclf.errors import ImgclfError

MAX_PIXELS = 50_000_000  # about 7000 x 7000: far above any photo we train on
WHITE = (255, 255, 255)


class ImageError(ImgclfError, ValueError):
    """The file is not an image we can use; the message says why."""


def decode_image(source: Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open `source` (a path or the file's bytes), decode it fully and return it as RGB."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(f"too many pixels: {width}x{height} > {max_pixels}")
                image.load()  # decode every byte now: truncated data raises here
                upright = ImageOps.exif_transpose(image)
                return to_rgb(upright)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image file Pillow can identify") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"decompression bomb: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports truncated and corrupt data as OSError or SyntaxError.
        raise ImageError(f"cannot decode: {error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB; transparent pixels become white rather than black."""
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


def downscale_to_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """Shrink so that the shorter side is `short_side`; smaller images are left as they are."""
    width, height = image.size
    scale = short_side / min(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)

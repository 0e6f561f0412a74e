"""Rebuild the repository's shipped sample and weights from ../shared (run once by a maintainer).

- data/sample/flowers/: the 200 photos of ../shared/datasets/flowers-mini, EXIF orientation
  applied, downscaled where larger to a 256 px shorter side (most are 240 px: kept as they are),
  re-encoded as JPEG (quality 80, no metadata), with the CC BY 2.0 credits of exactly these
  photos in LICENSE.txt.
- weights/mobilenet_v2-imagenet-fp16.pth: ../shared/weights/mobilenet_v2-imagenet-folded.pth
  with every floating-point tensor stored in half precision (half the size; imgclf.training.models
  loads it back into float32).

Usage: python scripts/make_sample.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
from PIL import Image, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "data/sample/flowers"
WEIGHTS_FILE = REPO_ROOT / "weights/mobilenet_v2-imagenet-fp16.pth"
SHORT_SIDE = 256
JPEG_QUALITY = 80

LICENSE_HEADER = """\
All images in this folder are licensed under the Creative Commons By-Attribution License 2.0,
available at: https://creativecommons.org/licenses/by/2.0/
They come from the TensorFlow flower_photos set (via flowers-mini). Changes made here: the EXIF
orientation was applied, photos with a shorter side above {side} px were downscaled to {side} px,
and all were re-encoded as JPEG (quality {quality}) without metadata. The photographers are
listed below; please credit them for any use as the licence asks.

"""


def downscale(source: Path) -> bytes:
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = SHORT_SIDE / min(image.size)
        if scale < 1:
            size = (round(image.width * scale), round(image.height * scale))
            image = image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
        return buffer.getvalue()


def make_sample(flowers: Path) -> None:
    names = []
    for source in sorted(flowers.glob("*/*.jpg")):
        relative = source.relative_to(flowers).as_posix()
        target = SAMPLE_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(downscale(source))
        names.append(relative)
    wanted = set(names)
    credits = [line for line in (flowers / "LICENSE.txt").read_text(encoding="utf-8").splitlines()
               if line.split(" ", 1)[0] in wanted]
    missing = wanted - {line.split(" ", 1)[0] for line in credits}
    if missing:
        raise SystemExit(f"no credit line for {sorted(missing)[:5]}")
    header = LICENSE_HEADER.format(side=SHORT_SIDE, quality=JPEG_QUALITY)
    (SAMPLE_DIR / "LICENSE.txt").write_text(header + "\n".join(credits) + "\n", encoding="utf-8")


def make_weights(source: Path) -> None:
    state_dict = torch.load(source, map_location="cpu", weights_only=True)
    half = {key: value.half() if value.is_floating_point() else value
            for key, value in state_dict.items()}
    WEIGHTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(half, WEIGHTS_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared")
    args = parser.parse_args()
    make_sample(args.shared / "datasets/flowers-mini")
    make_weights(args.shared / "weights/mobilenet_v2-imagenet-folded.pth")


if __name__ == "__main__":
    main()

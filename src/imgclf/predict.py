"""`python -m imgclf predict IMAGE... [--model models/model.pt] [--top-k 5]`

Prints the most likely classes of each image with their probabilities. An image that cannot be
read gets a one-line error and the others are still classified; the exit status is then 1.
A model that cannot be loaded exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from imgclf.errors import ImgclfError
from imgclf.images import decode_image
from imgclf.models import TrainedModel, load_checkpoint
from imgclf.paths import MODEL_PATH


def _positive_int(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imgclf predict",
                                     description="Print the most likely classes of images.")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--model", type=Path, default=MODEL_PATH,
                        help=f"a checkpoint written by the train stage (default: {MODEL_PATH})")
    parser.add_argument("--top-k", type=_positive_int, default=5,
                        help="how many classes to print per image (default: 5)")
    return parser


@torch.inference_mode()
def top_classes(trained: TrainedModel, path: Path, k: int) -> list[tuple[str, float]]:
    """The k most likely (class, probability) pairs for one image file, most likely first."""
    if not path.is_file():
        raise ImgclfError("is a directory" if path.is_dir() else "no such file")
    batch = trained.transform(decode_image(path)).unsqueeze(0)
    probabilities = torch.softmax(trained.model(batch), dim=1)[0]
    top = probabilities.topk(min(k, len(trained.classes)))
    return [(trained.classes[index], value) for value, index in zip(top.values.tolist(),
                                                                   top.indices.tolist())]


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        trained = load_checkpoint(args.model)
    except ImgclfError as error:
        print(f"imgclf predict: error: {error}", file=sys.stderr)
        return 2
    failed = False
    for path in args.images:
        try:
            ranking = top_classes(trained, path, args.top_k)
        except ImgclfError as error:
            print(f"{path}: error: {error}", file=sys.stderr)
            failed = True
            continue
        print(f"{path}:")
        for name, probability in ranking:
            print(f"  {probability:7.2%}  {name}")
    return 1 if failed else 0

"""`python -m imgclf predict IMAGE_OR_DIR... [--out predictions.csv] [--model PATH] [--top-k K]`

Classifies image files, and every file under the folders given (recursively, in name order;
hidden files such as .DS_Store are skipped). Without --out it prints the most likely classes of
each image; with --out it writes one CSV row per file: the path, the top-k classes with their
probabilities, or the reason the file could not be used (not an image, truncated, too many
pixels, ...). Either way a bad file never stops the run.

Images stream through a DataLoader: `--workers` processes decode them while the model runs,
`--batch-size` images at a time, so memory stays bounded whatever the number of files. The model
is a train-stage checkpoint (`models/model.pt`, the default) or its ONNX export
(`models/model.onnx`, run by ONNX Runtime).

Exit status: 0 when every file was classified, 1 when any could not be, 2 when the model or the
arguments cannot be used.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from imgclf.core.errors import ImgclfError
from imgclf.core.files import write_csv
from imgclf.core.images import decode_image
from imgclf.core.paths import MODEL_PATH
from imgclf.serving.loaders import Classifier, load_classifier, top_k
from imgclf.training.transforms import Transform

Outcome = tuple[str, list[tuple[str, float]] | None, str]  # path, ranking or None, error


def positive_int(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imgclf predict",
                                     description="Classify images: print the most likely "
                                                 "classes, or write a CSV with --out.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR")
    parser.add_argument("--out", type=Path,
                        help="write one CSV row per file here instead of printing")
    parser.add_argument("--model", type=Path, default=MODEL_PATH,
                        help=f"a train-stage checkpoint or an .onnx export (default: {MODEL_PATH})")
    parser.add_argument("--top-k", type=positive_int, default=5,
                        help="classes per image (default: 5; at most the number of classes)")
    parser.add_argument("--batch-size", type=positive_int, default=4,
                        help="images per forward pass (default: 4; on CPU, batches of 32 "
                             "were slower per image, see docs/serving.md)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes decoding images; 0 decodes in the main process "
                             "(default: 2)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for the model (default: torch's, all cores)")
    return parser


def expand(inputs: list[Path]) -> Iterator[tuple[str, str]]:
    """(path, error) for every file to classify: each file given, and the files under each
    folder given; an input that does not exist, or an empty folder, comes with its error."""
    for given in inputs:
        if given.is_dir():
            files = sorted(_files_under(given))
            if not files:
                yield str(given), "a folder without files"
            yield from ((str(path), "") for path in files)
        elif given.exists():
            yield str(given), ""
        else:
            yield str(given), "no such file"


def _files_under(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        yield from (Path(root, name) for name in files if not name.startswith("."))


class ImageFiles(Dataset):
    """(index, image tensor or None, error) per path; a bad file is an error, not an exception."""

    def __init__(self, entries: list[tuple[str, str]], transform: Transform) -> None:
        self.entries = entries
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        path, error = self.entries[index]
        if error:
            return index, None, error
        try:
            return index, self.transform(decode_image(Path(path))), ""
        except ImgclfError as problem:
            return index, None, str(problem)
        except MemoryError:
            return index, None, "out of memory while decoding"


def collate(items: list[tuple[int, torch.Tensor | None, str]]
            ) -> tuple[list[int], torch.Tensor | None, dict[int, str]]:
    """One batch: the indices and stacked tensors of the images that decoded, and the errors."""
    good = [(index, tensor) for index, tensor, _ in items if tensor is not None]
    errors = {index: error for index, tensor, error in items if tensor is None}
    batch = torch.stack([tensor for _, tensor in good]) if good else None
    return [index for index, _ in good], batch, errors


def classify(classifier: Classifier, entries: list[tuple[str, str]], k: int, batch_size: int,
             workers: int) -> Iterator[Outcome]:
    """Outcomes in the order of `entries`, computed a batch at a time."""
    transform = classifier.card.preprocessing.eval_transform()
    loader = DataLoader(ImageFiles(entries, transform), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate)
    classes = classifier.card.classes
    for indices, batch, errors in loader:
        rankings = {}
        if batch is not None:
            probabilities = classifier.probabilities(batch)
            rankings = {index: top_k(row, classes, k) for index, row in zip(indices, probabilities)}
        for index in sorted([*rankings, *errors]):
            yield entries[index][0], rankings.get(index), errors.get(index, "")


class Tally:
    """Passes outcomes through and counts the files that could not be classified."""

    def __init__(self, outcomes: Iterable[Outcome]) -> None:
        self.outcomes = outcomes
        self.failures = 0

    def __iter__(self) -> Iterator[Outcome]:
        for outcome in self.outcomes:
            self.failures += outcome[1] is None
            yield outcome


def csv_columns(k: int) -> list[str]:
    ranked = [f"{name}_{rank}" for rank in range(1, k + 1) for name in ("class", "probability")]
    return ["path", *ranked, "error"]


def csv_rows(outcomes: Iterable[Outcome]) -> Iterator[dict[str, str | float]]:
    for path, ranking, error in outcomes:
        row: dict[str, str | float] = {"path": path, "error": error}
        for rank, (name, probability) in enumerate(ranking or [], start=1):
            row[f"class_{rank}"], row[f"probability_{rank}"] = name, round(probability, 6)
        yield row


def print_outcomes(outcomes: Iterable[Outcome]) -> None:
    for path, ranking, error in outcomes:
        if ranking is None:
            print(f"{path}: error: {error}", file=sys.stderr)
            continue
        print(f"{path}:")
        for name, probability in ranking:
            print(f"  {probability:7.2%}  {name}")


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error(f"--workers: an integer >= 0 (got {args.workers})")
    try:
        classifier = load_classifier(args.model, args.threads)
    except ImgclfError as error:
        print(f"imgclf predict: error: {error}", file=sys.stderr)
        return 2
    entries = list(expand(args.inputs))
    k = min(args.top_k, len(classifier.card.classes))
    outcomes = Tally(classify(classifier, entries, k, args.batch_size, args.workers))
    if args.out is None:
        print_outcomes(outcomes)
    else:
        progress = tqdm(outcomes, total=len(entries), unit="image", desc="predict",
                        disable=None)  # None: only on a terminal
        write_csv(args.out, csv_columns(k), csv_rows(progress))
        print(f"predict: {len(entries) - outcomes.failures} of {len(entries)} files classified, "
              f"{outcomes.failures} failed (reasons in the error column); wrote {args.out}",
              file=sys.stderr)
    return 1 if outcomes.failures else 0

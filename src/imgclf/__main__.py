"""Command line: `python -m imgclf <stage>` runs one pipeline stage with params.yaml;
`python -m imgclf predict IMAGE...` prints the most likely classes of images;
`python -m imgclf tune [--trials N ...]` searches train hyperparameters (not a stage)."""

from __future__ import annotations

import argparse
import importlib
import sys

from imgclf.errors import ImgclfError
from imgclf.params import load_params

STAGES = ("scrape", "clean", "label", "train", "evaluate")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("predict", "tune"):  # commands with options of their own
        return importlib.import_module(f"imgclf.{argv[0]}").main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m imgclf", description=__doc__)
    parser.add_argument("command", choices=STAGES + ("predict", "tune"),
                        help="a pipeline stage to run, or predict or tune (see `predict "
                             "--help`, `tune --help`)")
    args = parser.parse_args(argv)
    try:
        params = load_params()
        stage = importlib.import_module(f"imgclf.{args.command}")
        stage.run(params)
    except ImgclfError as error:
        print(f"imgclf {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

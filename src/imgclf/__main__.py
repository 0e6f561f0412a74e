"""Command line: `python -m imgclf <stage>` runs one pipeline stage with params.yaml;
`python -m imgclf predict IMAGE...` prints the most likely classes of images."""

from __future__ import annotations

import argparse
import importlib
import sys

from imgclf.errors import ImgclfError
from imgclf.params import load_params

STAGES = ("scrape", "clean", "label", "train", "evaluate")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "predict":
        from imgclf import predict
        return predict.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m imgclf", description=__doc__)
    parser.add_argument("command", choices=STAGES + ("predict",),
                        help="a pipeline stage to run, or predict (see `predict --help`)")
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

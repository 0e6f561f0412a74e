"""Command line: `python -m imgclf <stage>` runs one pipeline stage with params.yaml;
`python -m imgclf predict IMAGE_OR_DIR...` classifies images (printed, or a CSV with --out);
`python -m imgclf serve` serves the model over HTTP."""

from __future__ import annotations

import argparse
import importlib
import sys

from imgclf.errors import ImgclfError
from imgclf.params import load_params

STAGES = ("scrape", "clean", "label", "train", "evaluate", "export")
TOOLS = ("predict", "serve")  # commands with options of their own


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        return importlib.import_module(f"imgclf.{argv[0]}").main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m imgclf", description=__doc__)
    parser.add_argument("command", choices=STAGES + TOOLS,
                        help="a pipeline stage to run, or predict or serve (see their --help)")
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

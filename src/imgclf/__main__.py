"""Command line: `python -m imgclf <stage>` runs one pipeline stage with params.yaml;
`python -m imgclf predict IMAGE_OR_DIR...` classifies images (printed, or a CSV with --out);
`python -m imgclf serve` serves the model over HTTP;
`python -m imgclf tune [--trials N ...]` searches train hyperparameters (not a stage)."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from imgclf.errors import ImgclfError
from imgclf.params import load_params

STAGES = ("scrape", "clean", "label", "train", "evaluate", "export")
TOOLS = ("predict", "serve")  # commands with options of their own


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        return importlib.import_module(f"imgclf.{argv[0]}").main(argv[1:])
    if argv and argv[0] == "tune":  # options of its own, parsed before params.yaml is read
        from imgclf import tune
        options = tune.parse_arguments(argv[1:])
        return _run("tune", lambda: tune.run(load_params(), options))
    parser = argparse.ArgumentParser(prog="python -m imgclf", description=__doc__)
    parser.add_argument("command", choices=STAGES + TOOLS + ("tune",),
                        help="a pipeline stage to run, or predict, serve or tune (see their "
                             "--help)")
    args = parser.parse_args(argv)
    return _run(args.command,
                lambda: importlib.import_module(f"imgclf.{args.command}").run(load_params()))


def _run(command: str, action: Callable[[], None]) -> int:
    """Run a command; an ImgclfError becomes one line on stderr and exit status 2."""
    try:
        action()
    except ImgclfError as error:
        print(f"imgclf {command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: `python -m imgclf <stage>` runs one pipeline stage with params.yaml;
`python -m imgclf predict IMAGE_OR_DIR...` classifies images (printed, or a CSV with --out);
`python -m imgclf serve` serves the model over HTTP;
`python -m imgclf tune [--trials N ...]` searches train hyperparameters (not a stage).

Each command is a module with `main(argv)`; dvc.yaml runs the stages' modules directly
(`python -m imgclf.stages.train`), so that this file is no stage's dependency."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "scrape": "imgclf.stages.scrape", "clean": "imgclf.stages.clean",
    "label": "imgclf.stages.label", "train": "imgclf.stages.train",
    "evaluate": "imgclf.stages.evaluate", "export": "imgclf.stages.export",
    "predict": "imgclf.serving.predict", "serve": "imgclf.serving.app",
    "tune": "imgclf.tuning.search",
    "review": "imgclf.review.app",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="python -m imgclf", description=__doc__)
        parser.add_argument("command", choices=COMMANDS,
                            help="a pipeline stage to run, or predict, serve or tune (see their "
                                 "--help)")
        parser.parse_args(argv[:1])  # prints the usage and exits with status 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

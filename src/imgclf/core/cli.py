"""How every command starts and fails: one line on stderr and exit status 2 for an ImgclfError
(a setting or an input the pipeline cannot use), a traceback only for a bug."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

from imgclf.core.errors import ImgclfError
from imgclf.core.params import StageParams, load_params

View = TypeVar("View", bound=StageParams)


def run_command(command: str, action: Callable[[], None]) -> int:
    """Run a command; an ImgclfError becomes `imgclf COMMAND: error: ...` and status 2."""
    try:
        action()
    except ImgclfError as error:
        print(f"imgclf {command}: error: {error}", file=sys.stderr)
        return 2
    return 0


def stage_main(stage: str, run: Callable[[View], None], view: type[View],
               argv: list[str] | None, description: str | None) -> int:
    """A stage's command line: no options of its own (its settings are params.yaml's), the
    params it reads validated before it touches any data."""
    argparse.ArgumentParser(prog=f"python -m imgclf {stage}",
                            description=description).parse_args(argv)
    return run_command(stage, lambda: run(load_params(view)))

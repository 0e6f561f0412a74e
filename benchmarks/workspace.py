"""What the benchmarks that run stages share: a scratch workspace whose params.yaml takes the
classes from a folder, and the stages run in it as `python -m imgclf STAGE`."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
DATA_STAGES = ("scrape", "clean", "label")


def add_run_arguments(parser: argparse.ArgumentParser, data: str, epochs: int,
                      image_size: int) -> None:
    """The options of a MobileNetV2 run on a data set in a scratch workspace."""
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / data)
    parser.add_argument("--weights", type=Path,
                        default=SHARED / "weights/mobilenet_v2-imagenet-folded.pth")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the outputs here (default: a temporary folder, removed)")


def add_workspace_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that works in a workspace holding the data stages' outputs."""
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--prepare", type=Path, help="run scrape, clean, label on this folder")
    parser.add_argument("--smoke", action="store_true",
                        help="flowers-mini in a temporary workspace, tiny settings")


def choose_workspace(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     prefix: str) -> None:
    """With --smoke, a temporary workspace prepared from flowers-mini; else --workspace is
    required."""
    if args.smoke:
        args.workspace = Path(tempfile.mkdtemp(prefix=prefix))
        args.prepare = SHARED / "datasets/flowers-mini"
    if args.workspace is None:
        parser.error("--workspace is required (or --smoke)")


@contextlib.contextmanager
def scratch_workspace(workdir: Path | None, prefix: str) -> Iterator[Path]:
    """`--workdir` (kept), or a temporary folder removed at the end."""
    path = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if workdir is None:
            shutil.rmtree(path, ignore_errors=True)


def write_folder_params(workspace: Path, folder: Path | str,
                        template: Path = REPO_ROOT / "params.yaml", **train: Any) -> dict:
    """`template` (the repository's params.yaml) with the folder source on `folder` (class names
    from its sub-folders) and `train` overrides, written to the workspace; returns it.

    Label's automatic rejection is off: it needs the audit's ranking, and most of these
    benchmarks run label without the audit (DATA_STAGES), as their figures in docs/benchmarks.md
    were measured; bench_scale, which runs the audit, then times the same label work."""
    params = yaml.safe_load(template.read_text(encoding="utf-8"))
    params["classes"] = ""
    params["scrape"].update(source="folder", folder=str(Path(folder).resolve()))
    params["audit"]["auto_reject"] = {"off_topic": False, "mislabeled": False}
    params["train"].update(train)
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False),
                                           encoding="utf-8")
    return params


def run_stages(workspace: Path, stages: Iterable[str] = DATA_STAGES) -> dict[str, float]:
    """Run each stage in the workspace; the wall time of each, in seconds."""
    seconds = {}
    for stage in stages:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "imgclf", stage], cwd=workspace, check=True,
                       stdout=subprocess.DEVNULL)
        seconds[stage] = time.perf_counter() - start
    return seconds

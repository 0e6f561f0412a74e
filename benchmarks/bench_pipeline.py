"""The whole pipeline on ../shared/datasets/plants-40: wall time per stage and test accuracy.

Runs `python -m imgclf <stage>` for each stage in a scratch directory (no DVC overhead), with the
folder source and the offline ImageNet MobileNetV2 weights, and prints a table plus the test
metrics. Usage: python benchmarks/bench_pipeline.py [--epochs 5 --image-size 160 --workdir DIR]
`--smoke` runs it on flowers-mini for one epoch at 64 px, to prove that the script still works.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
STAGES = ("scrape", "clean", "label", "train", "evaluate")


def add_run_arguments(parser: argparse.ArgumentParser, data: str, epochs: int,
                      image_size: int) -> None:
    """The options of a run in a scratch directory (also used by bench_tune.py)."""
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / data)
    parser.add_argument("--weights", type=Path,
                        default=SHARED / "weights/mobilenet_v2-imagenet-folded.pth")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the outputs here (default: a temporary folder, removed)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_run_arguments(parser, "plants-40", epochs=5, image_size=160)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: flowers-mini, one epoch at 64 px (figures meaningless)")
    args = parser.parse_args()
    if args.smoke:
        args.data, args.epochs, args.image_size = SHARED / "datasets/flowers-mini", 1, 64
    return args


def write_params(workdir: Path, args: argparse.Namespace) -> dict:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["classes"] = ""
    params["scrape"].update(source="folder", folder=str(args.data.resolve()))
    params["train"].update(arch="mobilenet_v2", pretrained=str(args.weights.resolve()),
                           epochs=args.epochs, image_size=args.image_size,
                           batch_size=args.batch_size, device="auto")
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False),
                                         encoding="utf-8")
    return params


@contextlib.contextmanager
def scratch_directory(workdir: Path | None, prefix: str) -> Iterator[Path]:
    """`--workdir` (kept), or a temporary folder removed at the end."""
    path = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if workdir is None:
            shutil.rmtree(path, ignore_errors=True)


def run_imgclf(workdir: Path, *args: str) -> float:
    """Run `python -m imgclf ARGS` in the scratch directory; return its wall time."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgclf", *args], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    with scratch_directory(args.workdir, "bench-pipeline-") as workdir:
        params = write_params(workdir, args)
        seconds = {stage: run_imgclf(workdir, stage) for stage in STAGES}
        metrics = json.loads((workdir / "metrics/evaluate.json").read_text())
        clean = json.loads((workdir / "metrics/clean.json").read_text())
    print(f"data: {args.data} | cores: {os.cpu_count()} | train: {params['train']}")
    print(f"clean: {json.dumps(clean)}")
    for stage, value in seconds.items():
        print(f"{stage:<9} {value:8.1f} s")
    print(f"{'total':<9} {sum(seconds.values()):8.1f} s")
    print("test:", json.dumps(metrics))


if __name__ == "__main__":
    main()

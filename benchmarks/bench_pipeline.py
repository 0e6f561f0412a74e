"""The whole pipeline on ../shared/datasets/plants-40: wall time per stage and test accuracy.

Runs `python -m imgclf <stage>` for each stage in a scratch directory (no DVC overhead), with the
folder source and the offline ImageNet MobileNetV2 weights, and prints a table plus the test
metrics. Usage: python benchmarks/bench_pipeline.py [--epochs 5 --image-size 160 --workdir DIR]
`--smoke` runs it on flowers-mini for one epoch at 64 px, to prove that the script still works.
"""

from __future__ import annotations

import argparse
import json
import os

from workspace import (
    DATA_STAGES,
    SHARED,
    add_run_arguments,
    run_stages,
    scratch_workspace,
    write_folder_params,
)

STAGES = DATA_STAGES + ("train", "evaluate")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_run_arguments(parser, "plants-40", epochs=5, image_size=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: flowers-mini, one epoch at 64 px (figures meaningless)")
    args = parser.parse_args()
    if args.smoke:
        args.data, args.epochs, args.image_size = SHARED / "datasets/flowers-mini", 1, 64
    return args


def main() -> None:
    args = parse_args()
    with scratch_workspace(args.workdir, "bench-pipeline-") as workdir:
        params = write_folder_params(workdir, args.data, arch="mobilenet_v2",
                                     pretrained=str(args.weights.resolve()), epochs=args.epochs,
                                     image_size=args.image_size, batch_size=args.batch_size,
                                     device="auto")
        seconds = run_stages(workdir, STAGES)
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

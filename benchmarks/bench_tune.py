"""A small tuning study on ../shared/datasets/flowers-mini, then the test accuracy of its best.

In a scratch directory: scrape (folder source), clean and label the data set; run
`python -m imgclf tune` (journal file, MobileNetV2 from ../shared/weights); `--apply` the best
trial's values; train them with `python -m imgclf train`; evaluate once on the test split.
Prints the trials (complete, pruned), the baseline's and the best validation accuracy, the
retrained model's validation accuracy (it must equal the best trial's on CPU) and the test
metrics. Usage: python benchmarks/bench_tune.py [--trials 12 --epochs 5 --image-size 128]
`--smoke`: 2 trials of one epoch at 64 px, to prove that the script still works.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch
from workspace import (
    DATA_STAGES,
    add_run_arguments,
    run_stages,
    scratch_workspace,
    write_folder_params,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_run_arguments(parser, "flowers-mini", epochs=5, image_size=128)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: 2 trials of one epoch at 64 px (figures meaningless)")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.epochs, args.image_size = 2, 1, 64
    return args


def tune(workdir: Path, args: argparse.Namespace) -> float:
    """The study (its best applied to params.yaml); its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgclf", "tune", "--trials", str(args.trials),
                    "--seed", str(args.seed), "--apply"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    with scratch_workspace(args.workdir, "bench-tune-") as workdir:
        params = write_folder_params(workdir, args.data, arch="mobilenet_v2",
                                     pretrained=str(args.weights.resolve()), epochs=args.epochs,
                                     image_size=args.image_size, device="auto")
        run_stages(workdir, DATA_STAGES)
        tune_seconds = tune(workdir, args)
        # The best values, trained by the train stage; the test split touched once.
        seconds = run_stages(workdir, ("train", "evaluate"))
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
            str(workdir / "tune/study.journal")))
        trials = optuna.load_study(study_name="imgclf", storage=storage).trials
        retrained = torch.load(workdir / "models/model.pt", weights_only=True)
        metrics = json.loads((workdir / "metrics/evaluate.json").read_text())
        split = json.loads((workdir / "metrics/split.json").read_text())
    report(args, params, trials, retrained, metrics, split, tune_seconds, seconds["train"])


def report(args: argparse.Namespace, params: dict, trials: list, retrained: dict,
           metrics: dict, split: dict, tune_seconds: float, train_seconds: float) -> None:
    states = [trial.state for trial in trials]
    complete = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda trial: trial.value)
    epochs = sum(len(trial.intermediate_values) for trial in trials)
    print(f"data: {args.data} | cores: {os.cpu_count()} | split: {json.dumps(split)}")
    print(f"train (fixed): arch {params['train']['arch']}, epochs {args.epochs}, image size "
          f"{args.image_size}, patience {params['train']['patience']}; search space: "
          f"{json.dumps(params['tune'])}")
    print(f"trials: {len(trials)} ({states.count(optuna.trial.TrialState.COMPLETE)} complete, "
          f"{states.count(optuna.trial.TrialState.PRUNED)} pruned); epochs trained: {epochs} "
          f"of {len(trials) * args.epochs}; tune wall time {tune_seconds:.0f} s")
    baseline = [trial for trial in trials if all(
        params["train"][key] == value for key, value in trial.user_attrs["train"].items())]
    for trial in baseline[:1]:  # trial 0 when params.yaml's values lie inside the space
        value = "pruned" if trial.value is None or trial.state != optuna.trial.TrialState.COMPLETE \
            else f"{trial.value:.4f}"
        print(f"baseline (trial {trial.number}, params.yaml's values): validation accuracy "
              f"{value}")
    print(f"best: trial {best.number}, validation accuracy {best.value:.4f}, "
          f"values {json.dumps(best.user_attrs['train'])}")
    print(f"retrained best (train, {train_seconds:.0f} s): validation accuracy "
          f"{retrained['val_accuracy']:.4f} (epoch {retrained['epoch']})")
    print("test (once):", json.dumps(metrics))


if __name__ == "__main__":
    main()

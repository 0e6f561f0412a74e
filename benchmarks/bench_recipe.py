"""Which fine-tuning choices pay for themselves: each recipe variant trained on the same split,
compared on VALIDATION accuracy; the test split is read once per `--test` variant, at the end.

The workspace must hold data/clean and data/split (the outputs of scrape, clean and label, e.g.
from `benchmarks/bench_pipeline.py --workdir DIR` or `bench_train.py --prepare`). Variants are
named sets of train.* overrides on top of params.yaml (see VARIANTS); each runs with every
`--seeds` value, so the spread between seeds shows what counts as noise.
Usage: python benchmarks/bench_recipe.py --workspace DIR --weights FILE [--epochs 10]
       [--image-size 160] [--variants baseline recipe ...] [--seeds 1 2] [--test baseline recipe]
`--smoke`: flowers-mini, one epoch at 64 px, to prove the script still works.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
from workspace import (
    SHARED,
    add_workspace_arguments,
    choose_workspace,
    run_stages,
    write_folder_params,
)

# train.* overrides per variant; "baseline" is the recipe before these choices existed.
VARIANTS = {
    "baseline": {"crop_scale": 0.08, "warmup_epochs": 0, "augment_magnitude": 0,
                 "ema_decay": 0.0},
    "crop": {"crop_scale": 0.25, "warmup_epochs": 0, "augment_magnitude": 0, "ema_decay": 0.0},
    "crop+warmup": {"crop_scale": 0.25, "warmup_epochs": 1, "augment_magnitude": 0,
                    "ema_decay": 0.0},
    "crop+warmup+randaug": {"crop_scale": 0.25, "warmup_epochs": 1, "augment_magnitude": 9,
                            "ema_decay": 0.0},
    "crop+warmup+ema": {"crop_scale": 0.25, "warmup_epochs": 1, "augment_magnitude": 0,
                        "ema_decay": 0.99},
    "crop+warmup+sampler": {"crop_scale": 0.25, "warmup_epochs": 1, "augment_magnitude": 0,
                            "ema_decay": 0.0, "balance": "sampler"},
    "crop+warmup+loss": {"crop_scale": 0.25, "warmup_epochs": 1, "augment_magnitude": 0,
                         "ema_decay": 0.0, "balance": "loss"},
    "params.yaml": {},
    "scratch": {"arch": "simple_cnn", "pretrained": False},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workspace_arguments(parser)
    parser.add_argument("--weights", default=str(SHARED / "weights/mobilenet_v2-imagenet-folded.pth"))
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--scratch-epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--test", nargs="*", default=[], choices=list(VARIANTS),
                        help="variants whose best model is also scored on the test split")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.scratch_epochs, args.image_size, args.workers = 1, 1, 64, 0
        args.variants, args.test = ["baseline", "scratch"], ["baseline"]
    choose_workspace(parser, args, "bench-recipe-")
    return args


def main() -> None:
    args = parse_args()
    base = write_folder_params(args.workspace, args.prepare or "data/import", arch=args.arch,
                               pretrained=args.weights, epochs=args.epochs,
                               image_size=args.image_size, batch_size=args.batch_size,
                               workers=args.workers, device="auto", patience=args.epochs)
    if args.prepare:
        run_stages(args.workspace)
    os.chdir(args.workspace)
    # Imported here: the stage code reads its inputs relative to the working directory.
    from imgclf.config.all import AllParams
    from imgclf.core.classes import read_class_list
    from imgclf.core.params import parse_params
    from imgclf.core.paths import SPLIT_CLASSES, SPLIT_FILES
    from imgclf.stages import evaluate
    from imgclf.training import fit
    from imgclf.training.datasets import ImageListDataset, make_loader, read_split
    from imgclf.training.distributed import Processes
    from imgclf.training.loop import unwrap
    from imgclf.training.models import batch_logits, select_device
    from imgclf.training.resume import RESUME_NAME
    from imgclf.training.transforms import Preprocessing

    classes = [spec.name for spec in read_class_list(SPLIT_CLASSES)]
    resume_path = Path("models") / RESUME_NAME  # written after each epoch, unused here
    device = select_device("auto")
    processes = Processes()

    def test_metrics(training: fit.Training, preprocessing: Preprocessing) -> dict:
        model = unwrap(training.model)
        model.load_state_dict(training.best_weights)
        test_set = ImageListDataset(read_split(SPLIT_FILES["test"], classes),
                                    preprocessing.eval_transform())
        loader = make_loader(test_set, 128, workers=args.workers, device=device)
        logits, labels = zip(*batch_logits(model, loader, device))
        probabilities = torch.softmax(torch.cat(logits), dim=1).cpu().numpy()
        return evaluate.summary_metrics(torch.cat(labels).cpu().numpy(), probabilities)

    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name} | cores: {os.cpu_count()} | data: {args.workspace} | "
          f"{len(classes)} classes | {args.image_size} px | batch {args.batch_size}")
    print(f"{'variant':<22} {'seed':>5} {'epochs':>6} {'best val':>9} {'at':>3} {'seconds':>8}"
          f"  test (95% interval)")
    for variant in args.variants:
        for seed in args.seeds:
            raw = copy.deepcopy(base)
            raw["seed"] = seed
            raw["train"].update(VARIANTS[variant])
            if variant == "scratch":
                raw["train"].update(epochs=args.scratch_epochs, patience=args.scratch_epochs)
            params = parse_params(AllParams, raw)
            preprocessing = Preprocessing.for_size(params.train.image_size)
            start = time.perf_counter()
            training = fit.build_training(params, classes, preprocessing, device, processes)
            fit.run_epochs(training, params.train, device, processes, None,
                             f"bench-{variant}-{seed}", resume_path, None)
            seconds = time.perf_counter() - start
            test = ""
            if variant in args.test:
                metrics = test_metrics(training, preprocessing)
                low, high = metrics["accuracy_ci95"]
                test = f"  {metrics['accuracy']:.4f} [{low:.4f}, {high:.4f}] n={metrics['n_test']}"
            print(f"{variant:<22} {seed:>5} {params.train.epochs:>6} "
                  f"{training.best_accuracy:>9.4f} {training.best_epoch:>3} {seconds:>8.1f}{test}",
                  flush=True)


if __name__ == "__main__":
    main()

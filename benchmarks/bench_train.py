"""Training throughput: the real data loader against the ceiling of tensors already on the device.

In one process, for one architecture, image size and batch size, each figure over the same
number of steps after a warm-up:
- ceiling: the training step (forward, backward, AdamW step; bf16 autocast and channels-last on
  CUDA) on random tensors already on the device — no data loading at all;
- loader: the real DataLoader alone (JPEG decode, random crop and flip, collate), no model;
- real: the training step fed by the real loader, i.e. what `train` does.
real / ceiling says how much of the device the input pipeline lets the stage use; loader /
ceiling whether decoding could keep up at all. With `--compile` the model is torch.compiled;
with `--preload` the images are decoded once and cropped on the device (train.preload).

The workspace must hold the outputs of `scrape`, `clean` and `label` (data/clean, data/split), for
example `benchmarks/bench_pipeline.py --workdir DIR`; `--prepare FOLDER` makes them from a
folder of class sub-folders first.
Usage: python benchmarks/bench_train.py --workspace DIR [--prepare FOLDER] [--arch mobilenet_v2]
       [--image-size 224] [--batch-size 64] [--workers 8] [--steps 40] [--compile] [--preload]
`--smoke`: flowers-mini, 64 px, 3 steps, to prove the script still works.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import torch
from workspace import add_workspace_arguments, choose_workspace, run_stages, write_folder_params


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workspace_arguments(parser)
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--weights", default="false",
                        help="train.pretrained: a state-dict path, or false (the default)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--preload", action="store_true",
                        help="train.preload: images decoded once, cropped on the device")
    args = parser.parse_args()
    if args.smoke:
        args.image_size, args.batch_size, args.workers = 64, 8, 0
        args.steps, args.warmup_steps = 3, 1
    choose_workspace(parser, args, "bench-train-")
    return args


def images_per_second(run: callable, batches: int, batch_size: int) -> float:
    start = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    write_folder_params(args.workspace, args.prepare or "data/import", arch=args.arch,
                        pretrained=False if args.weights == "false" else args.weights,
                        image_size=args.image_size, batch_size=args.batch_size,
                        workers=args.workers, device="auto", compile=args.compile,
                        preload=args.preload)
    if args.prepare:
        run_stages(args.workspace)
    os.chdir(args.workspace)
    # Imported here: the stage code reads its inputs relative to the working directory.
    from imgclf.config.all import AllParams
    from imgclf.core.classes import read_class_list
    from imgclf.core.params import load_params
    from imgclf.core.paths import SPLIT_CLASSES
    from imgclf.training.distributed import Processes
    from imgclf.training.fit import build_training
    from imgclf.training.loop import train_one_epoch
    from imgclf.training.models import select_device
    from imgclf.training.transforms import Preprocessing

    params = load_params(AllParams)
    config = params.train
    classes = [spec.name for spec in read_class_list(SPLIT_CLASSES)]
    device = select_device(config.device)
    training = build_training(params, classes, Preprocessing.for_size(config.image_size),
                              device, Processes())
    loader = training.loaders["train"]
    steps = min(args.steps, len(loader) - 1)
    shape = (config.batch_size, 3, config.image_size, config.image_size)
    synthetic = [(torch.randn(shape, device=device),
                  torch.randint(len(classes), (config.batch_size,), device=device))] * steps

    def step_on(batches) -> None:
        train_one_epoch(training.model, training.steps, batches, device, "bench")

    step_on(synthetic[:args.warmup_steps])  # kernels chosen (and compiled) once
    ceiling = images_per_second(lambda: step_on(synthetic), steps, config.batch_size)
    step_on(itertools.islice(loader, args.warmup_steps))  # workers started
    alone = images_per_second(lambda: sum(1 for _ in itertools.islice(loader, steps)), steps,
                              config.batch_size)
    real = images_per_second(lambda: step_on(itertools.islice(loader, steps)), steps,
                             config.batch_size)
    name = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name} | cores: {os.cpu_count()} | arch: {config.arch} | "
          f"{config.image_size} px | batch {config.batch_size} | loader workers "
          f"{config.workers} | compile {config.compile} | preload {config.preload} | "
          f"{steps} steps")
    print(f"ceiling (synthetic on device)  {ceiling:9.1f} images/s")
    print(f"loader alone (decode, augment) {alone:9.1f} images/s  {alone / ceiling:6.2f} x ceiling")
    print(f"real training step             {real:9.1f} images/s  {real / ceiling:6.2f} x ceiling")


if __name__ == "__main__":
    main()

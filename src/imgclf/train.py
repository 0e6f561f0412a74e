"""Train stage: fit a classifier on the train split, select it on the validation split.

- AdamW with a linear warm-up over `train.warmup_epochs`, then a cosine decay to zero at the last
  planned epoch, stepped per batch. Pretrained layers learn at a fraction of the head's rate.
- Cross-entropy with label smoothing. Class imbalance is corrected once, only when asked
  (`train.balance`: an oversampling sampler, or a weighted loss, never both).
- The weights of the epoch with the best validation accuracy (on a tie, the lower validation
  loss; the moving average of the weights with `train.ema_decay`) become models/model.pt;
  training stops after `train.patience` epochs without a better one. The test split is never
  read here.
- Resumable: after every epoch the whole training state (weights, optimizer, schedule, random
  state, best so far, the logged history) goes to .train-resume.pt beside the model
  (models/.train-resume.pt), atomically. A run killed at any point and started again
  (`dvc repro`) goes on from the last finished epoch and ends with the same model and metrics
  as a run never killed (on CPU); the file is removed at the end. It is used only if params,
  train and validation lists and code are unchanged (a fingerprint).
- `train.nproc` > 1 runs the same code under torchrun with DistributedDataParallel (NCCL on
  GPUs, gloo on CPU): each process takes its share of every batch; validation counts are summed
  over all processes; process 0 alone writes the model and the logs.
- dvclive logs per epoch (step = epoch number) to metrics/train/.
- On CUDA: bf16 autocast (fp16 with a gradient scaler where bf16 is missing), channels-last,
  optionally torch.compile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from dvclive import Live
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from imgclf.classes import read_class_list
from imgclf.data import (Augmentation, EpochSampler, ImageListDataset, Preprocessing, Sample,
                         ShardSampler, make_loader, read_split)
from imgclf.errors import StageError
from imgclf.fsutil import atomic_write_bytes
from imgclf.models import (batch_logits, build_model, save_checkpoint, select_device,
                           split_head)
from imgclf.params import Params, TrainParams
from imgclf.paths import MODEL_PATH, SPLIT_CLASSES, SPLIT_FILES, TRAIN_LOG_DIR
from imgclf.preload import PreloadedLoader, preload

RESUME_NAME = ".train-resume.pt"  # the working file, beside the model it will become
# What training reads of data/split (never the test list): a resumed run and a tuning study
# must have seen the very same.
TRAINING_LISTS = (SPLIT_FILES["train"], SPLIT_FILES["val"], SPLIT_CLASSES)
# Called after each epoch with (epoch, validation accuracy); tuning prunes trials through it.
EpochCallback = Callable[[int, float], None]


@dataclasses.dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    images_per_second: float


@dataclasses.dataclass(frozen=True)
class Processes:
    """Where this process stands among the training processes (one, or torchrun's)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes (itself when alone)."""
        if self.world == 1:
            return list(values)
        totals = torch.tensor(values, dtype=torch.float64,
                              device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(totals)
        return totals.tolist()


# ---- One epoch ------------------------------------------------------------------------------


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler,
                    scaler: torch.amp.GradScaler, loader: DataLoader, device: torch.device,
                    description: str, ema: AveragedModel | None = None,
                    processes: Processes = Processes()) -> EpochStats:
    model.train()
    total_loss, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    progress = tqdm(loader, desc=description, unit="batch", leave=False,
                    disable=not processes.main)
    for images, labels in progress:
        images = to_device(images, device)
        labels = labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(unwrap(model))
        # .item() keeps numbers, not autograd graphs, across the epoch (one GPU sync a value).
        batch_loss = loss.item()
        total_loss += batch_loss * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
        progress.set_postfix(loss=f"{batch_loss:.4f}",
                             images_per_s=f"{seen / (time.perf_counter() - start):.1f}")
    seconds = time.perf_counter() - start
    total_loss, correct, seen = processes.sum(total_loss, correct, seen)
    return EpochStats(total_loss / seen, correct / seen, seen / seconds)


def evaluate(model: nn.Module, criterion: nn.Module, loader: DataLoader, device: torch.device,
             processes: Processes = Processes()) -> EpochStats:
    """Loss and accuracy over the whole loader, summed over all processes' shards."""
    total_loss, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    for logits, labels in batch_logits(model, loader, device):
        total_loss += criterion(logits, labels).item() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
    seconds = time.perf_counter() - start
    total_loss, correct, seen = processes.sum(total_loss, correct, seen)
    return EpochStats(total_loss / seen, correct / seen, seen / seconds)


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    # Channels-last lets cuDNN use its fastest convolution kernels on tensor cores.
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" \
        else images


def autocast(device: torch.device) -> torch.autocast:
    """bf16 on GPUs that have it (no loss scaling needed), fp16 on older ones, off on CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() \
        else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and torch.compile wrappers."""
    model = model.module if isinstance(model, DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


# ---- Set-up ---------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, config: TrainParams) -> list[dict]:
    """The new head learns at `lr`; pretrained layers at `lr * backbone_lr_factor`.

    Adam moves every weight by about the learning rate per step, whatever its scale: at the
    head's rate the pretrained filters are overwritten within an epoch (measured on plants-40
    with MobileNetV2 at 1e-3: the loss stayed at chance), at a tenth of it they adapt.
    """
    head, body = split_head(model)
    body_lr = config.lr * (config.backbone_lr_factor if config.pretrained is not False else 1)
    return [group for group in ({"params": head, "lr": config.lr},
                                {"params": body, "lr": body_lr}) if group["params"]]


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of each step: linear from 1/warmup_steps to 1, then a cosine
    down to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def class_weights(samples: list[Sample], num_classes: int) -> torch.Tensor:
    """n / (k * count) per class: every class weighs the same in total."""
    counts = torch.bincount(torch.tensor([s.label for s in samples]), minlength=num_classes)
    return len(samples) / (num_classes * counts.clamp(min=1).double())


@dataclasses.dataclass
class Training:
    """Everything one training run holds; `state_dict` is what a resume restores."""
    model: nn.Module              # as trained: possibly DDP- and compile-wrapped
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    loaders: dict[str, DataLoader | PreloadedLoader]
    sampler: EpochSampler
    epoch: int = 0                # the last finished epoch
    best_epoch: int = 0           # the kept epoch (0: none yet); its figures are in history
    best_weights: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)  # logged per epoch

    @property
    def best_accuracy(self) -> float:
        return self.history[self.best_epoch - 1]["val/accuracy"]

    def improves(self, val_stats: EpochStats) -> bool:
        """A higher validation accuracy than the kept epoch's, or the same one with a lower loss.
        On a small validation set accuracy moves one image at a time and ties are common; taking
        the first epoch of a tie kept under-trained weights and stopped early while the loss
        still fell."""
        if not self.best_epoch:
            return True
        best = self.history[self.best_epoch - 1]
        return (val_stats.accuracy, -val_stats.loss) > (best["val/accuracy"], -best["val/loss"])

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated and kept: the moving average, or the model."""
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"model": unwrap(self.model).state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "best_epoch": self.best_epoch,
                "best_weights": self.best_weights, "history": self.history,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.best_epoch, self.best_weights = state["best_epoch"], state["best_weights"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def build_training(params: Params, classes: list[str], preprocessing: Preprocessing,
                   device: torch.device, processes: Processes) -> Training:
    config = params.train
    train_samples = read_split(SPLIT_FILES["train"], classes)
    val_samples = read_split(SPLIT_FILES["val"], classes)
    augmentation = Augmentation(config.crop_scale, config.flip, config.augment_magnitude)
    weights = class_weights(train_samples, len(classes))
    sampler = EpochSampler(len(train_samples), params.seed, rank=processes.rank,
                           world=processes.world,
                           weights=weights[[s.label for s in train_samples]]
                           if config.balance == "sampler" else None)
    if config.batch_size % processes.world:
        raise StageError(f"train.batch_size: a multiple of train.nproc ({processes.world}), "
                         f"each process takes an equal share (got {config.batch_size})")
    loaders = make_loaders(
        params, {"train": train_samples, "val": val_samples},
        {"train": sampler, "val": ShardSampler(len(val_samples), processes.rank, processes.world)},
        preprocessing, augmentation, config.batch_size // processes.world, device)
    # Every random draw of the model (initial head, dropout) comes from torch's global state.
    torch.manual_seed(params.seed)
    model = build_model(config.arch, len(classes), config.pretrained,
                        freeze_features=config.freeze_features,
                        freeze_batchnorm=config.freeze_batchnorm).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                        use_buffers=True) if config.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(parameter_groups(model, config),
                                  weight_decay=config.weight_decay)
    steps = len(loaders["train"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(min(config.warmup_epochs, config.epochs) * steps,
                                 config.epochs * steps))
    if processes.world > 1:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)
    loss_weights = weights.float().to(device) if config.balance == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=loss_weights, label_smoothing=config.label_smoothing)
    # fp16 needs loss scaling against underflow; bf16 has float32's range and does not.
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda"
                                  and not torch.cuda.is_bf16_supported())
    return Training(model, ema, optimizer, scheduler, scaler, criterion, loaders, sampler)


def make_loaders(params: Params, samples: dict[str, list[Sample]], samplers: dict[str, Any],
                 preprocessing: Preprocessing, augmentation: Augmentation, batch_size: int,
                 device: torch.device) -> dict[str, DataLoader | PreloadedLoader]:
    """The train and val loaders: DataLoader workers decoding with Pillow, or (train.preload)
    every image decoded once up front and cropped on the device."""
    config = params.train
    if config.preload:
        return {name: PreloadedLoader(preload(samples[name], preprocessing, device,
                                              config.workers),
                                      [sample.label for sample in samples[name]],
                                      samplers[name], batch_size, preprocessing,
                                      augmentation if name == "train" else None, params.seed)
                for name in ("train", "val")}
    datasets = {"train": ImageListDataset(samples["train"],
                                          preprocessing.train_transform(augmentation),
                                          seed=params.seed),
                "val": ImageListDataset(samples["val"], preprocessing.eval_transform())}
    return {name: make_loader(datasets[name], batch_size, workers=config.workers, device=device,
                              sampler=samplers[name])
            for name in ("train", "val")}


# ---- Resume ---------------------------------------------------------------------------------


def fingerprint(params: Params) -> str:
    """What a resumed run must share with the killed one: train params, seed, the train and
    validation lists (never the test list), code."""
    digest = hashlib.sha256(json.dumps([params.seed, params.train.model_dump()],
                                       sort_keys=True).encode())
    for path in [*TRAINING_LISTS, *sorted(Path(__file__).parent.glob("*.py"))]:
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()


def save_resume_state(training: Training, key: str, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"fingerprint": key, **training.state_dict()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_resume_state(training: Training, key: str, path: Path) -> bool:
    """Restore a killed run's state; False (and the stale file removed) when there is none that
    fits these params, split and code."""
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        usable = state.get("fingerprint") == key
    except Exception:  # noqa: BLE001 - a damaged working file is simply not used
        usable = False
    if not usable:
        path.unlink()
        return False
    training.load_state_dict(state)
    return True


# ---- The run --------------------------------------------------------------------------------


@contextlib.contextmanager
def distributed(config: TrainParams) -> Iterator[tuple[Processes, torch.device]]:
    """This process's place among torchrun's processes, its device, and the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Processes(), select_device(config.device)
        return
    processes = Processes(int(os.environ["RANK"]), world, int(os.environ["LOCAL_RANK"]))
    device = select_device(config.device)
    if device.type == "cuda":
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield processes, device
        # Every process waits here, the GIL released, for the others. A gloo worker thread
        # frees the last all_reduce's tensors after the call has returned, which takes the GIL;
        # a process group destroyed meanwhile (when DDP's reducer is freed) waits for that
        # thread while holding the GIL: a deadlock, seen in a CPU test run with torch 2.13.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def log_epoch(live: Live | None, epoch: int, values: dict[str, float]) -> None:
    if live is None:
        return
    live.step = epoch  # dvclive counts from 0: make its steps the epoch numbers, as best_epoch
    for name, value in values.items():
        live.log_metric(name, value)
    live.next_step()


def fit(params: Params, on_epoch: EpochCallback | None = None,
        log_dir: Path = TRAIN_LOG_DIR, model_path: Path = MODEL_PATH) -> float:
    """Train with params.train (resuming a killed run), write the model to `model_path`
    (process 0) and return the best validation accuracy. Tuning trials give their own paths."""
    config = params.train
    resume_path = model_path.with_name(RESUME_NAME)
    classes = [spec.name for spec in read_class_list(SPLIT_CLASSES)]
    preprocessing = Preprocessing.for_size(config.image_size)
    with distributed(config) as (processes, device):
        training = build_training(params, classes, preprocessing, device, processes)
        key = fingerprint(params)
        if load_resume_state(training, key, resume_path) and processes.main:
            print(f"resuming after epoch {training.epoch} ({resume_path})")
        live = Live(dir=str(log_dir), dvcyaml=None, save_dvc_exp=False, report=None) \
            if processes.main else None
        with live if live is not None else contextlib.nullcontext():
            for epoch, values in enumerate(training.history, start=1):
                log_epoch(live, epoch, values)  # the killed run's epochs, as it logged them
            run_epochs(training, config, device, processes, live, key, resume_path, on_epoch)
            if live is not None:
                live.log_metric("best_epoch", training.best_epoch, plot=False)
                live.log_metric("best_val_accuracy", training.best_accuracy, plot=False)
        if processes.main:
            save_checkpoint(model_path, training.best_weights, arch=config.arch,
                            classes=classes, preprocessing=preprocessing,
                            epoch=training.best_epoch, val_accuracy=training.best_accuracy,
                            train_params={**config.model_dump(), "seed": params.seed})
            resume_path.unlink(missing_ok=True)
            print(f"best epoch {training.best_epoch}: validation accuracy "
                  f"{training.best_accuracy:.4f} -> {model_path}")
    return training.best_accuracy


def run_epochs(training: Training, config: TrainParams, device: torch.device,
               processes: Processes, live: Live | None, key: str, resume_path: Path,
               on_epoch: EpochCallback | None) -> None:
    for epoch in range(training.epoch + 1, config.epochs + 1):
        if epoch - training.best_epoch > config.patience:
            if processes.main:
                print(f"early stop: no better validation accuracy for {config.patience} epochs")
            return
        training.sampler.set_epoch(epoch)
        lr = training.scheduler.get_last_lr()[0]
        train_stats = train_one_epoch(training.model, training.criterion, training.optimizer,
                                      training.scheduler, training.scaler,
                                      training.loaders["train"], device,
                                      f"epoch {epoch}/{config.epochs}", training.ema, processes)
        val_stats = evaluate(training.evaluated, training.criterion, training.loaders["val"],
                             device, processes)
        values = {"train/loss": train_stats.loss, "train/accuracy": train_stats.accuracy,
                  "val/loss": val_stats.loss, "val/accuracy": val_stats.accuracy, "lr": lr,
                  "images_per_second": train_stats.images_per_second}
        training.history.append(values)
        training.epoch = epoch
        log_epoch(live, epoch, values)
        if processes.main:
            print(f"epoch {epoch}: train loss {train_stats.loss:.4f} accuracy "
                  f"{train_stats.accuracy:.4f} | val loss {val_stats.loss:.4f} accuracy "
                  f"{val_stats.accuracy:.4f} | {train_stats.images_per_second:.1f} images/s")
        if training.improves(val_stats):
            training.best_epoch = epoch
            training.best_weights = {name: value.detach().cpu().clone() for name, value
                                     in training.evaluated.state_dict().items()}
        if processes.main:
            save_resume_state(training, key, resume_path)
        if on_epoch is not None:
            on_epoch(epoch, val_stats.accuracy)


def run(params: Params) -> None:
    """The stage: in this process, or in `train.nproc` processes under torchrun."""
    nproc = params.train.nproc
    if nproc == 1 or "WORLD_SIZE" in os.environ:
        fit(params)
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "imgclf", "train"]
    if subprocess.run(command).returncode != 0:
        raise StageError(f"training under torchrun with train.nproc={nproc} failed (see the "
                         "output of its processes above)")

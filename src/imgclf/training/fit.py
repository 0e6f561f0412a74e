"""Fitting a classifier on the train split, selecting it on the validation split.

- AdamW with a linear warm-up over `train.warmup_epochs`, then a cosine decay to zero at the last
  planned epoch, stepped per batch. Pretrained layers learn at a fraction of the head's rate.
- Cross-entropy with label smoothing. Class imbalance is corrected once, only when asked
  (`train.balance`: an oversampling sampler, or a weighted loss, never both).
- The weights of the epoch with the best validation accuracy (on a tie, the lower validation
  loss; the moving average of the weights with `train.ema_decay`) are kept; training stops
  after `train.patience` epochs without a better one. The test split is never read here.
- Resumable after every epoch (imgclf.training.resume); on several processes under torchrun
  (imgclf.training.distributed).
- dvclive logs per epoch (step = epoch number).
- On CUDA: bf16 autocast (fp16 with a gradient scaler where bf16 is missing), channels-last,
  optionally torch.compile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import torch
from dvclive import Live
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from imgclf.config.train import TrainParams, TrainStageParams
from imgclf.core.classes import read_class_list
from imgclf.core.errors import StageError
from imgclf.core.paths import MODEL_PATH, SPLIT_CLASSES, SPLIT_FILES, TRAIN_LOG_DIR
from imgclf.modelcard import CARD_FORMAT, ModelCard
from imgclf.training.checkpoint import save_checkpoint
from imgclf.training.datasets import ImageListDataset, Sample, make_loader, read_split
from imgclf.training.distributed import Processes, distributed
from imgclf.training.loop import EpochStats, Optimisation, evaluate, train_one_epoch, unwrap
from imgclf.training.models import build_model, split_head
from imgclf.training.preload import PreloadedLoader, preload
from imgclf.training.resume import (
    RESUME_NAME,
    fingerprint,
    load_state,
    save_state,
    train_dependencies,
)
from imgclf.training.samplers import EpochSampler, ShardSampler
from imgclf.training.transforms import Augmentation, Preprocessing

# What training reads of data/split (never the test list): a resumed run and a tuning study
# must have seen the very same.
TRAINING_LISTS = (SPLIT_FILES["train"], SPLIT_FILES["val"], SPLIT_CLASSES)
# Called after each epoch with (epoch, validation accuracy); tuning prunes trials through it.
EpochCallback = Callable[[int, float], None]


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
    steps: Optimisation
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
        ema = self.steps.ema
        return ema.module if ema is not None else unwrap(self.model)

    def state_dict(self) -> dict[str, Any]:
        steps = self.steps
        return {"model": unwrap(self.model).state_dict(),
                "ema": steps.ema.state_dict() if steps.ema is not None else None,
                "optimizer": steps.optimizer.state_dict(),
                "scheduler": steps.scheduler.state_dict(), "scaler": steps.scaler.state_dict(),
                "epoch": self.epoch, "best_epoch": self.best_epoch,
                "best_weights": self.best_weights, "history": self.history,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        steps = self.steps
        unwrap(self.model).load_state_dict(state["model"])
        if steps.ema is not None:
            steps.ema.load_state_dict(state["ema"])
        steps.optimizer.load_state_dict(state["optimizer"])
        steps.scheduler.load_state_dict(state["scheduler"])
        steps.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.best_epoch, self.best_weights = state["best_epoch"], state["best_weights"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def build_training(params: TrainStageParams, classes: list[str], preprocessing: Preprocessing,
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
    return Training(model, Optimisation(criterion, optimizer, scheduler, scaler, ema), loaders,
                    sampler)


def make_loaders(params: TrainStageParams, samples: dict[str, list[Sample]], samplers: dict[str, Any],
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


def log_epoch(live: Live | None, epoch: int, values: dict[str, float]) -> None:
    if live is None:
        return
    live.step = epoch  # dvclive counts from 0: make its steps the epoch numbers, as best_epoch
    for name, value in values.items():
        live.log_metric(name, value)
    live.next_step()


def fit(params: TrainStageParams, on_epoch: EpochCallback | None = None,
        log_dir: Path = TRAIN_LOG_DIR, model_path: Path = MODEL_PATH) -> float:
    """Train with params.train (resuming a killed run), write the model to `model_path`
    (process 0) and return the best validation accuracy. Tuning trials give their own paths."""
    config = params.train
    resume_path = model_path.with_name(RESUME_NAME)
    classes = [spec.name for spec in read_class_list(SPLIT_CLASSES)]
    preprocessing = Preprocessing.for_size(config.image_size)
    with distributed(config.device) as (processes, device):
        training = build_training(params, classes, preprocessing, device, processes)
        key = fingerprint(params.seed, config.model_dump(),
                          [*train_dependencies(), *TRAINING_LISTS])
        if load_state(training, key, resume_path) and processes.main:
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
            card = ModelCard(format_version=CARD_FORMAT, arch=config.arch, classes=classes,
                             preprocessing=preprocessing, epoch=training.best_epoch,
                             val_accuracy=training.best_accuracy,
                             train_params={**config.model_dump(), "seed": params.seed})
            save_checkpoint(model_path, training.best_weights, card)
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
        lr = training.steps.scheduler.get_last_lr()[0]
        train_stats = train_one_epoch(training.model, training.steps, training.loaders["train"],
                                      device, f"epoch {epoch}/{config.epochs}", processes)
        val_stats = evaluate(training.evaluated, training.steps.criterion, training.loaders["val"],
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
            save_state(training, key, resume_path)
        if on_epoch is not None:
            on_epoch(epoch, val_stats.accuracy)

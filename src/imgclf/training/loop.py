"""One epoch of training, and one pass of evaluation, as in torchvision's classification
references: short loops over a loader, with a meter of loss, accuracy and images per second."""

from __future__ import annotations

import dataclasses
import time
from typing import Iterable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from imgclf.training.distributed import Processes
from imgclf.training.models import batch_logits


@dataclasses.dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    images_per_second: float


@dataclasses.dataclass
class Optimisation:
    """What one training step uses besides the model and the batch."""
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None  # the moving average of the weights, updated after each step


class Meter:
    """Loss, accuracy and speed over an epoch; totals summed over all processes at the end."""

    def __init__(self) -> None:
        self.loss, self.correct, self.seen = 0.0, 0, 0
        self.start = time.perf_counter()

    def update(self, loss: float, logits: torch.Tensor, labels: torch.Tensor) -> None:
        # .item() keeps numbers, not autograd graphs, across the epoch (one GPU sync a value).
        self.loss += loss * len(labels)
        self.correct += (logits.argmax(dim=1) == labels).sum().item()
        self.seen += len(labels)

    @property
    def images_per_second(self) -> float:
        return self.seen / (time.perf_counter() - self.start)

    def stats(self, processes: Processes) -> EpochStats:
        speed = self.images_per_second
        loss, correct, seen = processes.sum(self.loss, self.correct, self.seen)
        return EpochStats(loss / seen, correct / seen, speed)


def train_one_epoch(model: nn.Module, steps: Optimisation, loader: Iterable,
                    device: torch.device, description: str,
                    processes: Processes = Processes()) -> EpochStats:
    model.train()
    meter = Meter()
    progress = tqdm(loader, desc=description, unit="batch", leave=False,
                    disable=not processes.main)
    for images, labels in progress:
        images, labels = to_device(images, device), labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
            loss = steps.criterion(logits, labels)
        steps.optimizer.zero_grad(set_to_none=True)
        steps.scaler.scale(loss).backward()
        steps.scaler.step(steps.optimizer)
        steps.scaler.update()
        steps.scheduler.step()
        if steps.ema is not None:
            steps.ema.update_parameters(unwrap(model))
        meter.update(loss.item(), logits, labels)
        progress.set_postfix(loss=f"{loss.item():.4f}",
                             images_per_s=f"{meter.images_per_second:.1f}")
    return meter.stats(processes)


def evaluate(model: nn.Module, criterion: nn.Module, loader: Iterable, device: torch.device,
             processes: Processes = Processes()) -> EpochStats:
    """Loss and accuracy over the whole loader, summed over all processes' shards."""
    meter = Meter()
    for logits, labels in batch_logits(model, loader, device):
        meter.update(criterion(logits, labels).item(), logits, labels)
    return meter.stats(processes)


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

"""Train stage: fit a classifier on the train split, select it on the validation split.

- AdamW with a cosine learning-rate decay over `train.epochs`: AdamW is forgiving of the
  learning rate for both fine-tuning and training from scratch, and the cosine needs no other
  setting (the lr just reaches zero at the last planned epoch).
- Cross-entropy with label smoothing. Classes are NOT re-weighted or over-sampled: the loss and
  the sampler see the data as it is (the originals corrected imbalance twice); evaluate reports
  macro F1 and per-class recall, which show whether a small class suffers.
- The checkpoint of the epoch with the best validation accuracy (the first one on a tie) is
  written to models/model.pt; training stops after `train.patience` epochs without a better one.
  The test split is never read here.
- dvclive logs per epoch (step = epoch number) to metrics/train/.
- On CPU the same inputs and params give the same metrics; on CUDA it uses mixed precision.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from dvclive import Live
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from imgclf.classes import read_class_list
from imgclf.data import ImageListDataset, Preprocessing, make_loader, read_split
from imgclf.models import (batch_logits, build_model, save_checkpoint, select_device,
                           split_head)
from imgclf.params import Params, TrainParams
from imgclf.paths import MODEL_PATH, SPLIT_CLASSES, SPLIT_FILES, TRAIN_LOG_DIR


@dataclasses.dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    images_per_second: float


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, loader: DataLoader, device: torch.device,
                    description: str) -> EpochStats:
    model.train()
    total_loss, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    progress = tqdm(loader, desc=description, unit="batch", leave=False)
    for images, labels in progress:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=scaler.is_enabled()):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # .item() keeps numbers, not autograd graphs, across the epoch (one GPU sync a value).
        batch_loss = loss.item()
        total_loss += batch_loss * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
        speed = seen / (time.perf_counter() - start)
        progress.set_postfix(loss=f"{batch_loss:.4f}", images_per_s=f"{speed:.1f}")
    return EpochStats(total_loss / seen, correct / seen, seen / (time.perf_counter() - start))


def evaluate(model: nn.Module, criterion: nn.Module, loader: DataLoader,
             device: torch.device) -> EpochStats:
    total_loss, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    for logits, labels in batch_logits(model, loader, device):
        total_loss += criterion(logits, labels).item() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
    return EpochStats(total_loss / seen, correct / seen, seen / (time.perf_counter() - start))


def _log_epoch(live: Live, epoch: int, train: EpochStats, val: EpochStats, lr: float) -> None:
    live.step = epoch  # dvclive counts from 0: make its steps the epoch numbers, as best_epoch
    for name, value in (("train/loss", train.loss), ("train/accuracy", train.accuracy),
                        ("val/loss", val.loss), ("val/accuracy", val.accuracy), ("lr", lr),
                        ("images_per_second", train.images_per_second)):
        live.log_metric(name, value)
    print(f"epoch {epoch}: train loss {train.loss:.4f} accuracy {train.accuracy:.4f} | "
          f"val loss {val.loss:.4f} accuracy {val.accuracy:.4f} | "
          f"{train.images_per_second:.1f} images/s")
    live.next_step()


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


def run(params: Params) -> None:
    config = params.train
    classes = [spec.name for spec in read_class_list(SPLIT_CLASSES)]
    preprocessing = Preprocessing.for_size(config.image_size)
    train_set = ImageListDataset(read_split(SPLIT_FILES["train"], classes),
                                 preprocessing.train_transform())
    val_set = ImageListDataset(read_split(SPLIT_FILES["val"], classes),
                               preprocessing.eval_transform())
    device = select_device(config.device)
    # Every random draw (initial head, shuffling, augmentation, dropout) comes from torch.
    torch.manual_seed(params.seed)
    model = build_model(config.arch, len(classes), config.pretrained,
                        freeze_features=config.freeze_features,
                        freeze_batchnorm=config.freeze_batchnorm).to(device)
    loaders = {name: make_loader(dataset, config.batch_size, shuffle=name == "train",
                                 workers=config.workers, seed=params.seed, device=device)
               for name, dataset in (("train", train_set), ("val", val_set))}
    optimizer = torch.optim.AdamW(parameter_groups(model, config),
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")

    best_accuracy, best_epoch = -1.0, 0
    with Live(dir=str(TRAIN_LOG_DIR), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for epoch in range(1, config.epochs + 1):
            lr = scheduler.get_last_lr()[0]
            train_stats = train_one_epoch(model, criterion, optimizer, scaler, loaders["train"],
                                          device, f"epoch {epoch}/{config.epochs}")
            val_stats = evaluate(model, criterion, loaders["val"], device)
            _log_epoch(live, epoch, train_stats, val_stats, lr)
            if val_stats.accuracy > best_accuracy:
                best_accuracy, best_epoch = val_stats.accuracy, epoch
                save_checkpoint(MODEL_PATH, model, arch=config.arch, classes=classes,
                                preprocessing=preprocessing, epoch=epoch,
                                val_accuracy=best_accuracy,
                                train_params={**config.model_dump(), "seed": params.seed})
            elif epoch - best_epoch >= config.patience:
                print(f"early stop: no better validation accuracy for {config.patience} epochs")
                break
            scheduler.step()
        live.log_metric("best_epoch", best_epoch, plot=False)
        live.log_metric("best_val_accuracy", best_accuracy, plot=False)
    print(f"best epoch {best_epoch}: validation accuracy {best_accuracy:.4f} -> {MODEL_PATH}")

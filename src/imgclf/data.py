"""Split lists as PyTorch datasets, the image transforms and the DataLoader factory.

Every architecture, the from-scratch CNN included, sees ImageNet-normalized inputs: one
preprocessing for all, recorded in the checkpoint so that evaluate and predict repeat it exactly.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from imgclf.errors import StageError
from imgclf.fsutil import read_csv
from imgclf.images import ImageError, decode_image
from imgclf.paths import SPLIT_COLUMNS
from imgclf.torchvision_compat import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Input sizes a saved preprocessing may ask for: 2048 px is far above any classifier's input,
# and a 3 x 2048 x 2048 float tensor (48 MiB) still fits a batch in memory.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 2048

Transform = Callable[[object], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How images become model inputs; saved in the checkpoint for evaluate and predict."""
    image_size: int
    resize_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def for_size(cls, image_size: int) -> "Preprocessing":
        # The short side before the centre crop keeps ImageNet's ratio (256 for 224).
        return cls(image_size=image_size, resize_size=round(image_size / 0.875))

    def train_transform(self) -> Transform:
        # Mild colour jitter only: colour is a real cue for flowers and gemstones.
        return transforms.Compose([
            transforms.RandomResizedCrop(self.image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            transforms.ToTensor(),
            transforms.Normalize(self.mean, self.std),
        ])

    def eval_transform(self) -> Transform:
        """Deterministic: no augmentation."""
        return transforms.Compose([
            transforms.Resize(self.resize_size),
            transforms.CenterCrop(self.image_size),
            transforms.ToTensor(),
            transforms.Normalize(self.mean, self.std),
        ])

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "resize_size": self.resize_size,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any) -> "Preprocessing":
        """Read what to_dict wrote. It comes from a file (a checkpoint, ONNX metadata), so an
        unusable value raises ValueError saying what is allowed: a huge image_size would
        exhaust memory on the first image, a zero std would divide by zero."""
        try:
            sizes = int(data["image_size"]), int(data["resize_size"])
            exact = sizes == (data["image_size"], data["resize_size"])
            mean, std = tuple(map(float, data["mean"])), tuple(map(float, data["std"]))
        except (KeyError, TypeError, ValueError):
            exact = False
        if not exact or not (MIN_IMAGE_SIZE <= sizes[0] <= sizes[1] <= MAX_IMAGE_SIZE) \
                or len(mean) != 3 or len(std) != 3 \
                or not all(math.isfinite(value) for value in mean + std) \
                or not all(value > 0 for value in std):
            raise ValueError(f"image_size and resize_size (integers, {MIN_IMAGE_SIZE} <= "
                             f"image_size <= resize_size <= {MAX_IMAGE_SIZE}), mean and std "
                             "(3 finite numbers each, std > 0)")
        return cls(image_size=sizes[0], resize_size=sizes[1], mean=mean, std=std)


def read_split(path: Path, class_names: list[str]) -> list[Sample]:
    """Read a split CSV (path,label,class,group); each label must name the same class as
    `class_names` (the class list, or a model's classes), so a stale list fails here."""
    if not path.is_file():
        raise StageError(f"{path} not found: run `dvc repro label` (or `dvc pull`) first")
    rows = read_csv(path)
    if rows and not set(SPLIT_COLUMNS) <= set(rows[0]):
        raise StageError(f"{path}: needs columns {', '.join(SPLIT_COLUMNS)}; "
                         f"found {', '.join(rows[0])}")
    samples = [_sample(row, path, line, class_names) for line, row in enumerate(rows, start=2)]
    if not samples:
        raise StageError(f"{path}: no images")
    return samples


def _sample(row: dict[str, str], path: Path, line: int, class_names: list[str]) -> Sample:
    try:
        label = int(row["label"])
    except ValueError:
        raise StageError(f"{path}:{line}: label {row['label']!r} is not an integer") from None
    if not 0 <= label < len(class_names) or class_names[label] != row["class"]:
        raise StageError(f"{path}:{line}: label {label} ({row['class']!r}) does not match the "
                         f"{len(class_names)} classes {class_names[:5]}...; the split and the "
                         "class list (or model) come from different runs: run `dvc repro`")
    return Sample(Path(row["path"]), label)


class ImageListDataset(Dataset):
    """(image tensor, label) pairs for a list of samples."""

    def __init__(self, samples: list[Sample], transform: Transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        try:
            image = decode_image(sample.path)
        except ImageError as error:
            raise ImageError(f"{sample.path}: {error}") from None
        return self.transform(image), sample.label


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, workers: int, seed: int,
                device: torch.device) -> DataLoader:
    """A DataLoader whose shuffling and augmentation depend only on `seed`: the generator seeds
    the order and, through torch's per-worker seeds, the workers' random transforms."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,  # no respawn of worker processes every epoch
    )

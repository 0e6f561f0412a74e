"""Split lists as PyTorch datasets, the image transforms and the DataLoader factory.

Every architecture, the from-scratch CNN included, sees ImageNet-normalized inputs: one
preprocessing for all, recorded in the checkpoint so that evaluate and predict repeat it exactly.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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
class Augmentation:
    """Training-time randomness (train.crop_scale, train.flip, train.augment_magnitude)."""
    crop_scale: float  # the random crop covers this fraction of the picture or more
    flip: bool         # mirror left-right half of the time
    magnitude: int     # RandAugment strength, 0..30; 0 = none


class MildRandAugment(transforms.RandAugment):
    """RandAugment (two random operations per image) without the operations that change
    colours: colour is a real cue for flowers, plants and gemstones, so it keeps geometry,
    brightness, contrast and sharpness and leaves out Color, Posterize, Solarize, AutoContrast
    and Equalize."""

    KEPT = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
            "Contrast", "Sharpness")

    def _augmentation_space(self, num_bins: int, image_size: tuple[int, int]) -> dict:
        space = super()._augmentation_space(num_bins, image_size)
        return {name: space[name] for name in self.KEPT}


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

    def train_transform(self, augmentation: Augmentation) -> Transform:
        steps: list[Transform] = [
            transforms.RandomResizedCrop(self.image_size, scale=(augmentation.crop_scale, 1.0))]
        if augmentation.flip:
            steps.append(transforms.RandomHorizontalFlip())
        if augmentation.magnitude > 0:
            steps.append(MildRandAugment(magnitude=augmentation.magnitude))
        return transforms.Compose(steps + [transforms.ToTensor(),
                                           transforms.Normalize(self.mean, self.std)])

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


def sample_seed(*parts: int) -> int:
    """A well-mixed 64-bit seed from integers (seed, epoch, index, ...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


class ImageListDataset(Dataset):
    """(image tensor, label) pairs for a list of samples.

    Indexed by a plain index (evaluation) or by (epoch, index) from an EpochSampler (training):
    then the sample's random augmentation is drawn from a generator seeded by (seed, epoch,
    index), so it does not depend on which process or worker loads it, nor on whether training
    was resumed — the global random state is left as it was.
    """

    def __init__(self, samples: list[Sample], transform: Transform, seed: int = 0) -> None:
        self.samples = samples
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            epoch, index = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, index))
                return self._load(index)
        return self._load(key)

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        try:
            image = decode_image(sample.path)
        except ImageError as error:
            raise ImageError(f"{sample.path}: {error}") from None
        return self.transform(image), sample.label


class EpochSampler(Sampler):
    """The training order of one epoch as a pure function of (seed, epoch), sharded across
    `world` processes.

    The order is a permutation, or, given per-sample weights, a weighted draw with replacement
    (class balancing). Process `rank` takes every world-th entry of the first
    n - n % world: no sample twice in one epoch, and every process the same number of steps
    (DistributedDataParallel needs that). Per step the processes together see what one process
    would see with the whole batch. Yields (epoch, index) for ImageListDataset.
    """

    def __init__(self, size: int, seed: int, *, weights: torch.Tensor | None = None,
                 rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.weights = size, seed, weights
        self.rank, self.world = rank, world
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch))
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True,
                                      generator=generator)
        usable = self.size - self.size % self.world
        return ((self.epoch, index) for index in order[self.rank:usable:self.world].tolist())


class ShardSampler(Sampler):
    """Evaluation: process `rank` takes indices rank, rank + world, ...; each sample once."""

    def __init__(self, size: int, rank: int = 0, world: int = 1) -> None:
        self.indices = range(rank, size, world)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def make_loader(dataset: Dataset, batch_size: int, *, workers: int, device: torch.device,
                sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader over `sampler` (default: the dataset in order)."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,  # no respawn of worker processes every epoch
    )

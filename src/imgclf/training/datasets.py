"""Split lists as PyTorch datasets, and the DataLoader factory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from imgclf.core.errors import StageError
from imgclf.core.files import read_csv
from imgclf.core.images import ImageError, decode_image
from imgclf.core.paths import SPLIT_COLUMNS
from imgclf.training.transforms import Transform


@dataclasses.dataclass(frozen=True)
class Sample:
    path: Path
    label: int


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


def make_loader(dataset: Dataset, batch_size: int, *, workers: int, device: torch.device,
                sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader over `sampler` (default: the dataset in order)."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,  # no respawn of worker processes every epoch
    )

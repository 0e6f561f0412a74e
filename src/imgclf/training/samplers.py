"""Which samples each training process takes, in which order: a pure function of the seed and
the epoch, so that a resumed run and a run on several processes see what one run would."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from imgclf.training.datasets import sample_seed


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

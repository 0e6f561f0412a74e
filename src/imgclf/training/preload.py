"""Images decoded once and kept on the device; crops and flips made there (`train.preload`).

With a fast GPU, decoding JPEGs and cropping them with Pillow in DataLoader workers cannot keep
up: on an H100 with 16 cores the real loader fed MobileNetV2 at about half the speed of tensors
already on the device (docs/benchmarks.md). Here every image of a split is decoded once, shrunk
so that its shorter side is the evaluation resize (`Preprocessing.resize_size`) and centre-cropped
to that square, and the split is kept as one uint8 tensor on the device. Batches are then cut
from it: for training, a random resized crop and a flip per image, done for the whole batch by
one `grid_sample`; for evaluation, the centre crop, which gives the very pixels of
`Preprocessing.eval_transform` (tests/test_preload.py). Memory: 3 x resize_size^2 bytes an image
(about 0.2 MB at 256).

A training crop is drawn from the centre square only, a small loss for pictures far from square.
As with the Pillow path, each image's crop and flip depend only on (seed, epoch, index).
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from imgclf.core.images import ImageError, decode_image
from imgclf.training.datasets import Sample, sample_seed
from imgclf.training.transforms import Augmentation, Preprocessing

CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop
LOG_RATIOS = (math.log(3 / 4), math.log(4 / 3))


def square(sample: Sample, preprocessing: Preprocessing) -> np.ndarray:
    """The picture resized as `eval_transform` resizes it and cut to a resize_size square placed
    so that its centre crop is `eval_transform`'s crop, as uint8 CHW."""
    try:
        image = decode_image(sample.path)
    except ImageError as error:
        raise ImageError(f"{sample.path}: {error}") from None
    side, size = preprocessing.resize_size, preprocessing.image_size
    width, height = image.size
    if width <= height:  # torchvision's Resize(int): the short side exact, the long truncated
        width, height = side, int(side * height / width)
    else:
        width, height = int(side * width / height), side
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    # Start the square as far before eval_transform's crop as the square's own centre crop
    # starts inside it, so that the two crops are the same pixels.
    left = centre_offset(width, size) - centre_offset(side, size)
    top = centre_offset(height, size) - centre_offset(side, size)
    pixels = np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.uint8)
    return pixels.transpose(2, 0, 1).copy()


def centre_offset(length: int, size: int) -> int:
    """Where torchvision's CenterCrop starts a `size` crop of `length` pixels."""
    return int(round((length - size) / 2))


def preload(samples: list[Sample], preprocessing: Preprocessing, device: torch.device,
            workers: int) -> torch.Tensor:
    """All samples as one (N, 3, resize_size, resize_size) uint8 tensor on `device`."""
    settings = [preprocessing] * len(samples)
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            squares = list(pool.map(square, samples, settings, chunksize=32))
    else:
        squares = list(map(square, samples, settings))
    return torch.from_numpy(np.stack(squares)).to(device)


def crop_and_flip(seed: int, epoch: int, index: int, crop_scale: float,
                  flip: bool) -> tuple[float, float, float, float]:
    """A random resized crop (width, height, centre x, centre y, as fractions of the square in
    grid_sample's -1..1 coordinates) with the flip folded into the width's sign."""
    draws = torch.rand(2 * CROP_ATTEMPTS + 3,
                       generator=torch.Generator().manual_seed(sample_seed(seed, epoch, index)))
    u = draws.tolist()
    width = height = 1.0  # the whole square when no attempt fits, as torchvision falls back
    for attempt in range(CROP_ATTEMPTS):
        area = crop_scale + (1 - crop_scale) * u[2 * attempt]
        ratio = math.exp(LOG_RATIOS[0] + (LOG_RATIOS[1] - LOG_RATIOS[0]) * u[2 * attempt + 1])
        w, h = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if w <= 1 and h <= 1:
            width, height = w, h
            break
    x = (1 - width) * (2 * u[-3] - 1)   # the centre may move as far as the crop stays inside
    y = (1 - height) * (2 * u[-2] - 1)
    sign = -1.0 if flip and u[-1] < 0.5 else 1.0
    return sign * width, height, x, y


class PreloadedLoader:
    """Batches of (normalized images, labels) on the device, in the order of `sampler`
    (an EpochSampler for training, with `augmentation`; plain indices for evaluation)."""

    def __init__(self, images: torch.Tensor, labels: list[int], sampler, batch_size: int,
                 preprocessing: Preprocessing, augmentation: Augmentation | None = None,
                 seed: int = 0) -> None:
        self.images, self.sampler, self.batch_size = images, sampler, batch_size
        self.labels = torch.tensor(labels, device=images.device)
        self.preprocessing, self.augmentation, self.seed = preprocessing, augmentation, seed
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(preprocessing.mean, device=images.device).view(shape) * 255
        self.std = torch.tensor(preprocessing.std, device=images.device).view(shape) * 255

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        entries = list(self.sampler)
        for start in range(0, len(entries), self.batch_size):
            chunk = entries[start:start + self.batch_size]
            indices = [entry[1] if isinstance(entry, tuple) else entry for entry in chunk]
            batch = self.images[torch.tensor(indices, device=self.images.device)]
            batch = self._crop(batch, chunk) if self.augmentation else self._centre(batch)
            yield (batch - self.mean) / self.std, self.labels[indices]

    def _centre(self, batch: torch.Tensor) -> torch.Tensor:
        size = self.preprocessing.image_size
        top = centre_offset(batch.shape[-1], size)
        return batch[..., top:top + size, top:top + size].float()

    def _crop(self, batch: torch.Tensor, chunk: list[tuple[int, int]]) -> torch.Tensor:
        augmentation = self.augmentation
        boxes = torch.tensor([crop_and_flip(self.seed, epoch, index, augmentation.crop_scale,
                                            augmentation.flip) for epoch, index in chunk],
                             device=batch.device)
        theta = torch.zeros(len(chunk), 2, 3, device=batch.device)
        theta[:, 0, 0], theta[:, 1, 1] = boxes[:, 0], boxes[:, 1]
        theta[:, 0, 2], theta[:, 1, 2] = boxes[:, 2], boxes[:, 3]
        size = self.preprocessing.image_size
        grid = F.affine_grid(theta, [len(chunk), 3, size, size], align_corners=False)
        return F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="border",
                             align_corners=False)

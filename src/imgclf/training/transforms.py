"""How images become model inputs: the preprocessing every architecture shares (ImageNet
normalisation, the from-scratch CNN included), recorded in the model card so that evaluate,
export and predict repeat it exactly, and training's random augmentation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch

from imgclf.training.torchvision_compat import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Input sizes a saved preprocessing may ask for: 2048 px is far above any classifier's input,
# and a 3 x 2048 x 2048 float tensor (48 MiB) still fits a batch in memory.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 2048
Transform = Callable[[object], torch.Tensor]


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

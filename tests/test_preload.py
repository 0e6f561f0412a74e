"""Images decoded once and cropped on the device (train.preload)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from imgclf.core.paths import TRAIN_LOG_DIR
from imgclf.stages import train
from imgclf.training.datasets import Sample
from imgclf.training.preload import PreloadedLoader, crop_and_flip, preload
from imgclf.training.samplers import EpochSampler, ShardSampler
from imgclf.training.transforms import Augmentation, Preprocessing

from helpers.config import TINY
from helpers.splits import write_tiny_split


@pytest.fixture(scope="module")
def photos(flowers_mini: Path) -> list[Sample]:
    """Landscape, portrait and square photos of different sizes."""
    return [Sample(path, label) for label, name in enumerate(("daisy", "roses", "tulips"))
            for path in sorted((flowers_mini / name).glob("*.jpg"))[:4]]


@pytest.mark.parametrize("image_size", [64, 160, 224])  # resize 73, 183, 256: odd and even gaps
def test_evaluation_batches_are_the_pixels_of_the_eval_transform(photos, image_size):
    preprocessing = Preprocessing.for_size(image_size)
    images = preload(photos, preprocessing, torch.device("cpu"), workers=0)
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, preprocessing.resize_size,
                                                                  preprocessing.resize_size)
    loader = PreloadedLoader(images, [s.label for s in photos], ShardSampler(len(photos)), 5,
                             preprocessing)
    batches, labels = zip(*loader)
    expected = torch.stack([preprocessing.eval_transform()(_decoded(s)) for s in photos])
    assert torch.cat(labels).tolist() == [s.label for s in photos]
    assert torch.allclose(torch.cat(batches), expected, atol=1e-4)


def _decoded(sample: Sample):
    from imgclf.core.images import decode_image
    return decode_image(sample.path)


def test_training_crops_depend_only_on_seed_epoch_and_index():
    first = crop_and_flip(42, 1, 7, 0.25, True)
    assert crop_and_flip(42, 1, 7, 0.25, True) == first
    assert crop_and_flip(42, 2, 7, 0.25, True) != first
    assert crop_and_flip(43, 1, 7, 0.25, True) != first
    boxes = [crop_and_flip(0, 1, index, 0.25, True) for index in range(400)]
    for width, height, x, y in boxes:
        assert 0.25 * 0.75 <= abs(width) * height <= 1.0 + 1e-9  # the area, in [scale, 1]
        assert abs(x) <= 1 - abs(width) + 1e-9 and abs(y) <= 1 - height + 1e-9  # inside
    flipped = sum(width < 0 for width, *_ in boxes)
    assert 150 < flipped < 250  # about half
    assert all(width > 0 for width, *_ in (crop_and_flip(0, 1, i, 0.25, False)
                                           for i in range(50)))


def test_a_full_crop_without_flip_is_the_resized_square(photos):
    preprocessing = Preprocessing.for_size(64)
    images = preload(photos[:2], preprocessing, torch.device("cpu"), workers=0)
    loader = PreloadedLoader(images, [0, 1], EpochSampler(2, seed=0), 2, preprocessing,
                             Augmentation(crop_scale=1.0, flip=False, magnitude=0))
    batch, _ = next(iter(loader))
    assert batch.shape == (2, 3, 64, 64)
    # Pixel means survive a crop of (nearly) the whole square: the same picture, normalized.
    mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    raw_means = images.float().mean(dim=(2, 3)) / 255
    crop_means = (batch * std + mean).mean(dim=(2, 3))
    order = [index for _, index in EpochSampler(2, seed=0)]
    assert torch.allclose(crop_means, raw_means[order], atol=0.05)


def test_training_with_preload_writes_a_model(in_tmp_repo, flowers_mini, make_params):
    write_tiny_split(in_tmp_repo, flowers_mini)
    train.run(make_params({**TINY, "train.arch": "simple_cnn", "train.pretrained": False,
                           "train.preload": True, "train.epochs": 2}))
    summary = json.loads((TRAIN_LOG_DIR / "metrics.json").read_text())
    assert summary["step"] == 2 and summary["val"]["accuracy"] * 6 == pytest.approx(
        round(summary["val"]["accuracy"] * 6))  # of the 6 validation images


def test_preload_refuses_randaugment(make_params):
    from imgclf.core.params import ParamsError
    with pytest.raises(ParamsError, match=r"train\.augment_magnitude: 0 with train\.preload"):
        make_params({"train.preload": True, "train.augment_magnitude": 9})

"""Features of pictures from a pretrained network: what the audit compares pictures by.

The network is an ImageNet classifier (imgclf.training.models) without its last Linear layer;
the pictures go through the evaluation preprocessing (resize, centre crop, ImageNet
normalisation) at `image_size`. Features are L2-normalised so that a dot product is a cosine
similarity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from imgclf.training.datasets import ImageListDataset, Sample, make_loader
from imgclf.training.models import batch_logits, imagenet_model, last_linear, select_device
from imgclf.training.transforms import Preprocessing


def feature_network(arch: str, pretrained: str | bool) -> nn.Module:
    """The ImageNet network of `arch` with `pretrained` weights, its classifier removed."""
    model = imagenet_model(arch, pretrained, section="audit")
    model.set_submodule(last_linear(model)[0], nn.Identity())
    return model


def extract_features(paths: list[Path], model: nn.Module, image_size: int,
                     batch_size: int) -> np.ndarray:
    """One L2-normalised float32 feature row per picture, in the order of `paths`."""
    device = select_device("auto")
    model = model.to(device)
    transform = Preprocessing.for_size(image_size).eval_transform()
    dataset = ImageListDataset([Sample(path, 0) for path in paths], transform)
    loader = make_loader(dataset, batch_size, workers=0, device=device)
    features = torch.cat([batch.cpu() for batch, _ in batch_logits(model, loader, device)])
    return torch.nn.functional.normalize(features, dim=1).numpy()

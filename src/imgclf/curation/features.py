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

from imgclf.core.errors import StageError
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
    """One L2-normalised float32 feature row per picture, in the order of `paths`.

    Each batch is normalised and written into one array made at the first batch: the features are
    the audit's largest object (5 kB a picture with MobileNetV2), and collecting the batches
    first, then joining and normalising them, held three copies at once."""
    device = select_device("auto")
    model = model.to(device)
    transform = Preprocessing.for_size(image_size).eval_transform()
    dataset = ImageListDataset([Sample(path, 0) for path in paths], transform)
    loader = make_loader(dataset, batch_size, workers=0, device=device)
    features: np.ndarray | None = None
    start = 0
    for batch, _ in batch_logits(model, loader, device):
        rows = torch.nn.functional.normalize(batch, dim=1).cpu().numpy()
        if features is None:
            features = np.empty((len(paths), rows.shape[1]), dtype=np.float32)
        features[start:start + len(rows)] = rows
        start += len(rows)
    if features is None:
        raise StageError("the audit found no cleaned pictures to compare: run the clean stage "
                         "on a folder with pictures first")
    return features

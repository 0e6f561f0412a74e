"""The architecture registry, pretrained weights, freezing, and the inference loop.

torchvision architectures start from ImageNet weights (a torchvision weights name, downloaded by
torchvision, or a local state-dict file); their last Linear layer is then replaced by a head for
our classes. `simple_cnn` is a small network trained from scratch. All take ImageNet-normalized
inputs (imgclf.training.transforms.Preprocessing).
"""

from __future__ import annotations

import io
import types
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from imgclf.core.errors import StageError
from imgclf.training.torchvision_compat import models

TORCHVISION_ARCHS = ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "resnet18",
                     "efficientnet_b0", "convnext_tiny")
SIMPLE_CNN = "simple_cnn"
ARCHS = TORCHVISION_ARCHS + (SIMPLE_CNN,)


class SimpleCNN(nn.Module):
    """Four conv-BN-ReLU-pool blocks, global average pooling, dropout and a linear layer.

    The filter counts are fixed (the gemstones original tied them to the batch size), and global
    pooling makes the network work at any input size.
    """

    CHANNELS = (32, 64, 128, 256)

    def __init__(self, num_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels = 3
        for channels in self.CHANNELS:
            blocks += [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels = channels
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(in_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _check_arch(arch: str, section: str = "train") -> None:
    if arch not in ARCHS:
        raise StageError(f"{section}.arch: unknown architecture {arch!r}; allowed: "
                         f"{', '.join(ARCHS)}")


def imagenet_model(arch: str, pretrained: str | bool, section: str = "train") -> nn.Module:
    """A torchvision architecture with its 1000-class ImageNet head and the given weights;
    errors name the keys of params.yaml's `section` that gave them (train, audit)."""
    _check_arch(arch, section)
    if arch == SIMPLE_CNN:
        raise StageError(f"{section}.pretrained: {SIMPLE_CNN} is trained from scratch; set "
                         f"{section}.pretrained to false (got {pretrained!r})")
    model = models.get_model(arch, weights=None)
    if pretrained is not False:
        state_dict = _read_state_dict(Path(pretrained), section) if _is_path(pretrained) \
            else _download_weights(arch, pretrained, section)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:  # strict: missing, unexpected or mis-shaped keys
            detail = " ".join(str(error).split())
            raise StageError(f"{section}.pretrained: {pretrained} does not fit {arch}: "
                             f"{detail[:300]}...") from None
    return model


def _is_path(pretrained: str) -> bool:
    """A weights name is an identifier such as IMAGENET1K_V2; anything else means a file."""
    return not pretrained.isidentifier() or Path(pretrained).is_file()


def _read_state_dict(path: Path, section: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise StageError(f"{section}.pretrained: state-dict file {path} not found")
    state_dict = safe_load(path, f"{section}.pretrained")
    if not isinstance(state_dict, dict):
        raise StageError(f"{section}.pretrained: {path} holds a {type(state_dict).__name__}, "
                         "not a state dict")
    return state_dict


def safe_load(source: Path | io.BytesIO, what: str) -> Any:
    # weights_only=True: a file from elsewhere may hold tensors and plain data, never code.
    # torch.load's parser fails on foreign bytes with whatever it meets first (EOFError on an
    # empty file, KeyError on text, IndexError on noise, RuntimeError on a broken zip): any
    # exception here means the file is not what it should be.
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - see above
        first_line = next(iter(str(error).splitlines()), "") or type(error).__name__
        raise StageError(f"{what}: {source} is not a readable PyTorch file "
                         f"({first_line})") from None


def _download_weights(arch: str, name: str, section: str) -> dict[str, torch.Tensor]:
    weights_enum = models.get_model_weights(arch)
    try:
        weights = weights_enum[name]
    except KeyError:
        raise StageError(f"{section}.pretrained: {arch} has no weights {name!r}; allowed: "
                         f"{', '.join(weights_enum.__members__)}, a state-dict path, or false"
                         ) from None
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as error:  # no network, HTTP error, bad hash
        raise StageError(f"{section}.pretrained: cannot download {arch} weights {weights} ({error}); "
                         "without a network, set it to the path of a state-dict file") from None


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def _replace_last_linear(model: nn.Module, num_classes: int) -> nn.Linear:
    name, last = last_linear(model)
    head = nn.Linear(last.in_features, num_classes)
    model.set_submodule(name, head)
    return head


def split_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters of the classification head (the last Linear) and of the rest."""
    head_ids = {id(p) for p in last_linear(model)[1].parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return ([p for p in trainable if id(p) in head_ids],
            [p for p in trainable if id(p) not in head_ids])


def build_model(arch: str, num_classes: int, pretrained: str | bool = False, *,
                freeze_features: bool = False, freeze_batchnorm: bool = False) -> nn.Module:
    """A network for `num_classes` classes.

    freeze_features trains only the new head (and keeps BatchNorm in eval mode: batch statistics
    would otherwise still change the frozen features). freeze_batchnorm keeps pretrained
    BatchNorm statistics; without pretrained weights there are none to keep and it does nothing.
    """
    _check_arch(arch)
    if freeze_features and pretrained is False:
        raise StageError("train.freeze_features: needs pretrained weights (with pretrained: "
                         "false the frozen features would stay random)")
    if arch == SIMPLE_CNN and pretrained is False:
        return SimpleCNN(num_classes)
    model = imagenet_model(arch, pretrained)  # refuses weights for simple_cnn
    head = _replace_last_linear(model, num_classes)
    if freeze_features:
        for parameter in model.parameters():
            parameter.requires_grad = False
        for parameter in head.parameters():
            parameter.requires_grad = True
    if freeze_features or (freeze_batchnorm and pretrained is not False):
        keep_batchnorm_in_eval(model)
    return model


def _train_as_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def keep_batchnorm_in_eval(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode for good: a later model.train() leaves them there."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            # nn.Module.train() calls train() on each child; this instance's own method wins.
            module.train = types.MethodType(_train_as_eval, module)


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA where there is a GPU; `cuda` without one fails rather than crawl on CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("train.device: cuda, but torch sees no CUDA device; use auto or cpu")
    return torch.device(name)


@torch.inference_mode()
def batch_logits(model: nn.Module, loader: DataLoader,
                 device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Run `model` in eval mode over `loader`: (float32 logits, labels) of each batch, on
    `device`. The one inference loop of validation, evaluation and prediction."""
    model.eval()
    for images, labels in loader:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            logits = model(images.to(device, non_blocking=True))
        yield logits.float(), labels.to(device, non_blocking=True)

"""The `train:` section: the network, its optimisation and where it runs."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, model_validator

from imgclf.core.params import Number, Section, Seed, StageParams, fail


class TrainParams(Section):
    arch: str
    pretrained: Union[Literal[False], str] = Field(description=(
        "a torchvision weights name (such as DEFAULT), a state-dict path, or false"))
    freeze_features: bool
    freeze_batchnorm: bool
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: Number = Field(gt=0)
    backbone_lr_factor: Number = Field(gt=0, le=1)
    weight_decay: Number = Field(ge=0)
    label_smoothing: Number = Field(ge=0, lt=1)
    image_size: int = Field(ge=32)
    patience: int = Field(ge=1)
    crop_scale: Number = Field(gt=0, le=1)
    flip: bool
    augment_magnitude: int = Field(ge=0, le=30)
    warmup_epochs: int = Field(ge=0)
    ema_decay: Number = Field(ge=0, lt=1)
    balance: Literal["none", "sampler", "loss"]
    workers: int = Field(ge=0)
    device: Literal["auto", "cpu", "cuda"]
    nproc: int = Field(ge=1)
    compile: bool
    preload: bool

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        if self.preload and self.augment_magnitude:
            fail("augment_magnitude", "0 with train.preload (RandAugment runs on Pillow "
                 "images, not on the preloaded tensors)", self.augment_magnitude)
        return self


class TrainStageParams(StageParams):
    """What the train stage reads: the seed of every random draw, and its section."""
    seed: Seed
    train: TrainParams

"""The `tune:` section: the search space of `python -m imgclf tune`, which no stage reads."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from imgclf.config.train import TrainParams
from imgclf.core.params import Number, Section, Seed, StageParams, allowed_values, fail


def _pair(meaning: str) -> Any:
    return Field(min_length=2, max_length=2, description=f"[low, high]: {meaning}")


class TuneParams(Section):
    """The search space of `python -m imgclf tune` (never run by `dvc repro`): the train keys it
    searches, each with the values to try; plus when the median rule may prune a trial."""
    lr: list[Number] = _pair("the range of train.lr, searched on a log scale")
    backbone_lr_factor: list[Number] = _pair("the range of train.backbone_lr_factor (log scale)")
    weight_decay: list[Number] = _pair("the range of train.weight_decay (log scale)")
    label_smoothing: list[Number] = _pair("the range of train.label_smoothing")
    crop_scale: list[Number] = _pair("the range of train.crop_scale")
    augment_magnitude: list[int] = _pair("the range of train.augment_magnitude (integers)")
    batch_size: list[int] = Field(min_length=1, description="a list of train.batch_size values")
    prune_after_trials: int = Field(ge=1)
    prune_from_epoch: int = Field(ge=1)

    LOG_SCALE: ClassVar[tuple[str, ...]] = ("lr", "backbone_lr_factor", "weight_decay")
    RANGES: ClassVar[tuple[str, ...]] = LOG_SCALE + ("label_smoothing", "crop_scale",
                                                     "augment_magnitude")

    @model_validator(mode="after")
    def _check(self) -> TuneParams:
        for key in (*self.RANGES, "batch_size"):
            _check_train_values(key, getattr(self, key))
        for key in self.RANGES:
            low, high = getattr(self, key)
            if low > high:
                fail(key, "[low, high] with low <= high", [low, high])
            if key in self.LOG_SCALE and low <= 0:
                fail(key, "[low, high] with low > 0 (searched on a log scale)", [low, high])
        return self


def _check_train_values(key: str, values: list) -> None:
    """Every value a search may give train.<key> must be one that train.<key> allows."""
    field = TrainParams.model_fields[key]
    allowed = TypeAdapter(Annotated[field.annotation, *field.metadata])
    for value in values:
        try:
            allowed.validate_python(value, strict=True)
        except ValidationError:
            fail(key, f"values that train.{key} allows: {allowed_values(field)}", values)


class TuneCommandParams(StageParams):
    """What `tune` reads: the train section it starts from, and the search space."""
    seed: Seed
    train: TrainParams
    tune: TuneParams

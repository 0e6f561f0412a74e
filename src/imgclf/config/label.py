"""The `label:` section: the sizes of the validation and test splits, and which pictures
count as one group (never split apart)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from imgclf.config.audit import AuditParams
from imgclf.core.params import Number, Section, Seed, StageParams, fail

Fraction = Annotated[Number, Field(gt=0, lt=1, description="a fraction between 0 and 1")]


class LabelParams(Section):
    val_size: Fraction
    test_size: Fraction
    group_distance: int = Field(ge=0, le=64)
    group_tolerance: Number = Field(ge=0, le=255)

    @model_validator(mode="after")
    def _check(self) -> LabelParams:
        if self.val_size + self.test_size >= 1:
            fail("val_size + label.test_size", "less than 1, leaving images to train on",
                 self.val_size + self.test_size)
        return self


class LabelStageParams(StageParams):
    """What the label stage reads: the seed of its split, its section, and audit.auto_reject
    (the automatic curation rule, applied before the split)."""
    seed: Seed
    label: LabelParams
    audit: AuditParams

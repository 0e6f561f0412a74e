"""The `audit:` section: how the audit stage ranks pictures (the network whose features it uses,
the cross-validation, the clusters), and the automatic rule that the label stage applies."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from imgclf.core.params import Number, Section, Seed, StageParams

Threshold = Union[Literal[False], Annotated[Number, Field(ge=0, le=1)]]
THRESHOLD = "false (never) or a score in 0..1: reject unreviewed suspects scoring at least this"


class AutoReject(Section):
    """Per issue: the score from which a suspect nobody decided on is rejected without review."""
    off_topic: Threshold = Field(description=THRESHOLD)
    mislabeled: Threshold = Field(description=THRESHOLD)


class AuditParams(Section):
    arch: str
    pretrained: Union[Literal[False], str] = Field(description=(
        "a torchvision weights name (such as DEFAULT), a state-dict path, or false"))
    image_size: int = Field(ge=32)
    batch_size: int = Field(ge=1)
    folds: int = Field(ge=2, le=20)
    cluster_min_size: int = Field(ge=2)
    auto_reject: AutoReject


class AuditStageParams(StageParams):
    """What the audit stage reads: the seed of its folds, and its section."""
    seed: Seed
    audit: AuditParams

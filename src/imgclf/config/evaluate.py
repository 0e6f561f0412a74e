"""The `evaluate:` section."""

from __future__ import annotations

from pydantic import Field

from imgclf.core.params import Section, StageParams


class EvaluateParams(Section):
    batch_size: int = Field(ge=1)
    gallery_size: int = Field(ge=0)


class EvaluateStageParams(StageParams):
    """What the evaluate stage reads."""
    evaluate: EvaluateParams

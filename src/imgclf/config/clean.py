"""The `clean:` section: which pictures are kept, and how they are stored."""

from __future__ import annotations

from pydantic import Field, model_validator

from imgclf.core.params import Number, Section, StageParams, fail


class CleanParams(Section):
    min_side: int = Field(ge=1)
    short_side: int
    hash_distance: int = Field(ge=0, le=64)
    pixel_tolerance: Number = Field(ge=0, le=255)
    jpeg_quality: int = Field(ge=1, le=95)
    workers: int = Field(ge=1)

    @model_validator(mode="after")
    def _check(self) -> CleanParams:
        if self.short_side < self.min_side:
            fail("short_side", f"an integer >= clean.min_side ({self.min_side})",
                 self.short_side)
        return self


class CleanStageParams(StageParams):
    """What the clean stage reads."""
    clean: CleanParams

"""The `export:` section: the ONNX export and its parity check."""

from __future__ import annotations

from pydantic import Field

from imgclf.core.params import Number, Section, StageParams


class ExportParams(Section):
    # Float32 noise between PyTorch and ONNX Runtime kernels is about 1e-6 on a probability;
    # a wrong export (a missing layer, other weights) moves probabilities by 1e-2 and more.
    tolerance: Number = Field(gt=0, lt=1)
    batch_size: int = Field(ge=1)


class ExportStageParams(StageParams):
    """What the export stage reads."""
    export: ExportParams

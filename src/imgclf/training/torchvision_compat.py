"""Import torchvision through here: it makes a CUDA build of torchvision load with a CPU torch.

A torchvision wheel built for CUDA registers its C++ operators only when its CUDA library loads;
with a CPU-only torch that fails and the import stops at `operator torchvision::nms does not
exist`. Declaring the two operator schemas it looks up at import lets its Python parts load
(models, transforms). `torchvision.io` and `torchvision.ops` still do not work there, so images
are decoded with Pillow (imgclf.core.images). Where torchvision imports normally, nothing changes.
"""

from __future__ import annotations

import sys

import torch

# Kept at module level: the operator definitions live only as long as this object.
_SCHEMA_LIBRARY: torch.library.Library | None = None


def _forget_partial_import() -> None:
    for name in [name for name in sys.modules if name.partition(".")[0] == "torchvision"]:
        del sys.modules[name]


def _import_torchvision():
    global _SCHEMA_LIBRARY
    try:
        import torchvision
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
        _forget_partial_import()
        _SCHEMA_LIBRARY = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _SCHEMA_LIBRARY.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) "
                                   "-> Tensor")
        import torchvision
    return torchvision


torchvision = _import_torchvision()
models = torchvision.models
transforms = torchvision.transforms

__all__ = ["models", "torchvision", "transforms"]

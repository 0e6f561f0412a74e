"""The model card: what a trained model is, in one pydantic model.

The train stage writes it into the checkpoint (beside the weights), the export stage into the
ONNX file's metadata, and `serve` shows it as GET /model. Whichever file it comes from, it is
validated when the file is loaded: a model file is input from elsewhere, and a wrong class list
or preprocessing would give wrong answers without any error. A new fact about a model is a new
field here, and nowhere else.

The checkpoint keeps the layout it had before the card existed (format 1: the card's fields and
`state_dict` side by side, in this order), so checkpoints written by earlier versions load, and
a retrained model is byte for byte the same file.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Mapping

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from imgclf.core.errors import StageError
from imgclf.training.models import ARCHS
from imgclf.training.transforms import Preprocessing

CARD_FORMAT = 1
ONNX_PREFIX = "imgclf."  # ONNX metadata keys: imgclf.classes, imgclf.arch, ... (JSON values)
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"  # of the exported ONNX graph
# What each field allows, in the words of the error a damaged file gets.
ALLOWED = {
    "format_version": f"{CARD_FORMAT}",
    "arch": f"one of {', '.join(ARCHS)}",
    "classes": "a list of distinct, non-empty class names",
    "epoch": "an integer >= 0",
    "val_accuracy": "a number in 0..1",
    "train_params": "a mapping of train keys to values",
}


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, arbitrary_types_allowed=True)

    format_version: Literal[1]
    arch: str  # checked against ARCHS: a Literal would change what the checkpoint pickles
    classes: list[str]  # names by output index
    preprocessing: Preprocessing  # how an image becomes the network's input
    epoch: int = Field(ge=0)  # the kept epoch
    val_accuracy: float = Field(ge=0, le=1)
    # The train section (and seed) it was trained with; ONNX files exported before this field
    # was in the metadata have none.
    train_params: dict[str, Any] = {}

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        if arch not in ARCHS:
            raise ValueError(ALLOWED["arch"])
        return arch

    @field_validator("classes")
    @classmethod
    def _distinct_names(cls, classes: list[str]) -> list[str]:
        if not classes or not all(classes) or len(set(classes)) != len(classes):
            raise ValueError(ALLOWED["classes"])
        return classes

    @field_validator("preprocessing", mode="before")
    @classmethod
    def _preprocessing(cls, value: Any) -> Preprocessing:
        return value if isinstance(value, Preprocessing) else Preprocessing.from_dict(value)

    @field_serializer("preprocessing")
    def _preprocessing_as_dict(self, preprocessing: Preprocessing) -> dict:
        return preprocessing.to_dict()

    @classmethod
    def read(cls, values: Mapping[str, Any], where: str, prefix: str = "",
             hint: str = "") -> ModelCard:
        """Validate a card read from a file; the first problem is a StageError naming
        `where`, the key (`prefix` + field) and what the key allows, then `hint`."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as error:
            problem = error.errors()[0]
            key = str(problem["loc"][0]) if problem["loc"] else "card"
            allowed = ALLOWED.get(key) or str(problem.get("ctx", {}).get("error", "")) \
                or problem["msg"]
            got = f"got {values[key]!r:.100}" if key in values else "missing"
            raise StageError(f"{where}: {prefix}{key}: {allowed} ({got}){hint}") from None

    def checkpoint(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The checkpoint file's content: the card with the weights (format 1's key order)."""
        card = self.model_dump()
        return {"format_version": card.pop("format_version"), "arch": card.pop("arch"),
                "state_dict": {key: value.detach().cpu() for key, value in state_dict.items()},
                **card}

    def onnx_metadata(self, checkpoint_md5: str) -> dict[str, str]:
        """ONNX metadata that lets the exported file be used without its checkpoint: every
        field, the checkpoint it came from, and what the graph takes and gives."""
        size = self.preprocessing.image_size
        values = {**self.model_dump(), "checkpoint_md5": checkpoint_md5,
                  "input": f"{INPUT_NAME}: float32 (batch, 3, {size}, {size}), RGB scaled to "
                           "0..1, resized (short side to resize_size, bilinear), centre-cropped "
                           "to image_size, then (x - mean) / std per channel",
                  "output": f"{OUTPUT_NAME}: float32 (batch, classes), softmax over classes"}
        return {ONNX_PREFIX + key: json.dumps(value) for key, value in values.items()}

    @classmethod
    def from_onnx_metadata(cls, metadata: Mapping[str, str], where: str) -> tuple[ModelCard, str]:
        """Read onnx_metadata's output back: the card and the checkpoint's MD5."""
        try:
            values = {key[len(ONNX_PREFIX):]: json.loads(value)
                      for key, value in metadata.items() if key.startswith(ONNX_PREFIX)}
        except json.JSONDecodeError as error:
            raise StageError(f"{where}: metadata: JSON values ({error})") from None
        if values.get("format_version") != CARD_FORMAT:
            raise StageError(f"{where}: not an ONNX model written by `imgclf export` (metadata "
                             f"{ONNX_PREFIX}format_version {CARD_FORMAT} missing); run "
                             "`dvc repro export`")
        checkpoint_md5 = values.get("checkpoint_md5")
        if not isinstance(checkpoint_md5, str):
            raise StageError(f"{where}: metadata {ONNX_PREFIX}checkpoint_md5: a string "
                             f"(got {checkpoint_md5!r:.100})")
        card = {key: value for key, value in values.items() if key in cls.model_fields}
        return cls.read(card, where, prefix=f"metadata {ONNX_PREFIX}"), checkpoint_md5

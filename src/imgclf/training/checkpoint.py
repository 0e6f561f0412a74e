"""The model checkpoint: the weights and their model card in one file, written atomically and
checked before use (a checkpoint from another version, run or person fails with a StageError
naming what is wrong, never a traceback)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgclf.core.errors import StageError
from imgclf.core.files import atomic_write_bytes
from imgclf.modelcard import CARD_FORMAT, ModelCard
from imgclf.training.models import build_model, last_linear, safe_load
from imgclf.training.transforms import Transform

NOT_OURS = "; the file is damaged or was not written by `imgclf train`"


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    model: nn.Module  # in eval mode
    card: ModelCard

    @property
    def transform(self) -> Transform:
        """The evaluation transform the model was validated with."""
        return self.card.preprocessing.eval_transform()


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], card: ModelCard) -> None:
    """Write the weights with their card, atomically."""
    buffer = io.BytesIO()
    torch.save(card.checkpoint(state_dict), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, device: torch.device = torch.device("cpu")) -> TrainedModel:
    """Rebuild a saved model (weights from the file, nothing downloaded) in eval mode."""
    if not path.is_file():
        raise StageError(f"{path} not found: run `dvc pull {path}` to fetch the trained model, "
                         "or `dvc repro train` to train it")
    checkpoint = safe_load(path, "model")
    if not isinstance(checkpoint, dict) or checkpoint.get("format_version") != CARD_FORMAT:
        raise StageError(f"{path} is not an imgclf model checkpoint (format version "
                         f"{CARD_FORMAT}); run `dvc repro train`")
    fields = {key: value for key, value in checkpoint.items() if key in ModelCard.model_fields}
    card = ModelCard.read(fields, str(path), hint=NOT_OURS)
    model = build_model(card.arch, len(card.classes))
    _load_weights(path, model, checkpoint.get("state_dict"), card)
    return TrainedModel(model=model.to(device).eval(), card=card)


def _load_weights(path: Path, model: nn.Module, state_dict: Any, card: ModelCard) -> None:
    if not (isinstance(state_dict, dict)
            and all(isinstance(value, torch.Tensor) for value in state_dict.values())):
        raise StageError(f"{path}: state_dict: a mapping of parameter names to tensors "
                         f"(got {type(state_dict).__name__})")
    head = state_dict.get(last_linear(model)[0] + ".weight")
    if head is not None and head.ndim == 2 and head.shape[0] != len(card.classes):
        raise StageError(f"{path}: classes: as many names as the weights' head has outputs "
                         f"({head.shape[0]}) (got {len(card.classes)} names)")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:  # missing, unexpected or mis-shaped keys: another architecture
        detail = " ".join(str(error).split())
        raise StageError(f"{path}: state_dict: weights of a {card.arch} with "
                         f"{len(card.classes)} classes (got weights that do not fit: "
                         f"{detail[:300]}...)") from None

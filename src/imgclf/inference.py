"""One interface for a trained model, whether a PyTorch checkpoint or its ONNX export.

`load_classifier(path)` picks by suffix: `.onnx` runs in ONNX Runtime, anything else is a
checkpoint written by the train stage. Both give the class names, the preprocessing and
`probabilities(batch)`, so `predict` and `serve` do not care which one they hold. The ONNX file
carries the same facts as the checkpoint in its metadata (written by the export stage).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch

from imgclf.data import Preprocessing
from imgclf.errors import StageError
from imgclf.models import TrainedModel, check_class_names, load_checkpoint

# ONNX metadata keys (model.metadata_props); the values are JSON.
METADATA_PREFIX = "imgclf."
METADATA_FORMAT = 1
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
_KIND_NAMES = {str: "a string", int: "an integer", float: "a number"}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself: shown by `serve`'s GET /model."""
    format: str  # "pytorch" or "onnx"
    arch: str
    classes: list[str]
    preprocessing: Preprocessing
    epoch: int
    val_accuracy: float
    checkpoint_md5: str  # of the train stage's checkpoint (for an ONNX file: the one exported)


class Classifier(Protocol):
    info: ModelInfo

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities (rows sum to 1) of a batch of preprocessed images (N, 3, H, W)."""


def file_md5(path: Path) -> str:
    """The file's MD5, as DVC records it in dvc.lock."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class TorchClassifier:
    def __init__(self, trained: TrainedModel, checkpoint_md5: str) -> None:
        self.trained = trained
        self.info = ModelInfo(format="pytorch", arch=trained.arch, classes=trained.classes,
                              preprocessing=trained.preprocessing, epoch=trained.epoch,
                              val_accuracy=trained.val_accuracy, checkpoint_md5=checkpoint_md5)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        return torch.softmax(self.trained.model(batch), dim=1).numpy()


def metadata_for(info: ModelInfo) -> dict[str, str]:
    """The ONNX metadata that lets a model file be used without its checkpoint."""
    values = {"format_version": METADATA_FORMAT, "arch": info.arch, "classes": info.classes,
              "preprocessing": info.preprocessing.to_dict(), "epoch": info.epoch,
              "val_accuracy": info.val_accuracy, "checkpoint_md5": info.checkpoint_md5,
              "input": f"{INPUT_NAME}: float32 (batch, 3, {info.preprocessing.image_size}, "
                       f"{info.preprocessing.image_size}), RGB scaled to 0..1, resized "
                       "(short side to resize_size, bilinear), centre-cropped to image_size, "
                       "then (x - mean) / std per channel",
              "output": f"{OUTPUT_NAME}: float32 (batch, classes), softmax over classes"}
    return {METADATA_PREFIX + key: json.dumps(value) for key, value in values.items()}


def info_from_metadata(path: Path, metadata: dict[str, str]) -> ModelInfo:
    """Read metadata_for's output back; a file without it (or damaged) is a clear error."""
    try:
        values = {key[len(METADATA_PREFIX):]: json.loads(value)
                  for key, value in metadata.items() if key.startswith(METADATA_PREFIX)}
    except json.JSONDecodeError as error:
        raise StageError(f"{path}: metadata: JSON values ({error})") from None
    if values.get("format_version") != METADATA_FORMAT:
        raise StageError(f"{path}: not an ONNX model written by `imgclf export` (metadata "
                         f"{METADATA_PREFIX}format_version {METADATA_FORMAT} missing); run "
                         "`dvc repro export`")
    if not check_class_names(values.get("classes")):
        raise StageError(f"{path}: metadata {METADATA_PREFIX}classes: a list of distinct, "
                         f"non-empty class names (got {values.get('classes')!r:.100})")
    try:
        preprocessing = Preprocessing.from_dict(values.get("preprocessing"))
    except ValueError as error:
        raise StageError(f"{path}: metadata {METADATA_PREFIX}preprocessing: {error} "
                         f"(got {values.get('preprocessing')!r:.100})") from None
    record = {"arch": str, "epoch": int, "val_accuracy": float, "checkpoint_md5": str}
    for key, kind in record.items():  # facts shown by GET /model, from the checkpoint
        if not isinstance(values.get(key), kind) or isinstance(values.get(key), bool):
            raise StageError(f"{path}: metadata {METADATA_PREFIX}{key}: {_KIND_NAMES[kind]} "
                             f"(got {values.get(key)!r:.100})")
    return ModelInfo(format="onnx", arch=values["arch"], classes=values["classes"],
                     preprocessing=preprocessing, epoch=values["epoch"],
                     val_accuracy=values["val_accuracy"], checkpoint_md5=values["checkpoint_md5"])


class OnnxClassifier:
    """An exported model in ONNX Runtime (CPU), `threads` threads per inference."""

    def __init__(self, model_bytes: bytes, path: Path, threads: int) -> None:
        import onnxruntime  # imported here: PyTorch-only use needs no ONNX Runtime

        _refuse_external_data(model_bytes, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(model_bytes, options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own classes, all from Exception
            raise StageError(f"{path}: not a usable ONNX model ({error})") from None
        self.info = info_from_metadata(path, self.session.get_modelmeta().custom_metadata_map)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise StageError(f"{path}: an ONNX model with input {INPUT_NAME!r} and output "
                             f"{OUTPUT_NAME!r} (got inputs {[i.name for i in inputs]}, outputs "
                             f"{[o.name for o in outputs]})")

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]


def _refuse_external_data(model_bytes: bytes, path: Path) -> None:
    """An ONNX file may point at weight files elsewhere on disk (`external data`); a model from
    someone else must not make us read paths of their choosing. Ours are one file."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(model_bytes)  # from bytes: external data not read
    except DecodeError as error:
        raise StageError(f"{path}: not an ONNX model ({error})") from None
    if any(tensor.data_location == onnx.TensorProto.EXTERNAL
           for tensor in _all_tensors(model.graph)):
        raise StageError(f"{path}: an ONNX model with its weights inside the file (got one "
                         "that refers to external data files)")


def _all_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of an ONNX graph: initializers, node attributes, and those of subgraphs."""
    yield from graph.initializer
    yield from (sparse.values for sparse in graph.sparse_initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                yield from _all_tensors(subgraph)


def load_classifier(path: Path, threads: int | None = None) -> Classifier:
    """The model at `path`: a `.onnx` export or a train-stage checkpoint. Raises StageError."""
    threads = threads or torch.get_num_threads()
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise StageError(f"{path} not found: run `dvc pull {path}` or `dvc repro export`")
        return OnnxClassifier(path.read_bytes(), path, threads)
    torch.set_num_threads(threads)
    trained = load_checkpoint(path)
    return TorchClassifier(trained, file_md5(path))


def top_k(row: np.ndarray, classes: list[str], k: int) -> list[tuple[str, float]]:
    """The k most likely (class, probability) pairs of one probability row, best first."""
    order = np.argsort(-row, kind="stable")[:k]
    return [(classes[index], float(row[index])) for index in order]


"""One interface for a trained model, whether a PyTorch checkpoint or its ONNX export.

`load_classifier(path)` picks by suffix: `.onnx` runs in ONNX Runtime, anything else is a
checkpoint written by the train stage. Both give the class names, the preprocessing and
`probabilities(batch)`, so `predict` and `serve` do not care which one they hold. The ONNX file
carries the same model card as the checkpoint, in its metadata (written by the export stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch

from imgclf.core.errors import StageError
from imgclf.core.files import file_md5
from imgclf.modelcard import INPUT_NAME, OUTPUT_NAME, ModelCard
from imgclf.training.checkpoint import TrainedModel, load_checkpoint


class Classifier(Protocol):
    card: ModelCard
    format: str  # "pytorch" or "onnx"
    checkpoint_md5: str  # of the train stage's checkpoint (for an ONNX file: the one exported)

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities (rows sum to 1) of a batch of preprocessed images (N, 3, H, W)."""


class TorchClassifier:
    format = "pytorch"

    def __init__(self, trained: TrainedModel, checkpoint_md5: str) -> None:
        self.trained = trained
        self.card = trained.card
        self.checkpoint_md5 = checkpoint_md5

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        return torch.softmax(self.trained.model(batch), dim=1).numpy()


class OnnxClassifier:
    """An exported model in ONNX Runtime (CPU), `threads` threads per inference."""

    format = "onnx"

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
        self.card, self.checkpoint_md5 = ModelCard.from_onnx_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(path))
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


"""Export stage: models/model.pt -> models/model.onnx, proven equal to PyTorch on validation.

The ONNX graph takes a batch of preprocessed images (input `image`, any batch size) and returns
class probabilities (output `probabilities`: the network followed by a softmax). Its metadata
holds what is needed to use it without this repository: the class names by output index, the
preprocessing (resize, crop, mean, std), the architecture and the checkpoint it came from
(`imgclf.modelcard.ModelCard.onnx_metadata`).

Parity: every validation image goes through PyTorch and through ONNX Runtime; the stage fails,
and writes no model, unless both pick the same top-1 class on every image and no probability
differs by `export.tolerance` or more. The figures go to metrics/export.json.

Exporter: the TorchScript-based one (`dynamo=False`). torch 2.13 defaults to the torch.export
based exporter, which needs two more packages (onnxscript, onnx-ir) and takes 12 s for a
MobileNetV2 on this CPU where the TorchScript one takes 0.5 s, for the same graph (maximum
probability difference 1.5e-8 for both). It is deprecated; torch is pinned, and the parity check
and its tests would catch a change. Opset 17 is read by ONNX Runtime >= 1.13, OpenVINO and
TensorRT 8.6.
"""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from imgclf.config.export import ExportStageParams
from imgclf.core.cli import stage_main
from imgclf.core.errors import StageError
from imgclf.core.files import atomic_write_bytes, file_md5, write_json
from imgclf.core.paths import EXPORT_METRICS, MODEL_PATH, ONNX_PATH, SPLIT_FILES
from imgclf.modelcard import INPUT_NAME, OUTPUT_NAME
from imgclf.serving.loaders import Classifier, OnnxClassifier, TorchClassifier
from imgclf.training.checkpoint import load_checkpoint
from imgclf.training.datasets import ImageListDataset, Sample, make_loader, read_split

OPSET = 17


def onnx_model_bytes(classifier: TorchClassifier) -> bytes:
    """The checkpoint's network plus a softmax as a checked ONNX model with imgclf metadata."""
    network = nn.Sequential(classifier.trained.model, nn.Softmax(dim=1)).eval()
    size = classifier.card.preprocessing.image_size
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter chosen: see above
        torch.onnx.export(network, (torch.zeros(2, 3, size, size),), buffer, dynamo=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET)
    model = onnx.load_model_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, classifier.card.onnx_metadata(classifier.checkpoint_md5))
    model.doc_string = (f"imgclf {classifier.card.arch} classifier of "
                        f"{len(classifier.card.classes)} classes; see the imgclf.* metadata")
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def compare(reference: Classifier, candidate: Classifier, samples: list[Sample],
            batch_size: int) -> dict:
    """Run both on every sample (the reference's preprocessing); where and how much they differ."""
    dataset = ImageListDataset(samples, reference.card.preprocessing.eval_transform())
    loader = make_loader(dataset, batch_size, workers=0, device=torch.device("cpu"))
    expected, got = [], []
    for images, _ in loader:
        expected.append(reference.probabilities(images))
        got.append(candidate.probabilities(images))
    expected_all, got_all = np.concatenate(expected), np.concatenate(got)
    differences = np.abs(expected_all - got_all).max(axis=1)
    disagreements = np.flatnonzero(expected_all.argmax(axis=1) != got_all.argmax(axis=1))
    worst = int(differences.argmax())
    return {"images": len(samples),
            "top1_disagreements": len(disagreements),
            "first_disagreement": str(samples[disagreements[0]].path) if len(disagreements)
            else "",
            "max_probability_difference": float(differences[worst]),
            "worst_image": str(samples[worst].path)}


def check_parity(report: dict, tolerance: float) -> None:
    if report["top1_disagreements"]:
        raise StageError(f"export.tolerance: ONNX Runtime picks another top-1 class than "
                         f"PyTorch on {report['top1_disagreements']} of {report['images']} "
                         f"validation images (first: {report['first_disagreement']}); the "
                         "export is wrong, not written")
    if report["max_probability_difference"] >= tolerance:
        raise StageError(f"export.tolerance: ONNX Runtime's probabilities within {tolerance:g} "
                         f"of PyTorch's (got {report['max_probability_difference']:.3g} on "
                         f"{report['worst_image']}); the export is wrong, not written")


def run(params: ExportStageParams) -> None:
    config = params.export
    reference = TorchClassifier(load_checkpoint(MODEL_PATH), file_md5(MODEL_PATH))
    samples = read_split(SPLIT_FILES["val"], reference.card.classes)
    model_bytes = onnx_model_bytes(reference)
    exported = OnnxClassifier(model_bytes, ONNX_PATH, threads=torch.get_num_threads())
    report = compare(reference, exported, samples, config.batch_size)
    check_parity(report, config.tolerance)
    atomic_write_bytes(ONNX_PATH, model_bytes)
    numbers = {key: value for key, value in report.items() if not isinstance(value, str)}
    write_json(EXPORT_METRICS, {**numbers, "tolerance": config.tolerance, "opset": OPSET,
                                "onnx_bytes": len(model_bytes)})
    print(f"export: {ONNX_PATH} ({len(model_bytes) / 1e6:.1f} MB, opset {OPSET}); "
          f"{report['images']} validation images: same top-1 on all, largest probability "
          f"difference {report['max_probability_difference']:.2g} (< {config.tolerance:g})")


def main(argv: list[str] | None = None) -> int:
    return stage_main("export", run, ExportStageParams, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

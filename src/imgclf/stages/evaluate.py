"""Evaluate stage: the trained model's honest figures on the test split (read here only).

Writes metrics/evaluate.json (accuracy with a Wilson 95 % interval, top-5 accuracy, macro F1,
and how many pictures curation removed and moved before the split, so that a reader knows what
the accuracy is measured on), the predictions (class names, for `dvc plots`' confusion template), a per-class report (with the
per-class curation counts), the most-confused class pairs, a row-normalized confusion heat map and a gallery of mistakes.
"""

from __future__ import annotations

import io
import math
import sys
import textwrap
import warnings

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import binomtest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from imgclf.config.evaluate import EvaluateStageParams
from imgclf.core.cli import stage_main
from imgclf.core.errors import StageError
from imgclf.core.files import atomic_write_bytes, read_csv, write_csv, write_json
from imgclf.core.images import decode_image
from imgclf.core.paths import (
    CONFUSED_PAIRS,
    CONFUSION_PNG,
    EVALUATE_METRICS,
    MISTAKES_PNG,
    MODEL_PATH,
    PER_CLASS_REPORT,
    PREDICTIONS,
    SPLIT_CURATION,
    SPLIT_FILES,
)
from imgclf.training.checkpoint import TrainedModel, load_checkpoint
from imgclf.training.datasets import ImageListDataset, Sample, make_loader, read_split
from imgclf.training.models import batch_logits, select_device

TOP_CONFUSED_PAIRS = 20
CURATION_COUNTS = ("removed", "moved_out", "moved_in")
GALLERY_COLUMNS = 6


def predict_probabilities(trained: TrainedModel, samples: list[Sample], batch_size: int,
                          device: torch.device) -> np.ndarray:
    """Class probabilities, one row per sample, in the samples' order."""
    dataset = ImageListDataset(samples, trained.transform)
    loader = make_loader(dataset, batch_size, workers=0, device=device)
    return torch.cat([torch.softmax(logits, dim=1).cpu()
                      for logits, _ in batch_logits(trained.model, loader, device)]).numpy()


def summary_metrics(actual: np.ndarray, probabilities: np.ndarray) -> dict:
    n_test, n_classes = probabilities.shape
    predicted = probabilities.argmax(axis=1)
    correct = int((predicted == actual).sum())
    interval = binomtest(correct, n_test).proportion_ci(method="wilson")
    # sklearn wants the positive class's score alone when there are two classes.
    scores = probabilities[:, 1] if n_classes == 2 else probabilities
    with warnings.catch_warnings():
        # With 5 classes or fewer top-5 is 1.0 by definition (n_classes in the JSON says so).
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        top_k = top_k_accuracy_score(actual, scores, k=min(5, n_classes), labels=range(n_classes))
    return {
        "accuracy": correct / n_test,
        "accuracy_ci95": [float(interval.low), float(interval.high)],
        "top5_accuracy": float(top_k),
        "macro_f1": float(f1_score(actual, predicted, labels=range(n_classes), average="macro",
                                   zero_division=0)),
        "n_test": n_test,
        "n_classes": n_classes,
    }


def curation_counts(classes: list[str]) -> dict[str, dict[str, int]]:
    """Per class, how many pictures curation removed from it, moved out of it and moved into it
    (all splits: data/split/curation.csv, written by label)."""
    if not SPLIT_CURATION.is_file():
        raise StageError(f"{SPLIT_CURATION} not found: the split comes from an older label "
                         "stage; run `dvc repro label`")
    counts = {name: dict.fromkeys(CURATION_COUNTS, 0) for name in classes}
    for row in read_csv(SPLIT_CURATION):
        if row["decision"] == "reject":
            counts[row["class"]]["removed"] += 1
        else:
            counts[row["class"]]["moved_out"] += 1
            counts[row["target"]]["moved_in"] += 1
    return counts


def per_class_rows(actual: np.ndarray, predicted: np.ndarray, classes: list[str],
                   curation: dict[str, dict[str, int]]) -> list[dict]:
    precision, recall, f1, support = precision_recall_fscore_support(
        actual, predicted, labels=range(len(classes)), zero_division=0)
    return [{"class": name, "precision": round(float(p), 4), "recall": round(float(r), 4),
             "f1": round(float(f), 4), "support": int(s)} | curation[name]
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)]


def confused_pairs(matrix: np.ndarray, classes: list[str],
                   limit: int = TOP_CONFUSED_PAIRS) -> list[dict]:
    """Off-diagonal actual -> predicted counts, most frequent first (ties by class order)."""
    off_diagonal = matrix * (1 - np.eye(len(classes), dtype=matrix.dtype))
    pairs = sorted(zip(*np.nonzero(off_diagonal)), key=lambda pair: -off_diagonal[pair])
    return [{"actual": classes[a], "predicted": classes[p], "count": int(off_diagonal[a, p])}
            for a, p in pairs[:limit]]


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)  # render with Agg: no display, no pyplot state
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def confusion_png(matrix: np.ndarray, classes: list[str]) -> bytes:
    """Row-normalized heat map: each row shows where one class's test images went."""
    n = len(classes)
    support = matrix.sum(axis=1, keepdims=True)
    normalized = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    side = max(6.0, 0.25 * n + 3)  # about a quarter inch per class keeps 50+ names readable
    font = 9 if n <= 20 else 6
    figure = Figure(figsize=(side + 1.5, side))
    axes = figure.add_subplot()
    image = axes.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02, label="fraction of the actual class")
    axes.set_xticks(range(n), classes, rotation=90, fontsize=font)
    axes.set_yticks(range(n), classes, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(f"Test confusion matrix, rows normalized ({int(matrix.sum())} images)")
    if n <= 20:  # small enough to print each cell's share
        for (row, column), value in np.ndenumerate(normalized):
            if value > 0:
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=font,
                          color="white" if value > 0.5 else "black")
    return _png(figure)


def _message_png(text: str) -> bytes:
    figure = Figure(figsize=(4, 1))
    figure.text(0.5, 0.5, text, ha="center", va="center")
    return _png(figure)


def mistakes_png(samples: list[Sample], probabilities: np.ndarray, classes: list[str],
                 gallery_size: int) -> bytes:
    """The most confident mistakes, in full colour, with true and predicted class."""
    if gallery_size == 0:
        return _message_png("Gallery disabled (evaluate.gallery_size: 0)")
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = [i for i, sample in enumerate(samples) if predicted[i] != sample.label]
    wrong = sorted(wrong, key=lambda i: -confidence[i])[:gallery_size]
    if not wrong:
        return _message_png("No misclassified test images to show")
    columns = min(GALLERY_COLUMNS, len(wrong))
    rows = math.ceil(len(wrong) / columns)
    figure = Figure(figsize=(2.6 * columns, 3.1 * rows))
    for position, index in enumerate(wrong, start=1):
        axes = figure.add_subplot(rows, columns, position)
        image = decode_image(samples[index].path)
        image.thumbnail((256, 256))
        axes.imshow(np.asarray(image))  # RGB array: all three channels shown
        axes.set_axis_off()
        title = (f"true: {classes[samples[index].label]}\n"
                 f"pred: {classes[predicted[index]]} ({confidence[index]:.0%})")
        axes.set_title("\n".join(textwrap.shorten(line, 34) for line in title.splitlines()),
                       fontsize=8, color="darkred")
    return _png(figure)


def run(params: EvaluateStageParams) -> None:
    device = select_device("auto")
    trained = load_checkpoint(MODEL_PATH, device)
    classes = trained.card.classes
    samples = read_split(SPLIT_FILES["test"], classes)
    probabilities = predict_probabilities(trained, samples, params.evaluate.batch_size, device)
    actual = np.array([sample.label for sample in samples])
    predicted = probabilities.argmax(axis=1)

    curation = curation_counts(classes)
    metrics = summary_metrics(actual, probabilities) | {
        "curation_removed": sum(row["removed"] for row in curation.values()),
        "curation_moved": sum(row["moved_in"] for row in curation.values())}
    write_json(EVALUATE_METRICS, metrics)
    write_csv(PREDICTIONS, ("path", "actual", "predicted", "confidence"), (
        {"path": sample.path.as_posix(), "actual": classes[sample.label],
         "predicted": classes[guess], "confidence": round(float(row.max()), 4)}
        for sample, guess, row in zip(samples, predicted, probabilities)))
    write_csv(PER_CLASS_REPORT, ("class", "precision", "recall", "f1", "support")
              + CURATION_COUNTS, per_class_rows(actual, predicted, classes, curation))
    matrix = confusion_matrix(actual, predicted, labels=range(len(classes)))
    write_csv(CONFUSED_PAIRS, ("actual", "predicted", "count"), confused_pairs(matrix, classes))
    atomic_write_bytes(CONFUSION_PNG, confusion_png(matrix, classes))
    atomic_write_bytes(MISTAKES_PNG, mistakes_png(samples, probabilities, classes,
                                                  params.evaluate.gallery_size))
    low, high = metrics["accuracy_ci95"]
    print(f"test accuracy {metrics['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}), "
          f"top-5 {metrics['top5_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}, "
          f"{metrics['n_test']} images; curation removed {metrics['curation_removed']} and "
          f"moved {metrics['curation_moved']} before the split")


def main(argv: list[str] | None = None) -> int:
    return stage_main("evaluate", run, EvaluateStageParams, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

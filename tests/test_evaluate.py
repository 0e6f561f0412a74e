"""Evaluate stage: a model trained for one epoch on the tiny split, then its test figures."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from imgclf.core.errors import StageError
from imgclf.core.files import read_csv
from imgclf.core.paths import (
    CONFUSED_PAIRS,
    CONFUSION_PNG,
    EVALUATE_METRICS,
    MISTAKES_PNG,
    PER_CLASS_REPORT,
    PREDICTIONS,
    SPLIT_FILES,
)
from imgclf.stages import evaluate, train
from imgclf.training.datasets import Sample, read_split

from helpers.config import TINY
from helpers.splits import TINY_CLASSES, write_tiny_split


def test_evaluate_writes_sane_test_figures(in_tmp_repo, flowers_mini, make_params,
                                           mobilenet_v2_weights):
    write_tiny_split(in_tmp_repo, flowers_mini)
    params = make_params({**TINY, "train.arch": "mobilenet_v2",
                          "train.pretrained": str(mobilenet_v2_weights)})
    train.run(params)
    evaluate.run(params)

    metrics = json.loads(EVALUATE_METRICS.read_text())
    test_rows = read_csv(SPLIT_FILES["test"])
    assert (metrics["n_test"], metrics["n_classes"]) == (len(test_rows), len(TINY_CLASSES))
    assert metrics["accuracy_ci95"] == pytest.approx(
        wilson_interval(round(metrics["accuracy"] * metrics["n_test"]), metrics["n_test"]))

    predictions = read_csv(PREDICTIONS)  # class names, in the test list's order
    assert [(p["path"], p["actual"]) for p in predictions] == \
        [(t["path"], t["class"]) for t in test_rows]
    assert all(p["predicted"] in TINY_CLASSES and 0 < float(p["confidence"]) <= 1
               for p in predictions)
    assert metrics["accuracy"] == np.mean([p["actual"] == p["predicted"] for p in predictions])

    report = read_csv(PER_CLASS_REPORT)
    assert [row["class"] for row in report] == list(TINY_CLASSES)
    assert sum(int(row["support"]) for row in report) == len(test_rows)
    mistakes = sum(p["actual"] != p["predicted"] for p in predictions)
    assert sum(int(pair["count"]) for pair in read_csv(CONFUSED_PAIRS)) == mistakes
    for path in (CONFUSION_PNG, MISTAKES_PNG):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 50


def test_confused_pairs_most_frequent_first():
    matrix = np.array([[5, 1, 3], [0, 4, 0], [2, 3, 1]])
    assert evaluate.confused_pairs(matrix, ["a", "b", "c"], limit=3) == [
        {"actual": "a", "predicted": "c", "count": 3},
        {"actual": "c", "predicted": "b", "count": 3},
        {"actual": "c", "predicted": "a", "count": 2}]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval, written out (evaluate uses scipy's binomtest)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_summary_metrics_against_hand_computed_values():
    # 7 classes, 4 test images; rows are class scores.
    probabilities = np.full((4, 7), 0.01)
    probabilities[0, [0, 1]] = [0.5, 0.3]                 # actual 0: right
    probabilities[1, [2, 0]] = [0.5, 0.4]                 # actual 0: wrong, 0 is second
    probabilities[2, [1, 2]] = [0.6, 0.3]                 # actual 1: right
    probabilities[3, [3, 4, 5, 2, 1, 6]] = [0.3, 0.2, 0.15, 0.1, 0.09, 0.08]  # actual 6: 6th
    metrics = evaluate.summary_metrics(np.array([0, 0, 1, 6]), probabilities)
    assert metrics["accuracy"] == 0.5 and (metrics["n_test"], metrics["n_classes"]) == (4, 7)
    assert metrics["top5_accuracy"] == 0.75  # the last image's class is only 6th
    # F1: class 0 = 2/3 (P 1, R 1/2), class 1 = 1, class 6 = 0, classes 2 and 3 = 0 (predicted,
    # never actual); 4 and 5 have neither and count as 0 too: (2/3 + 1) / 7.
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1) / 7)
    assert metrics["accuracy_ci95"] == pytest.approx(wilson_interval(2, 4))


def test_two_class_metrics():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    metrics = evaluate.summary_metrics(np.array([0, 1, 1, 1]), probabilities)
    assert metrics["accuracy"] == 0.75 and metrics["top5_accuracy"] == 1.0


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_mistakes_gallery_is_in_full_colour(tmp_path):
    red = tmp_path / "red.jpg"
    Image.new("RGB", (64, 64), (220, 20, 20)).save(red)
    samples = [Sample(red, 0), Sample(red, 1)]
    probabilities = np.array([[0.2, 0.8], [0.1, 0.9]])  # the first one is a mistake
    pixels = _pixels(evaluate.mistakes_png(samples, probabilities, ["rose", "tulip"], 4))
    red_pixels = (pixels[..., 0] > 180) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red_pixels.sum() > 1000


def test_no_mistakes_gives_a_small_png_that_says_so(tmp_path):
    samples = [Sample(tmp_path / "never-read.jpg", 1)]
    png = evaluate.mistakes_png(samples, np.array([[0.1, 0.9]]), ["rose", "tulip"], 4)
    assert _pixels(png).shape[0] < 200


def test_test_split_from_another_model_fails(in_tmp_repo, flowers_mini):
    write_tiny_split(in_tmp_repo, flowers_mini)
    with pytest.raises(StageError, match="does not match"):
        read_split(SPLIT_FILES["test"], ["tulips", "roses", "daisy"])

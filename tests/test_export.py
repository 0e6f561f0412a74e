"""Export stage: an ONNX model with imgclf metadata, equal to PyTorch on real images, refused
when it is not; and the stage itself through a real `dvc repro export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
import yaml
from onnx.external_data_helper import convert_model_to_external_data

from imgclf.core.errors import StageError
from imgclf.core.files import file_md5
from imgclf.core.images import decode_image
from imgclf.serving.loaders import OnnxClassifier, load_classifier
from imgclf.stages.export import check_parity, compare, onnx_model_bytes
from imgclf.training.datasets import Sample
from imgclf.training.models import ARCHS

from helpers.dvcrepo import sh, stages_run, tiny_repository
from helpers.tinymodel import CLASSES, photos, write_checkpoint

TOLERANCE = 1e-4  # params.yaml's export.tolerance


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "model.pt")


@pytest.fixture
def samples(flowers_mini: Path) -> list[Sample]:
    return [Sample(path, 0) for path in photos(flowers_mini, 10)]


def test_onnx_model_carries_what_is_needed_to_use_it(checkpoint, samples, tmp_path):
    reference = load_classifier(checkpoint)
    model_bytes = onnx_model_bytes(reference)

    # Anyone with ONNX Runtime alone can read the classes and the preprocessing.
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["imgclf.classes"]) == CLASSES
    assert json.loads(metadata["imgclf.preprocessing"]) == {
        "image_size": 64, "resize_size": 73, "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225]}
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape[1:] == [3, 64, 64]

    exported = OnnxClassifier(model_bytes, tmp_path / "model.onnx", threads=1)
    assert exported.card.classes == CLASSES and exported.format == "onnx"
    assert exported.card.preprocessing == reference.card.preprocessing
    assert (exported.card.arch, exported.card.epoch, exported.card.val_accuracy) == (
        "simple_cnn", 1, 0.5)
    assert exported.checkpoint_md5 == file_md5(checkpoint)

    # Any batch size: parity on real photos in batches of 4 (the last one holds 2).
    report = compare(reference, exported, samples, batch_size=4)
    assert report["images"] == 10 and report["top1_disagreements"] == 0
    assert report["max_probability_difference"] < TOLERANCE
    check_parity(report, TOLERANCE)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_exports_with_parity(arch, tmp_path):
    reference = load_classifier(write_checkpoint(tmp_path / "model.pt", arch=arch))
    exported = OnnxClassifier(onnx_model_bytes(reference), tmp_path / "model.onnx", threads=1)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected, got = reference.probabilities(images), exported.probabilities(images)
    assert (expected.argmax(1) == got.argmax(1)).all()
    assert abs(expected - got).max() < TOLERANCE


def _shift_head_bias(classifier, shift: torch.Tensor) -> None:
    with torch.no_grad():
        classifier.trained.model.classifier[-1].bias += shift


def test_parity_failure_stops_the_export(checkpoint, samples, tmp_path):
    exported = OnnxClassifier(onnx_model_bytes(load_classifier(checkpoint)),
                              tmp_path / "model.onnx", threads=1)
    drifted = load_classifier(checkpoint)  # PyTorch no longer computes what was exported
    _shift_head_bias(drifted, torch.tensor([0.0, 0.0, 0.0, 0.01]))
    report = compare(drifted, exported, samples, batch_size=4)
    with pytest.raises(StageError, match=r"export.tolerance: ONNX Runtime's probabilities "
                                         r"within 0.0001 of PyTorch's \(got 0.00"):
        check_parity(report, TOLERANCE)

    # A class that ONNX Runtime never ranks first, made to win everywhere in PyTorch.
    first = exported.probabilities(torch.stack([
        exported.card.preprocessing.eval_transform()(decode_image(sample.path))
        for sample in samples])).argmax(axis=1)
    loser = next(label for label in range(len(CLASSES)) if label not in set(first))
    _shift_head_bias(drifted, 50.0 * torch.eye(len(CLASSES))[loser])
    report = compare(drifted, exported, samples, batch_size=4)
    with pytest.raises(StageError, match=r"picks another top-1 class than PyTorch on 10 of 10 "
                                         "validation images"):
        check_parity(report, TOLERANCE)


def test_onnx_file_pointing_at_external_data_is_refused(checkpoint, tmp_path):
    model = onnx.load_model_from_string(onnx_model_bytes(load_classifier(checkpoint)))
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    path = tmp_path / "model.onnx"
    onnx.save_model(model, path)
    with pytest.raises(StageError, match="refers to external data files"):
        load_classifier(path)


@pytest.mark.slow
def test_dvc_repro_export_writes_an_onnx_model_that_matches(tmp_path, flowers_mini,
                                                            mobilenet_v2_weights):
    repo = tiny_repository(tmp_path / "repo", flowers_mini, mobilenet_v2_weights)

    output = sh(repo, "dvc", "repro", "export")
    assert stages_run(output) == ["scrape", "clean", "audit", "label", "train", "export"]
    assert "same top-1 on all" in output
    metrics = json.loads((repo / "metrics/export.json").read_text())
    validation_images = len((repo / "data/split/val.csv").read_text().splitlines()) - 1
    assert metrics["images"] == validation_images > 0
    assert metrics["top1_disagreements"] == 0 and metrics["max_probability_difference"] < 1e-4
    onnx_model = onnx.load(repo / "models/model.onnx")
    metadata = {entry.key: json.loads(entry.value) for entry in onnx_model.metadata_props}
    assert metadata["imgclf.classes"] == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert metadata["imgclf.checkpoint_md5"] == file_md5(repo / "models/model.pt")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert {out["path"] for out in lock["stages"]["export"]["outs"]} == {
        "models/model.onnx", "metrics/export.json"}

    # Committed, the lock names the training commit of both model files, as GET /model shows.
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "trained and exported")
    head = sh(repo, "git", "rev-parse", "HEAD").strip()
    for model in ("models/model.pt", "models/model.onnx"):
        described = sh(repo, sys.executable, "-c", "import sys; from pathlib import Path; "
                       "from imgclf.serving.loaders import load_classifier; "
                       "from imgclf.serving.app import describe_model; "
                       "print(describe_model(load_classifier(Path(sys.argv[1])), Path(sys.argv[1]))"
                       ".model_dump_json())", model)
        assert json.loads(described)["training_commit"] == head, described

    # Up to date afterwards; the exported model classifies through the command line.
    assert stages_run(sh(repo, "dvc", "repro", "export")) == []
    image = next((repo / "data/clean/daisy").glob("*.jpg"))
    printed = sh(repo, sys.executable, "-m", "imgclf", "predict", str(image), "--model",
                 "models/model.onnx", "--top-k", "1")
    assert printed.splitlines()[0] == f"{image}:" and "%" in printed.splitlines()[1]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("imgclf.format_version", None, r"not an ONNX model written by `imgclf export`"),
    ("imgclf.classes", '["daisy", "daisy", "roses", "tulips"]',
     r"metadata imgclf.classes: a list of distinct, non-empty class names"),
    ("imgclf.preprocessing", '{"image_size": 64, "resize_size": 73, "mean": [0, 0, 0], '
                             '"std": [0, 1, 1]}', r"metadata imgclf.preprocessing: .*std > 0"),
    ("imgclf.epoch", '"seven"', r"metadata imgclf.epoch: an integer >= 0 \(got 'seven'\)"),
    ("imgclf.arch", "not json", r"metadata: JSON values"),
])
def test_damaged_onnx_metadata_is_refused_naming_the_key(checkpoint, tmp_path, key, value,
                                                         message):
    model = onnx.load_model_from_string(onnx_model_bytes(load_classifier(checkpoint)))
    kept = [(entry.key, entry.value) for entry in model.metadata_props if entry.key != key]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dict(kept + ([(key, value)] if value else [])))
    path = tmp_path / "model.onnx"
    onnx.save_model(model, path)
    with pytest.raises(StageError, match=message):
        load_classifier(path)

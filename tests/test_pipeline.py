"""End to end: the real `dvc` commands on a temporary copy of this repository.

Tiny settings (flowers-mini through the folder source, 64 px, one epoch, MobileNetV2 weights from
../shared) keep it to a couple of minutes on two cores.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from imgclf.core.files import read_csv

from helpers.config import write_tiny_params
from helpers.dvcrepo import copy_repository, sh, stages_run
from helpers.paths import REPO_ROOT

pytestmark = pytest.mark.slow

STAGES = ["scrape", "clean", "audit", "label", "train", "evaluate", "export"]


@pytest.fixture
def pipeline_repo(tmp_path: Path, flowers_mini: Path, mobilenet_v2_weights: Path) -> Path:
    repo = tmp_path / "repo"
    copy_repository(repo)
    write_tiny_params(repo, flowers_mini, mobilenet_v2_weights)
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "dvc", "remote", "add", "-f", "-d", "local", str(tmp_path / "storage"))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "pipeline with tiny params")
    return repo


def test_pipeline_lifecycle(pipeline_repo: Path, tmp_path: Path) -> None:
    repo = pipeline_repo

    # A first repro runs every stage, in order, and produces the model and test metrics.
    assert stages_run(sh(repo, "dvc", "repro")) == STAGES
    metrics = yaml.safe_load((repo / "metrics/evaluate.json").read_text())
    predictions = read_csv(repo / "metrics/predictions.csv")
    assert metrics["n_test"] == len(predictions) == len(read_csv(repo / "data/split/test.csv"))
    assert metrics["accuracy"] == pytest.approx(
        sum(row["actual"] == row["predicted"] for row in predictions) / len(predictions))
    assert (repo / "models/model.pt").is_file()

    # The stages ran this copy's code, and wrote bytecode beside it as on any user's machine;
    # bytecode is not a code change: nothing runs again and `dvc status` is clean.
    imported = sh(repo, sys.executable, "-c", "import imgclf; print(imgclf.__file__)")
    assert Path(imported.strip()).is_relative_to(repo / "src"), imported
    assert any((repo / "src/imgclf/sources").glob("__pycache__/*.pyc"))
    assert stages_run(sh(repo, "dvc", "repro")) == []
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "first run")

    # A new learning rate re-runs training and what uses the model only.
    params_file = repo / "params.yaml"
    text = params_file.read_text(encoding="utf-8")
    params_file.write_text(re.sub(r"(?m)^(  lr:) .*$", r"\1 0.0005", text), encoding="utf-8")
    assert stages_run(sh(repo, "dvc", "repro")) == ["train", "evaluate", "export"]
    # A clean setting re-runs clean and everything after it, but not scrape.
    text = params_file.read_text(encoding="utf-8")
    params_file.write_text(re.sub(r"(?m)^(  jpeg_quality:) .*$", r"\1 85", text),
                           encoding="utf-8")
    assert stages_run(sh(repo, "dvc", "repro")) == STAGES[1:]
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "lower learning rate, JPEG quality 85")

    # An experiment with two epochs is listed by `dvc exp show`.
    exp_output = sh(repo, "dvc", "exp", "run", "-S", "train.epochs=2")
    assert stages_run(exp_output) == ["train", "evaluate", "export"]
    shown = sh(repo, "dvc", "exp", "show", "--csv")
    rows = [line.split(",") for line in shown.splitlines()]
    epochs_column = rows[0].index("train.epochs")
    assert "2" in [row[epochs_column] for row in rows[1:] if len(row) > epochs_column], shown

    # Back to the committed state; share it; a fresh clone pulls a workspace that is up to date.
    sh(repo, "git", "reset", "-q", "--hard")
    sh(repo, "dvc", "checkout", "--force")
    sh(repo, "dvc", "push")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, "dvc", "pull")
    status = sh(clone, "dvc", "status")
    assert "up to date" in status, status

    image = next((clone / "data/clean/daisy").glob("*.jpg"))
    prediction = sh(clone, sys.executable, "-m", "imgclf", "predict", str(image))
    assert any(name in prediction for name in ("daisy", "dandelion", "roses", "sunflowers",
                                               "tulips")), prediction


def _prepare_data(workdir: Path, flowers: Path, weights: Path) -> None:
    """Run scrape, clean and label from scratch in `workdir`."""
    shutil.copy2(REPO_ROOT / "params.yaml", workdir / "params.yaml")
    write_tiny_params(workdir, flowers, weights)
    for stage in ("scrape", "clean", "label"):
        sh(workdir, sys.executable, "-m", "imgclf", stage)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_two_runs_from_scratch_are_byte_identical(tmp_path: Path, flowers_mini: Path,
                                                  mobilenet_v2_weights: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for workdir in (first, second):
        workdir.mkdir()
        _prepare_data(workdir, flowers_mini, mobilenet_v2_weights)
    for output in ("data/clean", "data/split"):
        first_files = _file_bytes(first / output)
        assert first_files, f"{output} is empty"
        assert first_files == _file_bytes(second / output), f"{output} differs between runs"

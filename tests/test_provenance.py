"""Where a served model came from: its training commit and its test metrics, read from git and
dvc.lock in a real repository."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from imgclf.core.files import file_md5
from imgclf.serving import provenance

from helpers.dvcrepo import sh


def _lock(model_md5: str, evaluated_md5: str, metrics_md5: str) -> str:
    return yaml.safe_dump({"schema": "2.0", "stages": {
        "train": {"cmd": "python -m imgclf train",
                  "outs": [{"path": "models/model.pt", "md5": model_md5, "size": 1}]},
        "evaluate": {"cmd": "python -m imgclf evaluate",
                     "deps": [{"path": "models/model.pt", "md5": evaluated_md5, "size": 1}],
                     "outs": [{"path": "metrics/evaluate.json", "md5": metrics_md5,
                               "size": 1}]}}})


def _commit(repo: Path, message: str) -> str:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", message)
    return sh(repo, "git", "rev-parse", "HEAD").strip()


def test_training_commit_is_the_first_commit_that_locked_the_model(in_tmp_repo: Path):
    repo = in_tmp_repo
    sh(repo, "git", "init", "-q", "-b", "main")
    (repo / "dvc.lock").write_text(_lock("old", "old", "x"))
    older = _commit(repo, "an older model")
    (repo / "dvc.lock").write_text(_lock("new", "new", "x"))
    trained = _commit(repo, "the model we serve")
    (repo / "README.md").write_text("later work\n")
    _commit(repo, "a commit that leaves dvc.lock alone")
    (repo / "dvc.lock").write_text(_lock("new", "new", "y"))
    _commit(repo, "the same model, re-evaluated")

    assert provenance.training_commit("new") == trained
    assert provenance.training_commit("old") == older
    assert provenance.training_commit("never locked") is None


def test_no_repository_means_no_commit(in_tmp_repo: Path):
    assert provenance.training_commit("anything") is None


def test_test_metrics_only_when_the_lock_says_they_are_this_models(in_tmp_repo: Path):
    metrics = in_tmp_repo / "metrics/evaluate.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"accuracy": 0.9, "n_test": 29}))
    assert provenance.evaluation_metrics("model") is None  # no dvc.lock: unknown

    lock = in_tmp_repo / "dvc.lock"
    lock.write_text(_lock("model", "model", file_md5(metrics)))
    assert provenance.evaluation_metrics("model") == {"accuracy": 0.9, "n_test": 29}
    assert provenance.evaluation_metrics("another model") is None  # evaluated another one

    metrics.write_text(json.dumps({"accuracy": 1.0, "n_test": 29}))  # edited since
    assert provenance.evaluation_metrics("model") is None

"""Resuming training, in process: a run interrupted after epoch 1 (an exception raised from the
epoch callback, a crash driven from inside) goes on from there when started again and ends with
the model an uninterrupted run writes; the resume state is kept only while nothing train
depends on changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from imgclf.core.paths import MODEL_PATH
from imgclf.training.fit import fit
from imgclf.training.resume import RESUME_NAME, fingerprint, train_dependencies

from helpers.config import TINY
from helpers.splits import write_tiny_split

RESUME = MODEL_PATH.with_name(RESUME_NAME)
SETTINGS = {**TINY, "train.arch": "simple_cnn", "train.pretrained": False,
            "train.epochs": 3, "train.patience": 3}


class Crash(Exception):
    pass


def crash_after(last_epoch: int):
    def on_epoch(epoch: int, accuracy: float) -> None:
        if epoch == last_epoch:
            raise Crash

    return on_epoch


def model_digest() -> str:
    return hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()


def test_a_crashed_run_resumes_to_the_uninterrupted_model(in_tmp_repo: Path, flowers_mini: Path,
                                                          make_params, capsys) -> None:
    write_tiny_split(in_tmp_repo, flowers_mini)
    params = make_params(SETTINGS)
    fit(params)
    uninterrupted = model_digest()
    MODEL_PATH.unlink()

    with pytest.raises(Crash):
        fit(params, on_epoch=crash_after(1))
    assert RESUME.is_file() and not MODEL_PATH.exists()
    capsys.readouterr()
    fit(params)
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert model_digest() == uninterrupted
    assert not RESUME.exists()


def test_a_resume_state_from_other_params_is_dropped(in_tmp_repo: Path, flowers_mini: Path,
                                                     make_params, capsys) -> None:
    write_tiny_split(in_tmp_repo, flowers_mini)
    with pytest.raises(Crash):
        fit(make_params(SETTINGS), on_epoch=crash_after(1))
    capsys.readouterr()
    fit(make_params({**SETTINGS, "train.lr": 0.01}))
    assert "resuming" not in capsys.readouterr().out


def test_the_fingerprint_covers_exactly_train_dependencies(in_tmp_repo: Path) -> None:
    for name in ("src/imgclf/training/fit.py", "src/imgclf/serving/app.py", "data/split/val.csv",
                 "src/imgclf/training/__pycache__/fit.cpython-311.pyc"):
        (in_tmp_repo / name).parent.mkdir(parents=True, exist_ok=True)
        (in_tmp_repo / name).write_text("first\n")
    Path("dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"train": {"cmd": "train", "deps": ["src/imgclf/training", "data/split"]}}}))
    deps = train_dependencies()

    def key() -> str:
        return fingerprint(0, {"lr": 0.001}, deps)

    before = key()
    Path("src/imgclf/serving/app.py").write_text("edited, but train does not run it\n")
    Path("src/imgclf/training/__pycache__/fit.cpython-311.pyc").write_text("recompiled\n")
    assert key() == before
    assert fingerprint(1, {"lr": 0.001}, deps) != before  # another seed
    Path("src/imgclf/training/fit.py").write_text("edited: train's code\n")
    assert key() != before
    changed_code = key()
    Path("data/split/val.csv").write_text("another validation list\n")
    assert key() != changed_code

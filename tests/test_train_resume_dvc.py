"""A `dvc repro` whose training is SIGKILLed in the middle of an epoch, then started again,
resumes from the last finished epoch and ends with the very model an uninterrupted run wrote."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from dvcrepo import copy_repository, environment, sh, stages_run, tiny_params

pytestmark = pytest.mark.slow

RESUME = "models/.train-resume.pt"


@pytest.fixture
def repo(tmp_path: Path, flowers_mini: Path, mobilenet_v2_weights: Path) -> Path:
    repo = tmp_path / "repo"
    copy_repository(repo)
    tiny_params(repo, flowers_mini, mobilenet_v2_weights)
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    # 30 steps of 4 images an epoch at 96 px: epochs last seconds, long enough to kill one.
    params["train"].update(epochs=3, batch_size=4, image_size=96, patience=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "tiny pipeline")
    return repo


def outcome(repo: Path) -> tuple[str, dict]:
    """The model's bytes (hashed) and the training summary, less its wall-clock speed."""
    summary = json.loads((repo / "metrics/train/metrics.json").read_text())
    summary.pop("images_per_second")
    return hashlib.sha256((repo / "models/model.pt").read_bytes()).hexdigest(), summary


def kill_in_second_epoch(repo: Path) -> None:
    """Force a training run and SIGKILL DVC and the stage a second after epoch 1 was saved."""
    process = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "train"], cwd=repo,
                               env=environment(repo), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not (repo / RESUME).exists():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_killed_training_resumes_to_the_same_model(repo: Path) -> None:
    assert stages_run(sh(repo, "dvc", "repro", "label")) == ["scrape", "clean", "label"]
    kill_in_second_epoch(repo)
    state = torch.load(repo / RESUME, weights_only=True)
    assert state["epoch"] == 1, "killed outside epoch 2"
    assert not (repo / "models/model.pt").exists()  # DVC removed it before training

    output = sh(repo, "dvc", "repro")
    assert "resuming after epoch 1" in output
    assert stages_run(output) == ["train", "evaluate", "export"]
    assert not (repo / RESUME).exists()  # removed once training ended
    resumed = outcome(repo)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "trained, with a kill on the way")

    # The same training never interrupted (forced: DVC would restore it from its run cache).
    output = sh(repo, "dvc", "repro", "--force", "--single-item", "train")
    assert "resuming" not in output and stages_run(output) == ["train"]
    assert outcome(repo) == resumed
    # The same model bytes: evaluate's input is unchanged, so nothing is out of date.
    assert "Data and pipelines are up to date" in sh(repo, "dvc", "status")


def test_a_resume_file_from_other_params_is_not_used(repo: Path) -> None:
    sh(repo, "dvc", "repro", "label")
    kill_in_second_epoch(repo)
    params_file = repo / "params.yaml"
    params_file.write_text(params_file.read_text().replace("epochs: 3", "epochs: 2"))
    output = sh(repo, "dvc", "repro", "train")
    assert "resuming" not in output
    summary = json.loads((repo / "metrics/train/metrics.json").read_text())
    assert summary["step"] == 2

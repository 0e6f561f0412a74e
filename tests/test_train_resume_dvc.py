"""A `dvc repro` whose training is SIGKILLed between two epochs, then started again,
resumes from the last finished epoch and ends with the very model an uninterrupted run wrote."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from helpers.config import write_tiny_params
from helpers.dvcrepo import copy_repository, environment, sh, stages_run

pytestmark = pytest.mark.slow

RESUME = "models/.train-resume.pt"


@pytest.fixture
def repo(tmp_path: Path, flowers_mini: Path, mobilenet_v2_weights: Path) -> Path:
    repo = tmp_path / "repo"
    copy_repository(repo)
    write_tiny_params(repo, flowers_mini, mobilenet_v2_weights)
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(epochs=3, batch_size=4, patience=3)
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


# Put first on a process's PYTHONPATH: the training process kills itself, and DVC with it (one
# process group), right after it saved epoch 1's state: a crash driven from inside, at a known
# point, instead of a kill after some wall-clock time.
KILL_AFTER_FIRST_SAVE = """
import importlib.abc, importlib.util, os, signal, sys

class KillAfterSave(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "imgclf.training.resume":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            save = module.save_state

            def save_then_die(*args, **kwargs):
                save(*args, **kwargs)
                os.killpg(os.getpgid(0), signal.SIGKILL)

            module.save_state = save_then_die

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, KillAfterSave())
"""


def kill_after_first_epoch(repo: Path, tmp_path: Path) -> None:
    """Force a training run that is SIGKILLed, with DVC, once epoch 1 is saved."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(KILL_AFTER_FIRST_SAVE, encoding="utf-8")
    env = environment(repo, {"PYTHONPATH": f"{hooks}{os.pathsep}{repo / 'src'}"})
    process = subprocess.run(["dvc", "repro", "--force", "--single-item", "train"], cwd=repo,
                             env=env, capture_output=True, text=True, start_new_session=True)
    assert process.returncode == -signal.SIGKILL, process.stdout + process.stderr


def test_killed_training_resumes_to_the_same_model(repo: Path, tmp_path: Path) -> None:
    assert stages_run(sh(repo, "dvc", "repro", "label")) == ["scrape", "clean", "audit", "label"]
    kill_after_first_epoch(repo, tmp_path)
    state = torch.load(repo / RESUME, weights_only=True)
    assert state["epoch"] == 1
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


def test_a_resume_file_from_other_params_is_not_used(repo: Path, tmp_path: Path) -> None:
    sh(repo, "dvc", "repro", "label")
    kill_after_first_epoch(repo, tmp_path)
    params_file = repo / "params.yaml"
    params_file.write_text(params_file.read_text().replace("epochs: 3", "epochs: 2"))
    output = sh(repo, "dvc", "repro", "train")
    assert "resuming" not in output
    summary = json.loads((repo / "metrics/train/metrics.json").read_text())
    assert summary["step"] == 2

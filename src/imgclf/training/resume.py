"""Resuming a killed training run.

After every epoch the whole training state (weights, optimizer, schedule, random state, best
so far, the logged history) goes to .train-resume.pt beside the model, atomically. A run
started again goes on from the last finished epoch and ends with the same model and metrics as
a run never killed (on CPU). The state is used only when nothing the train stage depends on has
changed since: its params (seed and the train section) and its dependencies exactly as dvc.yaml
lists them (code, data, weights): the same list that decides whether `dvc repro` re-runs train.
Editing serving or tuning code leaves a half-finished run usable; editing train's code does not.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from imgclf.core.files import atomic_write_bytes

RESUME_NAME = ".train-resume.pt"  # the working file, beside the model it will become
DVC_YAML = Path("dvc.yaml")


class Resumable(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def train_dependencies(dvc_yaml: Path = DVC_YAML) -> list[Path]:
    """The train stage's deps in dvc.yaml (none where there is no dvc.yaml: a bare folder)."""
    if not dvc_yaml.is_file():
        return []
    stage = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]["train"]
    return [dvc_yaml.parent / entry for entry in stage.get("deps", [])]


def _files(path: Path) -> list[Path]:
    if path.is_dir():  # Python's byte-code caches are not sources (.dvcignore skips them too)
        return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [path] if path.is_file() else []


def fingerprint(seed: int, config: dict[str, Any], dependencies: list[Path]) -> str:
    """What a resumed run must share with the killed one. Files count by name, size and
    modification time: a data folder of many thousands of images is not read again, and a file
    that changed always changes one of these (a false alarm costs only a fresh start)."""
    digest = hashlib.sha256(json.dumps([seed, config], sort_keys=True).encode())
    for path in dependencies:
        for file in _files(path):
            stat = file.stat()
            digest.update(f"{file.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def save_state(training: Resumable, key: str, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"fingerprint": key, **training.state_dict()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state(training: Resumable, key: str, path: Path) -> bool:
    """Restore a killed run's state; False (and the stale file removed) when there is none that
    fits this fingerprint."""
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        usable = state.get("fingerprint") == key
    except Exception:  # noqa: BLE001 - a damaged working file is simply not used
        usable = False
    if not usable:
        path.unlink()
        return False
    training.load_state_dict(state)
    return True

"""Where a model came from, from the repository's own records (git and dvc.lock).

The checkpoint does not name the commit that trained it; dvc.lock does, indirectly: each commit's
lock records the MD5 of the train stage's `models/model.pt`. The training commit of a model is
the first commit whose lock records its MD5. Test metrics belong to a model only when the lock
in the working tree says that the evaluate stage read that very checkpoint and wrote the
metrics file that is there now.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from imgclf.core.files import file_md5
from imgclf.core.paths import EVALUATE_METRICS, MODEL_PATH

LOCK_FILE = Path("dvc.lock")
COMMITS_SEARCHED = 200  # of dvc.lock's history, newest first: a second or two at most


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None  # no git, or it hangs: the commit is then unknown
    return result.stdout if result.returncode == 0 else None


def locked_md5(lock: Any, stage: str, kind: str, path: Path) -> str | None:
    """The MD5 that a parsed dvc.lock records for `path` among a stage's deps or outs."""
    try:
        entries = lock["stages"][stage][kind]
    except (KeyError, TypeError):
        return None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("path") == path.as_posix():
            return entry.get("md5")
    return None


def _parse(text: str | None) -> Any:
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None


def training_commit(checkpoint_md5: str) -> str | None:
    """The first commit whose dvc.lock records this checkpoint as the train stage's output."""
    history = _git("log", f"-n{COMMITS_SEARCHED}", "--format=%H", "--", LOCK_FILE.as_posix())
    found = None
    for commit in (history or "").split():  # newest first
        lock = _parse(_git("show", f"{commit}:{LOCK_FILE.as_posix()}"))
        if locked_md5(lock, "train", "outs", MODEL_PATH) == checkpoint_md5:
            found = commit
        elif found:
            break  # older commits locked another model: `found` introduced this one
    return found


def evaluation_metrics(checkpoint_md5: str) -> dict | None:
    """metrics/evaluate.json, when dvc.lock shows it was computed from this checkpoint."""
    lock = _parse(LOCK_FILE.read_text(encoding="utf-8")) if LOCK_FILE.is_file() else None
    if not EVALUATE_METRICS.is_file() or \
            locked_md5(lock, "evaluate", "deps", MODEL_PATH) != checkpoint_md5 or \
            locked_md5(lock, "evaluate", "outs", EVALUATE_METRICS) != file_md5(EVALUATE_METRICS):
        return None
    try:
        return json.loads(EVALUATE_METRICS.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None

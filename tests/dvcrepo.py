"""Helpers for tests that run real `git` and `dvc` commands in a temporary copy of the repo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def environment(repo: Path | None = None) -> dict[str, str]:
    """The environment of commands run in a test repository: this interpreter first on the PATH
    (dvc.yaml's commands call `python`), bytecode writing ON as on users' machines (a
    `__pycache__` in a dependency folder must not look like a code change), and, given a
    repository copy, that copy's own `src/` imported instead of this checkout's."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if repo is not None and (repo / "src" / "imgclf").is_dir():
        env["PYTHONPATH"] = str(repo / "src")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    return env


def sh(cwd: Path, *args: str) -> str:
    """Run a command, fail the test with its output when it fails, return stdout + stderr."""
    result = subprocess.run(args, cwd=cwd, env=environment(cwd), capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{output}"
    return output


def stages_run(repro_output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", repro_output)


def copy_repository(destination: Path) -> None:
    """Copy what git would see in this checkout (tracked and untracked-but-not-ignored)."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=REPO_ROOT, capture_output=True,
                             check=True).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)

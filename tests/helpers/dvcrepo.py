"""Helpers for tests that run real `git` and `dvc` commands in a temporary copy of the repo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from helpers.paths import REPO_ROOT

# botocore skips a missing config or credentials file (but refuses /dev/null).
NO_AWS_FILE = "/nonexistent/imgclf-tests/aws"


def environment(repo: Path | None = None,
                extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of commands run in a test repository: this interpreter first on the PATH
    (dvc.yaml's commands call `python`), bytecode writing ON as on users' machines (a
    `__pycache__` in a dependency folder must not look like a code change), and, given a
    repository copy, that copy's own `src/` imported instead of this checkout's.

    S3 credentials come only from `extra` (a None value removes a variable): the developer's own
    AWS files are hidden, and botocore never asks the cloud metadata address (169.254.169.254)
    for credentials, so a test without them fails at once and sends nothing off 127.0.0.1."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if repo is not None and (repo / "src" / "imgclf").is_dir():
        env["PYTHONPATH"] = str(repo / "src")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=NO_AWS_FILE,
               AWS_SHARED_CREDENTIALS_FILE=NO_AWS_FILE)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY"):
        env.pop(name, None)
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run(cwd: Path, *args: str, env: Mapping[str, str | None] | None = None,
        ) -> tuple[int, str]:
    """Run a command in `cwd` (extra variables in `env`); return its exit code and output."""
    result = subprocess.run(args, cwd=cwd, env=environment(cwd, env), capture_output=True,
                            text=True)
    return result.returncode, result.stdout + result.stderr


def sh(cwd: Path, *args: str, env: Mapping[str, str | None] | None = None) -> str:
    """Run a command, fail the test with its output when it fails, return stdout + stderr."""
    code, output = run(cwd, *args, env=env)
    assert code == 0, f"{' '.join(args)} failed ({code}):\n{output}"
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


def tiny_repository(repo: Path, flowers: Path, weights: Path) -> Path:
    """A committed git copy of this repository with the tiny params (helpers.config), ready for
    `dvc repro`."""
    from helpers.config import write_tiny_params  # config needs nothing from here: no cycle

    copy_repository(repo)
    write_tiny_params(repo, flowers, weights)
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "tiny params")
    return repo

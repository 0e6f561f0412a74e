"""The committed dvc.lock matches the committed code and params (issue: a stale lock).

A fresh clone has no DVC-tracked outputs, so `dvc status` may list them, and the stage
dependencies that are other stages' outputs, as deleted. Anything else (a changed code or data
dependency, a changed param, a changed command, a git-tracked metrics file that differs from
the lock) means someone changed the pipeline without `dvc repro` and committing dvc.lock.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from helpers.dvcrepo import copy_repository, sh
from helpers.paths import REPO_ROOT


def stage_outputs(dvc_yaml: Path) -> set[str]:
    """Every path that some stage of dvc.yaml writes (outs, metrics, plots)."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    paths = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def produced_by_a_stage(path: str, outputs: set[str]) -> bool:
    """An output, or a file inside an output folder (data/clean/manifest.csv)."""
    return any(path == output or path.startswith(f"{output}/") for output in outputs)


def stale_entries(status: dict, outputs: set[str]) -> list[str]:
    """What in `dvc status --json` is more than a missing output: one line per problem."""
    problems = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):  # e.g. "always changed", "changed checksum"
                problems.append(f"{stage}: {change}")
                continue
            for kind, detail in change.items():
                if not isinstance(detail, dict):
                    problems.append(f"{stage}: {kind} {detail}")
                    continue
                for path, state in detail.items():
                    missing_output = (state in ("deleted", "not in cache")
                                      and produced_by_a_stage(path, outputs))
                    if kind in ("changed deps", "changed outs") and missing_output:
                        continue
                    problems.append(f"{stage}: {kind}: {path} {state}")
    return problems


def test_stale_entries_tolerate_only_missing_outputs():
    outputs = {"data/raw", "models/model.pt"}
    status = {"clean": [{"changed deps": {"data/raw/manifest.csv": "deleted"}},
                        {"changed outs": {"data/clean": "deleted"}}],
              "audit": [{"changed deps": {"data/cleaner/manifest.csv": "deleted"}}],
              "train": [{"changed deps": {"src/imgclf/stages/train.py": "modified"}},
                        {"changed deps": {"params.yaml": {"train.lr": "modified"}}},
                        {"changed outs": {"models/model.pt": "not in cache"}},
                        "changed command"]}
    assert stale_entries(status, outputs | {"data/clean"}) == [
        "audit: changed deps: data/cleaner/manifest.csv deleted",
        "train: changed deps: src/imgclf/stages/train.py modified",
        "train: changed deps: params.yaml {'train.lr': 'modified'}",
        "train: changed command"]


def lock_problems(repo: Path) -> list[str]:
    """What `dvc status` in a fresh copy of the repository shows beyond missing outputs."""
    sh(repo, "git", "init", "-q")
    # Bytecode beside the sources, as on any machine that ran the code, must not count.
    sh(repo, sys.executable, "-m", "compileall", "-q", "src")
    status = json.loads(sh(repo, "dvc", "status", "--json").strip().splitlines()[-1])
    return stale_entries(status, stage_outputs(repo / "dvc.yaml"))


def test_committed_lock_matches_code_and_params(tmp_path: Path):
    assert (REPO_ROOT / "dvc.lock").is_file(), "dvc.lock is missing: run `dvc repro` and commit it"
    repo = tmp_path / "repo"
    copy_repository(repo)
    problems = lock_problems(repo)
    assert not problems, ("dvc.lock is stale: run `dvc repro` (or `dvc commit` when only code "
                          "that does not change results moved) and commit dvc.lock:\n  "
                          + "\n  ".join(problems))


def test_a_code_or_params_change_without_repro_is_caught(tmp_path: Path):
    repo = tmp_path / "repo"
    copy_repository(repo)
    with (repo / "src/imgclf/stages/evaluate.py").open("a", encoding="utf-8") as handle:
        handle.write("# changed\n")
    params = repo / "params.yaml"
    params.write_text(params.read_text(encoding="utf-8").replace("  lr: ", "  lr: 0.5 #", 1),
                      encoding="utf-8")
    problems = "\n".join(lock_problems(repo))
    assert "evaluate: changed deps: src/imgclf/stages/evaluate.py modified" in problems
    # dvc.yaml lists params by whole section, and DVC names the section that changed.
    assert "train: changed deps: params.yaml {'train': 'modified'}" in problems

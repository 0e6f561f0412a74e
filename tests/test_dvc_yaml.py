"""dvc.yaml matches the code: each stage's code deps are exactly the `src/` files it runs, and its
params entries are exactly the params it reads.

Each stage really runs (tiny data: three flowers-mini classes, 32 px, one epoch) in a fresh
process that records which imgclf modules were loaded and which params it read, through a proxy
around the validated params. A stage that starts importing a new module, or reading another
section's key, fails here until dvc.yaml says so — otherwise `dvc repro` would miss a change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from dvcrepo import environment

STAGES = ("scrape", "clean", "label", "train", "evaluate", "export")
SOURCE_ROOT = REPO_ROOT / "src"

# Runs one stage like `python -m imgclf STAGE` and prints what it loaded and read, as JSON.
RECORDER = """
import json, sys
from pydantic import BaseModel
import imgclf.__main__ as cli

read = set()

class Recording:
    def __init__(self, target, path):
        self._target, self._path = target, path

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if name not in type(self._target).model_fields:
            if name == "model_dump":  # reads every key of the section
                read.add(self._path)
            return value
        path = f"{self._path}.{name}" if self._path else name
        if isinstance(value, BaseModel):
            return Recording(value, path)
        read.add(path)
        return value

real_load = cli.load_params
cli.load_params = lambda *args, **kwargs: Recording(real_load(*args, **kwargs), "")
status = cli.main([sys.argv[1]])
modules = sorted(module.__file__ for name, module in list(sys.modules.items())
                 if name.partition(".")[0] == "imgclf" and getattr(module, "__file__", None))
print(json.dumps({"status": status, "modules": modules, "read": sorted(read)}))
"""


def declared_code(stage: dict) -> set[str]:
    """The stage's deps under src/, directories expanded to their Python files."""
    files = set()
    for dep in stage["deps"]:
        path = REPO_ROOT / dep
        if not dep.startswith("src/"):
            continue
        files |= {p.relative_to(REPO_ROOT).as_posix() for p in path.rglob("*.py")} \
            if path.is_dir() else {dep}
    return files


def covered(key: str, entries: list[str]) -> bool:
    """A params entry covers itself and every key below it (`train` covers `train.lr`)."""
    return any(key == entry or key.startswith(entry + ".") for entry in entries)


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory: pytest.TempPathFactory, flowers_mini: Path,
               mobilenet_v2_weights: Path) -> dict[str, dict]:
    """Each stage run once, in order, in one scratch workspace; what each loaded and read."""
    workspace = tmp_path_factory.mktemp("workspace")
    images = workspace / "images"
    for name in ("daisy", "roses", "tulips"):
        (images / name).mkdir(parents=True)
        for photo in sorted((flowers_mini / name).glob("*.jpg"))[:10]:
            shutil.copy2(photo, images / name / photo.name)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["classes"] = ""
    params["scrape"].update(source="folder", folder=str(images))
    params["clean"].update(min_side=32, short_side=48, workers=1)
    params["label"].update(val_size=0.2, test_size=0.2)
    params["train"].update(arch="mobilenet_v2", pretrained=str(mobilenet_v2_weights), epochs=1,
                           batch_size=8, image_size=32, workers=0, device="cpu")
    params["evaluate"].update(gallery_size=2)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    runs = {}
    for stage in STAGES:
        result = subprocess.run([sys.executable, "-c", RECORDER, stage], cwd=workspace,
                                env=environment(REPO_ROOT), capture_output=True, text=True)
        assert result.returncode == 0, f"{stage} failed:\n{result.stdout}{result.stderr}"
        runs[stage] = json.loads(result.stdout.strip().splitlines()[-1])
        assert runs[stage]["status"] == 0, f"{stage}: {result.stderr}"
    return runs


@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_are_the_modules_the_stage_runs(stage_runs: dict, stage: str) -> None:
    spec = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"][stage]
    loaded = {Path(file).resolve().relative_to(REPO_ROOT).as_posix()
              for file in stage_runs[stage]["modules"]}
    declared = declared_code(spec)
    assert loaded == declared, (f"{stage}: runs but does not list {sorted(loaded - declared)}; "
                                f"lists but does not run {sorted(declared - loaded)}")


@pytest.mark.parametrize("stage", STAGES)
def test_params_entries_are_the_params_the_stage_reads(stage_runs: dict, stage: str) -> None:
    entries = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8")
                             )["stages"][stage]["params"]
    read = stage_runs[stage]["read"]
    assert read, f"{stage} read no params at all: is the recorder broken?"
    unlisted = [key for key in read if not covered(key, entries)]
    unread = [entry for entry in entries if not any(covered(key, [entry]) for key in read)]
    assert not unlisted and not unread, (f"{stage}: reads but does not list {unlisted}; "
                                         f"lists but never reads {unread}")

"""dvc.yaml matches the code: each stage's code deps are the `src/` files it runs, and its params
entries are exactly the params it reads.

Each stage really runs (the tiny configuration on three flowers-mini classes) in a fresh process,
as dvc.yaml's command starts it, recording which imgclf files were loaded and which params it
read, through a proxy around the validated params. A stage that starts importing a new module,
or reading another section's key, fails here until dvc.yaml says so: otherwise `dvc repro` would
miss a change. The same lists give docs/code-dependencies.md, the table of which stages re-run
when a file changes.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imgclf.core.paths import CLEAN_DIR, CLEAN_MANIFEST, RAW_DIR, RAW_MANIFEST

from helpers.config import TINY, write_params
from helpers.dvcrepo import environment
from helpers.paths import REPO_ROOT

STAGES = ("scrape", "clean", "audit", "label", "train", "evaluate", "export")
PACKAGE = REPO_ROOT / "src" / "imgclf"
TABLE = REPO_ROOT / "docs" / "code-dependencies.md"
MAX_CODE_ENTRIES = 6
# Code that no stage may depend on: changing it must re-run nothing.
NO_STAGE = ("src/imgclf/__main__.py", "src/imgclf/tuning/", "src/imgclf/serving/app.py",
            "src/imgclf/serving/predict.py", "src/imgclf/serving/provenance.py",
            "src/imgclf/config/all.py", "src/imgclf/review/")

# Runs one stage as `python -m imgclf.stages.STAGE` and prints what it loaded and read, as JSON.
RECORDER = """
import json, runpy, sys
from pydantic import BaseModel
import imgclf.core.cli as cli

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
stage = sys.argv.pop(1)  # the stage's own command line has no arguments
try:
    runpy.run_module(f"imgclf.stages.{stage}", run_name="__main__", alter_sys=True)
    status = 0
except SystemExit as exit:
    status = exit.code
files = sorted({module.__file__ for module in list(sys.modules.values())
                if "/src/imgclf/" in (getattr(module, "__file__", None) or "")})
print(json.dumps({"status": status, "modules": files, "read": sorted(read)}))
"""


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def code_entries(stage: dict) -> list[str]:
    return [dep for dep in stage["deps"] if dep.startswith("src/")]


def covers(entry: str, file: str) -> bool:
    """A file entry covers itself; a folder entry every file below it."""
    return file == entry or file.startswith(entry.rstrip("/") + "/")


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) \
        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)


def source_files() -> list[str]:
    return sorted(path.relative_to(REPO_ROOT).as_posix() for path in PACKAGE.rglob("*.py")
                  if "__pycache__" not in path.parts)


def covered_param(key: str, entries: list[str]) -> bool:
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
    shutil.copy2(REPO_ROOT / "params.yaml", workspace / "params.yaml")
    write_params(workspace, {**TINY, "classes": "", "scrape.source": "folder",
                             "scrape.folder": str(images),
                             "train.pretrained": str(mobilenet_v2_weights),
                             "audit.pretrained": str(mobilenet_v2_weights)})
    runs = {}
    for stage in STAGES:
        result = subprocess.run([sys.executable, "-c", RECORDER, stage], cwd=workspace,
                                env=environment(REPO_ROOT), capture_output=True, text=True)
        assert result.returncode == 0, f"{stage} failed:\n{result.stdout}{result.stderr}"
        runs[stage] = json.loads(result.stdout.strip().splitlines()[-1])
        assert runs[stage]["status"] == 0, f"{stage}: {result.stderr}"
        runs[stage]["files"] = sorted(Path(file).resolve().relative_to(REPO_ROOT).as_posix()
                                      for file in runs[stage]["modules"])
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_are_the_modules_the_stage_runs(stage_runs: dict, stage: str) -> None:
    entries = code_entries(dvc_stages()[stage])
    loaded = [file for file in stage_runs[stage]["files"]
              if not (file.endswith("/__init__.py") and docstring_only(REPO_ROOT / file))]
    assert f"src/imgclf/stages/{stage}.py" in loaded, "the recorder saw no stage: is it broken?"
    unlisted = [file for file in loaded if not any(covers(entry, file) for entry in entries)]
    unused = [entry for entry in entries if not any(covers(entry, file) for file in loaded)]
    assert not unlisted and not unused, (f"{stage}: runs but does not list {unlisted}; "
                                         f"lists but does not run {unused}")


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_params_entries_are_the_params_the_stage_reads(stage_runs: dict, stage: str) -> None:
    entries = dvc_stages()[stage]["params"]
    read = stage_runs[stage]["read"]
    assert read, f"{stage} read no params at all: is the recorder broken?"
    unlisted = [key for key in read if not covered_param(key, entries)]
    unread = [entry for entry in entries if not any(covered_param(key, [entry]) for key in read)]
    assert not unlisted and not unread, (f"{stage}: reads but does not list {unlisted}; "
                                         f"lists but never reads {unread}")


def test_each_stage_lists_few_code_entries() -> None:
    for name, stage in dvc_stages().items():
        assert len(code_entries(stage)) <= MAX_CODE_ENTRIES, (name, code_entries(stage))
        assert stage["cmd"] == f"python -m imgclf.stages.{name}", stage["cmd"]


def test_picture_folders_are_read_through_their_manifests() -> None:
    # DVC checks a folder named in dvc.yaml file by file, once for every stage that names it
    # (docs/benchmarks.md, "Scale": a no-op repro at 100,000 pictures took 20.7 s that way and
    # 12.9 s this way). A stage that reads pictures names the manifest that lists their hashes.
    for name, stage in dvc_stages().items():
        folders = [dep for dep in stage["deps"] if dep.rstrip("/") in (str(RAW_DIR),
                                                                      str(CLEAN_DIR))]
        assert not folders, (f"{name} names {folders} as a dependency: name the manifest "
                             f"({RAW_MANIFEST}, {CLEAN_MANIFEST}) instead")
    readers = [name for name, stage in dvc_stages().items()
               if str(CLEAN_MANIFEST) in stage["deps"]]
    assert readers == ["audit", "label", "train", "evaluate", "export"], readers


def test_package_init_files_hold_only_a_docstring() -> None:
    # They are loaded by every stage but listed by none: they must not hold code.
    holding_code = [path for path in PACKAGE.rglob("__init__.py")
                    if "__pycache__" not in path.parts and not docstring_only(path)]
    assert not holding_code


def rerun_table() -> str:
    stages = dvc_stages()
    lines = ["# Which stages re-run when a source file changes",
             "",
             "Generated by `tests/test_dvc_yaml.py` from `dvc.yaml` (it fails, and rewrites this "
             "file, when the two differ). A file that re-runs no stage is used only by commands "
             "outside the pipeline (predict, serve, tune) or by tests. Package `__init__.py` "
             "files hold only a docstring and re-run nothing.",
             "",
             "| file | stages that re-run |",
             "|---|---|"]
    for file in source_files():
        if file.endswith("/__init__.py"):
            continue
        rerun = [name for name, stage in stages.items()
                 if any(covers(entry, file) for entry in code_entries(stage))]
        lines.append(f"| `{file.removeprefix('src/imgclf/')}` | {', '.join(rerun) or '—'} |")
    return "\n".join(lines) + "\n"


def test_serving_and_tuning_code_re_runs_no_stage() -> None:
    stages = dvc_stages()
    for file in source_files():
        if any(covers(prefix.rstrip("/"), file) for prefix in NO_STAGE):
            rerun = [name for name, stage in stages.items()
                     if any(covers(entry, file) for entry in code_entries(stage))]
            assert not rerun, f"{file} would re-run {rerun}"


def test_the_docs_table_is_up_to_date() -> None:
    expected = rerun_table()
    current = TABLE.read_text(encoding="utf-8") if TABLE.is_file() else ""
    if current != expected:
        TABLE.write_text(expected, encoding="utf-8")
        pytest.fail(f"{TABLE.relative_to(REPO_ROOT)} was out of date with dvc.yaml; it has been "
                    "rewritten: commit it")

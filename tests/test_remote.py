"""Sharing data and models through real S3: every flow of the README's "Storage" section, and
what happens when storage fails, with SeaweedFS started on 127.0.0.1 by the tests.

One tiny pipeline is trained twice (two commits) for the whole module and pushed to S3; each test
works in its own fresh `git clone` of it. Failure tests push from a clone that shares the
origin's cache (`dvc cache dir`), so nothing is trained again.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.dvcrepo import copy_repository, run, sh, stages_run
from helpers.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from s3_server import SeaweedS3  # noqa: E402

from helpers.config import write_tiny_params
from helpers.splits import FLOWERS

pytestmark = pytest.mark.slow

MODEL = "models/model.pt"
ARTIFACT = "image-classifier"  # declared in dvc.yaml


@dataclasses.dataclass(frozen=True)
class Origin:
    work: Path   # where the pipeline ran; its cache holds both models
    hub: Path    # the bare git repository everyone clones from and pushes to
    first: str   # the commit of the first model
    second: str  # the commit of the second model (main)
    s3: SeaweedS3

    def clone(self, destination: Path) -> Path:
        sh(destination.parent, "git", "clone", "-q", str(self.hub), str(destination))
        return destination

    def clone_sharing_cache(self, destination: Path) -> Path:
        """A clone whose DVC cache is the origin's (nothing to pull before a push)."""
        self.clone(destination)
        sh(destination, "dvc", "cache", "dir", "--local", str(self.work / ".dvc/cache"))
        return destination


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with SeaweedS3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, s3: SeaweedS3, flowers_mini: Path,
           mobilenet_v2_weights: Path) -> Origin:
    root = tmp_path_factory.mktemp("origin")
    work, hub = root / "work", root / "hub.git"
    copy_repository(work)
    write_tiny_params(work, flowers_mini, mobilenet_v2_weights)
    sh(work, "git", "init", "-q", "-b", "main")
    # The committed S3 remote, pointed at this server; the credentials stay in the environment.
    sh(work, "dvc", "remote", "modify", "s3", "endpointurl", s3.endpoint)
    sh(work, "dvc", "remote", "modify", "s3", "url", "s3://imgclf/flows")
    sh(work, "dvc", "remote", "default", "s3")
    sh(work, "git", "add", "-A")
    sh(work, "git", "commit", "-q", "-m", "tiny pipeline on S3")
    sh(work, "dvc", "repro", env=s3.env())
    first = _commit_all(work, "first model")
    sh(work, "gto", "register", ARTIFACT, "--version", "v1.0.0")  # an annotated git tag
    _set_param(work / "params.yaml", "train", "lr", 0.003)
    # With the cache linked into the workspace, the stages replace their outputs, never edit them.
    assert stages_run(sh(work, "dvc", "repro")) == ["train", "evaluate", "export"]
    second = _commit_all(work, "second model")
    sh(work, "gto", "register", ARTIFACT, "--version", "v1.1.0")
    pushed = sh(work, "dvc", "push", "--all-commits", env=s3.env())
    assert re.search(r"\d+ files? pushed", pushed), pushed
    sh(root, "git", "init", "-q", "--bare", "-b", "main", str(hub))
    sh(work, "git", "remote", "add", "origin", str(hub))
    sh(work, "git", "push", "-q", "--follow-tags", "origin", "main")
    return Origin(work=work, hub=hub, first=first, second=second, s3=s3)


def _commit_all(repo: Path, message: str) -> str:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", message)
    return sh(repo, "git", "rev-parse", "HEAD").strip()


def _set_param(params_file: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    params[section][key] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _locked_md5(repo: Path, rev: str, path: str) -> str:
    """The md5 that dvc.lock at `rev` records for the output `path`."""
    lock = yaml.safe_load(sh(repo, "git", "show", f"{rev}:dvc.lock"))
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return out["md5"]
    raise AssertionError(f"{path} not in dvc.lock at {rev}")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same_outputs(clone: Path, work: Path) -> None:
    """The clone's pulled model and data are byte for byte the origin's."""
    assert (clone / MODEL).read_bytes() == (work / MODEL).read_bytes()
    for folder in ("data/clean", "data/split"):
        assert _tree_bytes(clone / folder) == _tree_bytes(work / folder), folder


# --- flows ----------------------------------------------------------------------------------

def test_fresh_clone_pulls_a_clean_workspace_that_needs_no_repro(origin: Origin, tmp_path: Path):
    clone = origin.clone(tmp_path / "clone")
    sh(clone, "dvc", "pull", env=origin.s3.env())
    assert "Data and pipelines are up to date" in sh(clone, "dvc", "status")
    assert stages_run(sh(clone, "dvc", "repro")) == []
    _assert_same_outputs(clone, origin.work)

    # cache.type: each image is in the workspace as a hard link to its cache object (one copy on
    # disk), read-only so that an edit in place cannot corrupt the cache.
    image = next((clone / "data/clean/daisy").glob("*.jpg"))
    digest = _md5(image)
    cached = clone / ".dvc/cache/files/md5" / digest[:2] / digest[2:]
    assert image.stat().st_ino == cached.stat().st_ino and image.stat().st_nlink == 2
    assert stat.S_IMODE(image.stat().st_mode) & 0o222 == 0


def test_pull_only_the_model_and_predict_without_image_data(origin: Origin, tmp_path: Path,
                                                            flowers_mini: Path):
    clone = origin.clone(tmp_path / "clone")
    sh(clone, "dvc", "pull", MODEL, env=origin.s3.env())
    assert (clone / MODEL).is_file()
    assert not any((clone / "data" / name).exists() for name in ("raw", "clean", "split"))
    photo = next((flowers_mini / "sunflowers").glob("*.jpg"))
    printed = sh(clone, sys.executable, "-m", "imgclf", "predict", str(photo))
    assert photo.name in printed, printed
    assert any(name in printed for name in FLOWERS), printed

    # One stage's outputs: `dvc pull train` fetches the model and nothing it was made from.
    other = origin.clone(tmp_path / "other")
    sh(other, "dvc", "pull", "train", env=origin.s3.env())
    assert (other / MODEL).read_bytes() == (origin.work / MODEL).read_bytes()
    assert not (other / "data/clean").exists() and not (other / "data/split").exists()


def test_artifacts_get_downloads_the_model_from_another_directory(origin: Origin,
                                                                  tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The latest registered version (v1.1.0: the second model), then an older one by version.
    sh(elsewhere, "dvc", "artifacts", "get", str(origin.hub), ARTIFACT, "-o", "latest.pt",
       env=origin.s3.env())
    assert (elsewhere / "latest.pt").read_bytes() == (origin.work / MODEL).read_bytes()
    sh(elsewhere, "dvc", "artifacts", "get", str(origin.hub), ARTIFACT, "--rev", "v1.0.0",
       "-o", "first.pt", env=origin.s3.env())
    assert _md5(elsewhere / "first.pt") == _locked_md5(origin.work, origin.first, MODEL)
    assert not (elsewhere / ".dvc").exists() and not (elsewhere / ".git").exists()


def test_an_older_commits_model_comes_back(origin: Origin, tmp_path: Path):
    clone = origin.clone(tmp_path / "clone")
    first_md5 = _locked_md5(clone, origin.first, MODEL)
    second_md5 = _locked_md5(clone, origin.second, MODEL)
    assert first_md5 != second_md5
    sh(clone, "dvc", "pull", MODEL, env=origin.s3.env())
    assert _md5(clone / MODEL) == second_md5

    sh(clone, "git", "checkout", "-q", origin.first)
    sh(clone, "dvc", "pull", MODEL, env=origin.s3.env())  # not in this clone's cache yet
    assert _md5(clone / MODEL) == first_md5
    sh(clone, "git", "checkout", "-q", "main")
    sh(clone, "dvc", "checkout", MODEL)                    # both are in the cache now
    assert _md5(clone / MODEL) == second_md5
    sh(clone, "git", "checkout", "-q", origin.first)
    sh(clone, "dvc", "checkout", MODEL)
    assert _md5(clone / MODEL) == first_md5


def _wait_for_queue(repo: Path, timeout: float = 900.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sh(repo, "dvc", "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(3)
    raise AssertionError(f"queue still busy after {timeout:.0f} s:\n{status}")


def _experiments(repo: Path) -> list[dict[str, str]]:
    """`dvc exp show --csv` rows of the experiments (not the baseline commits)."""
    shown = sh(repo, "dvc", "exp", "show", "--csv")
    return [row for row in csv.DictReader(io.StringIO(shown)) if row.get("rev") and
            row.get("Experiment")]


def test_queued_grid_shows_four_experiments_and_one_travels_through_git_and_s3(
        origin: Origin, tmp_path: Path):
    clone = origin.clone(tmp_path / "clone")
    env = origin.s3.env()
    sh(clone, "dvc", "pull", env=env)  # the data the experiments train on
    sh(clone, "dvc", "exp", "run", "--queue", "-S", "train.lr=1e-4,3e-4",
       "-S", "train.batch_size=16,32", env=env)
    sh(clone, "dvc", "queue", "start", "-j", "1", env=env)
    status = _wait_for_queue(clone)
    assert "Failed" not in status, status

    experiments = _experiments(clone)
    grid = {(float(row["train.lr"]), int(row["train.batch_size"])) for row in experiments}
    assert grid == {(1e-4, 16), (1e-4, 32), (3e-4, 16), (3e-4, 32)}, experiments
    assert all(0.0 <= float(row["accuracy"]) <= 1.0 for row in experiments), experiments

    chosen = next(row for row in experiments
                  if (float(row["train.lr"]), int(row["train.batch_size"])) == (3e-4, 16))
    name = chosen["Experiment"]
    sh(clone, "dvc", "exp", "push", "origin", name, env=env)  # git refs to hub, cache to S3

    other = origin.clone(tmp_path / "other")
    assert not any((other / ".dvc/cache").glob("files/md5/*/*"))
    sh(other, "dvc", "exp", "pull", "origin", name, env=env)  # git refs from hub, cache from S3
    sh(other, "dvc", "exp", "apply", name)
    assert "Data and pipelines are up to date" in sh(other, "dvc", "status")
    metrics = yaml.safe_load((other / "metrics/evaluate.json").read_text(encoding="utf-8"))
    assert f"{metrics['accuracy']:.5g}" == f"{float(chosen['accuracy']):.5g}"
    params = yaml.safe_load((other / "params.yaml").read_text(encoding="utf-8"))
    assert (float(params["train"]["lr"]), params["train"]["batch_size"]) == (3e-4, 16)


# --- failures -------------------------------------------------------------------------------

def _cache_digest(cache: Path) -> dict[str, int]:
    return {p.relative_to(cache).as_posix(): p.stat().st_size
            for p in cache.rglob("*") if p.is_file()}


def _bucket_keys(server: SeaweedS3, prefix: str) -> list[str]:
    pages = server.client().get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_wrong_or_missing_credentials_fail_clearly_and_lose_nothing(origin: Origin,
                                                                   tmp_path: Path):
    clone = origin.clone_sharing_cache(tmp_path / "clone")
    sh(clone, "dvc", "remote", "modify", "--local", "s3", "url", "s3://imgclf/credentials")
    cache_before = _cache_digest(origin.work / ".dvc/cache")
    good = origin.s3.env()

    code, output = run(clone, "dvc", "push", env={**good, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert code != 0 and "Forbidden" in output, output
    code, output = run(clone, "dvc", "push", env={**good, "AWS_ACCESS_KEY_ID": "nobody"})
    assert code != 0 and "Forbidden" in output, output
    code, output = run(clone, "dvc", "push")  # no credentials at all
    assert code != 0 and "Unable to locate credentials" in output, output
    assert _bucket_keys(origin.s3, "credentials/") == []
    assert _cache_digest(origin.work / ".dvc/cache") == cache_before

    # Credentials in the git-ignored .dvc/config.local work as well as the environment.
    sh(clone, "dvc", "remote", "modify", "--local", "s3", "access_key_id",
       good["AWS_ACCESS_KEY_ID"])
    sh(clone, "dvc", "remote", "modify", "--local", "s3", "secret_access_key",
       good["AWS_SECRET_ACCESS_KEY"])
    assert "config.local" in sh(clone, "git", "check-ignore", ".dvc/config.local")
    assert "files pushed" in sh(clone, "dvc", "push")
    assert "nothing to commit" in sh(clone, "git", "status")

    fresh = origin.clone(tmp_path / "fresh")
    sh(fresh, "dvc", "remote", "modify", "--local", "s3", "url", "s3://imgclf/credentials")
    sh(fresh, "dvc", "pull", env=good)
    _assert_same_outputs(fresh, origin.work)


def test_missing_bucket_or_remote_folder_fails_clearly(origin: Origin, tmp_path: Path):
    clone = origin.clone_sharing_cache(tmp_path / "clone")
    sh(clone, "dvc", "remote", "modify", "--local", "s3", "url", "s3://no-such-bucket/dvc")
    code, output = run(clone, "dvc", "push", env=origin.s3.env())
    assert code != 0 and "bucket does not exist" in output, output

    fresh = origin.clone(tmp_path / "fresh")
    missing = tmp_path / "no-such-folder"
    sh(fresh, "dvc", "remote", "add", "--local", "gone", str(missing))
    code, output = run(fresh, "dvc", "pull", "-r", "gone", MODEL)
    assert code != 0 and "failed to pull" in output and "Missing cache files" in output, output
    assert not (fresh / MODEL).exists() and not missing.exists()


def _can_unshare() -> bool:
    probe = subprocess.run(["unshare", "--map-root-user", "--mount", "true"],
                           capture_output=True)
    return probe.returncode == 0


# Run inside a private mount namespace (unshare), so the mounts vanish with it, as root or not.
FULL_AND_READ_ONLY = r"""
set -u
mount -t tmpfs -o size=512k imgclf-full "$FULL"
dvc push -r full > "$LOGS/full.log" 2>&1; echo $? > "$LOGS/full.rc"
mount -o remount,size=256m "$FULL"                      # space freed: the same push again
dvc push -r full > "$LOGS/full-again.log" 2>&1; echo $? > "$LOGS/full-again.rc"
cp -a "$FULL/." "$KEEP/"
mount --bind "$READ_ONLY" "$READ_ONLY" && mount -o remount,bind,ro "$READ_ONLY"
dvc push -r readonly > "$LOGS/ro.log" 2>&1; echo $? > "$LOGS/ro.rc"
mount -o remount,bind,rw "$READ_ONLY"
dvc push -r readonly > "$LOGS/ro-again.log" 2>&1; echo $? > "$LOGS/ro-again.rc"
"""



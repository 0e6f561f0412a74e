"""End to end through `dvc repro` with the yandex source, real Chromium and a local server:
a killed scrape resumes without re-fetching what it saved, a re-run downloads nothing, and a new
class is the only one scraped while the other classes' files stay byte-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from imgclf.core.files import read_csv
from imgclf.stages.scrape import read_journal

from helpers.dvcrepo import copy_repository, environment, sh, stages_run
from helpers.webfake import FakeWeb, local_settings, write_classes

pytestmark = pytest.mark.slow

CLASSES = "data/classes/flowers.csv"


@pytest.fixture
def web(flowers_mini: Path):
    with FakeWeb(flowers_mini) as server:
        yield server


@pytest.fixture
def repo(tmp_path: Path, web: FakeWeb) -> Path:
    repo = tmp_path / "repo"
    copy_repository(repo)
    write_classes(repo / CLASSES, ["daisy", "roses"])
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["classes"] = CLASSES
    params["scrape"].update(local_settings(web), source="yandex", workers=2, similar_from=2,
                            similar_per_result=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    sh(repo, "git", "init", "-q", "-b", "main")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "scrape a local web")
    return repo


def kill_while_downloading(repo: Path, rows: int) -> None:
    """Start `dvc repro scrape` and SIGKILL it (DVC and the stage) once `rows` are journaled."""
    journal = repo / "data/raw/.manifest.journal.csv"
    process = subprocess.Popen(["dvc", "repro", "scrape"], cwd=repo, env=environment(repo),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # its own group: one kill reaches all
    deadline = time.monotonic() + 120
    try:
        while len(read_journal(journal)) < rows:
            assert process.poll() is None, "the scrape ended before it could be killed"
            assert time.monotonic() < deadline, "the scrape saved nothing in time"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def expected_urls(web: FakeWeb, name: str) -> set[str]:
    """A class's search results and the first 3 similar images of its first 2 results."""
    first = web.results(name)
    return set(first) | {url for result in first[:2] for url in web.similar(result)[:3]}


def photo_requests(web: FakeWeb) -> list[str]:
    return [path for path in web.requests if path.startswith("/img/")]


def raw_files(repo: Path) -> dict[str, bytes]:
    root = repo / "data/raw"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_kill_resume_rerun_and_add_a_class(repo: Path, web: FakeWeb) -> None:
    # Killed in the middle: what it journaled is on disk and is not fetched again.
    web.image_delay = 0.1
    kill_while_downloading(repo, rows=6)
    saved = read_journal(repo / "data/raw/.manifest.journal.csv")
    saved_files = {r.file: (repo / "data/raw" / r.file).read_bytes() for r in saved if r.file}
    assert len(saved) >= 6 and saved_files
    assert not (repo / "data/raw/manifest.csv").exists()  # it was killed before the end
    web.image_delay = 0.0
    web.requests.clear()
    assert stages_run(sh(repo, "dvc", "repro", "scrape")) == ["scrape"]
    assert not {web.url(path) for path in photo_requests(web)} & {r.origin for r in saved}
    files = raw_files(repo)
    assert all(files[name] == data for name, data in saved_files.items())
    rows = read_csv(repo / "data/raw/manifest.csv")
    expected = {url for name in ("daisy", "roses") for url in expected_urls(web, name)}
    assert {row["origin"] for row in rows} == expected and len(rows) == len(expected)
    assert all(row["status"] == "ok" for row in rows)
    assert not (repo / "data/raw/.manifest.journal.csv").exists()

    # Nothing changed: DVC skips the stage; forced, it searches again but downloads nothing.
    assert stages_run(sh(repo, "dvc", "repro", "scrape")) == []
    before = raw_files(repo)
    web.requests.clear()
    assert stages_run(sh(repo, "dvc", "repro", "--force", "scrape")) == ["scrape"]
    assert photo_requests(web) == [] and raw_files(repo) == before

    # A new class: only its photos are fetched; the others' files stay byte-identical.
    write_classes(repo / CLASSES, ["daisy", "roses", "tulips"])
    web.requests.clear()
    assert stages_run(sh(repo, "dvc", "repro", "scrape")) == ["scrape"]
    fetched = photo_requests(web)
    assert fetched and all(path.startswith("/img/tulips/") for path in fetched)
    after = raw_files(repo)
    assert {name: data for name, data in after.items() if name.startswith(("daisy/", "roses/"))} \
        == {name: data for name, data in before.items() if name.startswith(("daisy/", "roses/"))}
    assert any(name.startswith("tulips/") for name in after)
    assert "up to date" in sh(repo, "dvc", "status", "scrape")

"""The scrape stage with the folder source: directories, zip archives and bad input."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from imgclf import scrape
from imgclf.errors import StageError
from imgclf.fsutil import read_csv
from imgclf.paths import RAW_CLASSES, RAW_DIR, RAW_MANIFEST
from pictures import encoded
from imgclf.sources.web import WebSource
from imgclf.sources.yandex import YandexSource


def jpeg_bytes(colour: tuple[int, int, int], size: int = 32) -> bytes:
    return encoded(Image.new("RGB", (size, size), colour))


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


RED, GREEN, BLUE = jpeg_bytes((255, 0, 0)), jpeg_bytes((0, 255, 0)), jpeg_bytes((0, 0, 255))


@pytest.fixture
def folder_params(make_params, in_tmp_repo: Path):
    def build(folder: Path, classes: str = ""):
        return make_params({"classes": classes, "scrape.source": "folder",
                            "scrape.folder": str(folder)})
    return build


def stored_files() -> set[str]:
    return {p.relative_to(RAW_DIR).as_posix() for p in RAW_DIR.rglob("*")
            if p.is_file() and p.parent != RAW_DIR}


def test_folder_copies_images_under_content_hash_names(folder_params, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "photos", {
        "cats/a.jpg": RED, "cats/sub/b.JPEG": GREEN, "cats/copy.jpg": RED,
        "dogs/c.png": BLUE, "dogs/notes.txt": b"not a picture", "LICENSE.txt": b"licence",
        "dogs/.DS_Store": b"junk"})
    scrape.run(folder_params(source))

    rows = read_csv(RAW_MANIFEST)
    assert {row["origin"] for row in rows} == {
        str(source / name) for name in ("cats/a.jpg", "cats/sub/b.JPEG", "cats/copy.jpg",
                                        "dogs/c.png", "dogs/notes.txt")}
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert [Path(row["origin"]).name for row in skipped] == ["notes.txt"]
    assert "not an image" in skipped[0]["reason"] and skipped[0]["file"] == ""
    # Exact copies collapse into one file; names come from the content, not from the source.
    files = stored_files()
    assert len(files) == 3
    for row in rows:
        if row["file"]:
            assert Path(row["file"]).stem == row["sha256"][:20]
            assert (RAW_DIR / row["file"]).read_bytes() == Path(row["origin"]).read_bytes()
    assert [(r["name"], r["label"]) for r in read_csv(RAW_CLASSES)] == [("cats", "0"),
                                                                        ("dogs", "1")]


def test_class_list_gives_label_ids_and_query(folder_params, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "photos", {"b-class/1.jpg": RED, "a-class/2.jpg": GREEN})
    classes = tmp_path / "classes.csv"
    classes.write_text("name,label,query\nb-class,0,bee\na-class,1,\n", encoding="utf-8")
    scrape.run(folder_params(source, classes=str(classes)))
    assert [(r["name"], r["label"], r["query"]) for r in read_csv(RAW_CLASSES)] == [
        ("b-class", "0", "bee"), ("a-class", "1", "a-class")]


def test_rerun_mirrors_the_folder_without_rewriting(folder_params, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "photos", {"cats/a.jpg": RED, "cats/b.jpg": GREEN,
                                             "dogs/c.jpg": BLUE})
    params = folder_params(source)
    scrape.run(params)
    kept = RAW_DIR / next(r["file"] for r in read_csv(RAW_MANIFEST) if r["origin"].endswith("a.jpg"))
    mtime = kept.stat().st_mtime_ns
    (source / "cats/b.jpg").unlink()
    scrape.run(params)
    assert len(stored_files()) == 2
    assert kept.stat().st_mtime_ns == mtime


def test_zip_archive_with_a_top_folder(folder_params, tmp_path: Path) -> None:
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("flowers/roses/1.jpg", RED)
        handle.writestr("flowers/tulips/2.jpg", GREEN)
        handle.writestr("__MACOSX/flowers/roses/._1.jpg", b"resource fork")
    scrape.run(folder_params(archive))
    rows = read_csv(RAW_MANIFEST)
    assert sorted(row["class"] for row in rows) == ["roses", "tulips"]
    assert rows[0]["origin"] == f"{archive}!/flowers/roses/1.jpg"
    assert len(stored_files()) == 2


@pytest.mark.parametrize("bad_name", ["../evil/1.jpg", "/abs/1.jpg", "roses/../../x.jpg"])
def test_zip_with_escaping_entry_is_refused(folder_params, tmp_path: Path, bad_name) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("roses/1.jpg", RED)
        handle.writestr(bad_name, GREEN)
    with pytest.raises(StageError, match="absolute path or '..'"):
        scrape.run(folder_params(archive))
    assert not RAW_DIR.exists()
    assert not (tmp_path / "evil").exists()


def test_unknown_folder_is_an_error(folder_params, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "photos", {"cats/a.jpg": RED, "cows/b.jpg": GREEN})
    classes = tmp_path / "classes.csv"
    classes.write_text("name,label\ncats,0\n", encoding="utf-8")
    with pytest.raises(StageError, match=r"not in the class list: \['cows'\]"):
        scrape.run(folder_params(source, classes=str(classes)))


def test_class_without_images_is_an_error(folder_params, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "photos", {"cats/a.jpg": RED, "dogs/readme.txt": b"x"})
    with pytest.raises(StageError, match=r"no images for classes \['dogs'\]"):
        scrape.run(folder_params(source))


def test_missing_root_is_an_error(folder_params, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="does not exist"):
        scrape.run(folder_params(tmp_path / "nowhere"))


def test_web_sources_are_incremental_and_start_no_browser_until_used(make_params) -> None:
    site = {"url": "http://catalogue.example/", "class_links": "a.gem", "images": "img"}
    for overrides, kind in (({"scrape.source": "yandex"}, YandexSource),
                            ({"scrape.source": "web", "scrape.catalogue": site}, WebSource)):
        overrides["classes"] = "data/classes/gemstones.csv"  # web sources need a class list
        with contextlib.closing(scrape.make_source(make_params(overrides).scrape)) as source:
            assert isinstance(source, kind) and source.incremental
            assert source.browser._driver is None


def test_command_line_reports_errors_without_traceback(in_tmp_repo: Path) -> None:
    params = (Path(__file__).parents[1] / "params.yaml").read_text(encoding="utf-8")
    (in_tmp_repo / "params.yaml").write_text(
        params.replace("folder: data/sample/flowers", "folder: missing-folder"), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "imgclf", "scrape"], cwd=in_tmp_repo,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "imgclf scrape: error: scrape.folder: missing-folder does not exist" in result.stderr
    assert "Traceback" not in result.stderr

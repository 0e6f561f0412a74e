"""The scrape stage with the folder source: directories, zip archives and bad input."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from imgclf.core.classes import ClassListError
from imgclf.core.errors import StageError
from imgclf.core.files import read_csv
from imgclf.core.paths import RAW_CLASSES, RAW_DIR, RAW_MANIFEST
from imgclf.sources.web import WebSource
from imgclf.sources.yandex import YandexSource
from imgclf.stages import scrape

from helpers.pictures import encoded


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


@pytest.mark.parametrize("bad_name", ["../evil/1.jpg", "/abs/1.jpg", "roses/../../x.jpg",
                                      "C:/evil/1.jpg", "C:\\evil\\1.jpg"])
def test_zip_with_escaping_entry_is_refused(folder_params, tmp_path: Path, bad_name) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("roses/1.jpg", RED)
        handle.writestr(bad_name, GREEN)
    with pytest.raises(StageError, match="absolute path or '..'"):
        scrape.run(folder_params(archive))
    assert not RAW_DIR.exists()
    assert not (tmp_path / "evil").exists()


def rows_by_origin() -> dict[str, dict[str, str]]:
    return {row["origin"]: row for row in read_csv(RAW_MANIFEST)}


def test_symbolic_links_are_never_followed(folder_params, tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "elsewhere", {"secret.jpg": BLUE, "more/x.jpg": BLUE})
    source = make_tree(tmp_path / "photos", {"cats/a.jpg": RED, "dogs/b.jpg": GREEN})
    (source / "cats/secret.jpg").symlink_to(outside / "secret.jpg")  # out of the tree
    (source / "cats/inside.jpg").symlink_to(source / "dogs/b.jpg")  # within it: refused as well
    (source / "dogs/more").symlink_to(outside / "more", target_is_directory=True)
    scrape.run(folder_params(source))
    rows = rows_by_origin()
    for name in ("cats/secret.jpg", "cats/inside.jpg", "dogs/more"):
        row = rows[str(source / name)]
        assert row["status"] == "skipped" and row["file"] == ""
        assert row["reason"].startswith("symbolic link: to ")
    assert not any(row["sha256"] for row in rows.values() if "secret" in row["origin"])
    assert {(RAW_DIR / file).read_bytes() for file in stored_files()} == {RED, GREEN}


def test_a_class_folder_that_is_a_link_is_reported(folder_params, tmp_path: Path) -> None:
    outside = make_tree(tmp_path / "elsewhere", {"x.jpg": BLUE})
    source = make_tree(tmp_path / "photos", {"cats/a.jpg": RED})
    (source / "dogs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StageError, match=r"no images for classes \['dogs'\] .*dogs: symbolic "
                                         r"link: to .*elsewhere; links are not followed"):
        scrape.run(folder_params(source))
    assert not RAW_DIR.exists()


def test_fifos_are_skipped_not_read(folder_params, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "photos", {"cats/a.jpg": RED})
    os.mkfifo(source / "cats/pipe.jpg")  # reading it would block for ever
    scrape.run(folder_params(source))
    assert rows_by_origin()[str(source / "cats/pipe.jpg")]["reason"].startswith(
        "not a regular file")


def test_only_image_content_is_stored_and_named_by_its_format(folder_params,
                                                              tmp_path: Path) -> None:
    png = encoded(Image.new("RGB", (8, 8), "red"), "PNG")
    source = make_tree(tmp_path / "photos", {
        "cats/a.jpg": RED, "cats/zeros.jpg": bytes(100_000), "cats/page.jpg": b"<html></html>",
        "cats/really-a-png.jpg": png, "cats/strip.png": encoded(Image.new("L", (10_000, 1)),
                                                                  "PNG")})
    scrape.run(folder_params(source))
    rows = rows_by_origin()
    for name, reason in (("zeros.jpg", "not an image file"), ("page.jpg", "not an image file"),
                         ("strip.png", "too elongated")):
        assert rows[str(source / "cats" / name)]["status"] == "skipped"
        assert rows[str(source / "cats" / name)]["reason"].startswith(reason)
    assert rows[str(source / "cats/really-a-png.jpg")]["file"].endswith(".png")
    assert len(stored_files()) == 2


def zip_of(path: Path, files: dict[str, bytes], **options) -> Path:
    with zipfile.ZipFile(path, "w", **options) as handle:
        for name, data in files.items():
            handle.writestr(name, data)
    return path


def test_zip_is_opened_once(folder_params, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_of(tmp_path / "photos.zip",
                     {f"{cls}/{i}.jpg": jpeg_bytes((i, 10 * i, 0)) for cls in ("cats", "dogs")
                      for i in range(10)})
    opened = []

    class CountingZipFile(zipfile.ZipFile):
        def __init__(self, *args, **kwargs):
            opened.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", CountingZipFile)
    scrape.run(folder_params(archive))
    assert len(stored_files()) == 20
    assert opened == [archive]


def test_zip_of_zero_filled_entries_stores_nothing(folder_params, tmp_path: Path) -> None:
    # 1 MB of zeros compresses to about 1 KB: such an archive wrote 793 MB into data/raw.
    archive = zip_of(tmp_path / "bomb.zip", {"cats/a.jpg": RED} | {
        f"cats/{i}.jpg": bytes(1_000_000) for i in range(20)},
        compression=zipfile.ZIP_DEFLATED)
    assert archive.stat().st_size < 100_000
    scrape.run(folder_params(archive))
    reasons = [row["reason"] for row in read_csv(RAW_MANIFEST) if row["status"] == "skipped"]
    assert len(reasons) == 20 and all(r.startswith("not an image file") for r in reasons)
    assert sum(path.stat().st_size for path in RAW_DIR.rglob("*.jpg")) == len(RED)


@pytest.mark.parametrize("key, limit, message", [
    ("scrape.archive_max_entries", 4, r"scrape.archive_max_entries: at most 4 entries in an "
                                      r"archive \(got 5 in .*many.zip\)"),
    ("scrape.archive_max_bytes", 5 * len(RED) - 1,
     rf"scrape.archive_max_bytes: at most {5 * len(RED) - 1:,} bytes of images once "
     rf"decompressed in an archive \(got {5 * len(RED):,} in .*many.zip\)")])
def test_zip_beyond_its_limits_is_refused(make_params, in_tmp_repo: Path, tmp_path: Path,
                                          key: str, limit: int, message: str) -> None:
    archive = zip_of(tmp_path / "many.zip", {f"cats/{i}.jpg": RED for i in range(5)})
    params = make_params({"classes": "", "scrape.source": "folder",
                          "scrape.folder": str(archive), key: limit})
    with pytest.raises(StageError, match=message):
        scrape.run(params)
    assert not RAW_DIR.exists()


def test_zip_entries_of_unbounded_compression_are_skipped(folder_params, tmp_path: Path) -> None:
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("cats/a.jpg", RED)
        handle.writestr("cats/b.jpg", GREEN, compress_type=zipfile.ZIP_BZIP2)
    scrape.run(folder_params(archive))
    skipped = [row for row in read_csv(RAW_MANIFEST) if row["status"] == "skipped"]
    assert [row["origin"].rsplit("/", 1)[1] for row in skipped] == ["b.jpg"]
    assert skipped[0]["reason"].startswith("compression method 12 is not read")


def test_damaged_zip_entries_are_skipped_and_the_rest_stored(folder_params,
                                                             tmp_path: Path) -> None:
    big = encoded(Image.effect_noise((64, 64), 40).convert("RGB"), "PNG")
    archive = zip_of(tmp_path / "damaged.zip", {"cats/a.jpg": RED, "cats/b.png": big,
                                                "cats/c.png": big + b"!"},
                     compression=zipfile.ZIP_DEFLATED)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as handle:
        infos = {info.filename: info for info in handle.infolist()}
    for name, flip in (("cats/b.png", 0xFF), ("cats/c.png", 0x01)):  # deflate error / bad CRC
        start = infos[name].header_offset + 30 + len(name)  # after the local file header
        data[start + 40] ^= flip
    archive.write_bytes(bytes(data))
    scrape.run(folder_params(archive))
    reasons = {row["origin"].rsplit("/", 1)[1]: row["reason"] for row in read_csv(RAW_MANIFEST)}
    assert reasons["a.jpg"] == ""
    assert reasons["b.png"].startswith("cannot read: ") and reasons["c.png"].startswith(
        "cannot read: ")


@pytest.mark.parametrize("packed, folder", [
    (False, "x:y"), (False, "manifest.csv"),  # a directory cannot hold a 300-character name
    (True, "x:y"), (True, "manifest.csv"), (True, "Classes.CSV"), (True, "c" * 300)])
def test_class_folder_that_cannot_be_a_folder_name(folder_params, tmp_path: Path, packed: bool,
                                                   folder: str) -> None:
    files = {"cats/a.jpg": RED, f"{folder}/b.jpg": GREEN}
    if packed:
        root = zip_of(tmp_path / "odd.zip", files)
        where = f"{root}!/{folder}/b.jpg"
    else:
        root = make_tree(tmp_path / "photos", files)
        where = str(root / folder)
    with pytest.raises(ClassListError, match=re.escape(f"scrape.folder: {where}: class name ")
                       + r".* cannot be a folder name \(.+\); allowed: 1 to 100 characters"):
        scrape.run(folder_params(root))
    assert not RAW_DIR.exists()


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

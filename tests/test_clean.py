"""The clean stage through `run(params)` on a small raw tree written the way scrape writes it."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from imgclf.core.classes import ClassSpec, read_class_list, write_class_list
from imgclf.core.errors import StageError
from imgclf.core.files import read_csv
from imgclf.core.images import decode_image
from imgclf.stages import clean

from helpers.pictures import cabochon, encoded

CLASSES = ("daisy", "roses", "tulips")
SETTINGS = {"clean.min_side": 32, "clean.short_side": 96, "clean.hash_distance": 4,
            "clean.pixel_tolerance": 24.0, "clean.jpeg_quality": 90, "clean.workers": 2}






def write_raw(files: dict[str, list[bytes]], suffixes: tuple[str, ...] = (".jpg",)
              ) -> dict[bytes, str]:
    """data/raw as scrape leaves it: content-hash names, a manifest with one failed download.
    Each content is stored once per suffix. Returns each content's (last) file name relative to
    data/raw."""
    raw = Path("data/raw")
    write_class_list(raw / "classes.csv", [ClassSpec(n, i, n) for i, n in enumerate(CLASSES)])
    rows, names = [], {}
    for cls, contents in files.items():
        for data in contents:
            digest = hashlib.sha256(data).hexdigest()
            for suffix in suffixes:
                names[data] = f"{cls}/{digest}{suffix}"
                (raw / cls).mkdir(parents=True, exist_ok=True)
                (raw / names[data]).write_bytes(data)
                rows.append([cls, f"https://example.org/{digest[:8]}{suffix}", names[data],
                             digest, len(data), 200, ""])
    rows.append(["daisy", "https://example.org/gone", "", "", "", 404, "HTTP 404"])
    with (raw / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "origin", "file", "sha256", "bytes", "status", "reason"])
        writer.writerows(rows)
    return names


@pytest.fixture
def raw_tree(in_tmp_repo: Path, flowers_mini: Path) -> dict[str, str]:
    photos = {cls: sorted((flowers_mini / cls).glob("*.jpg"))[:3] for cls in CLASSES}
    daisy = decode_image(photos["daisy"][0])
    half = daisy.resize((daisy.width // 2, daisy.height // 2), Image.Resampling.LANCZOS)
    shared = photos["tulips"][2].read_bytes()
    made = {
        "daisy": photos["daisy"][0].read_bytes(),
        "daisy_png": encoded(daisy, "PNG"),  # the same pixels, other bytes: an exact duplicate
        "daisy_half": encoded(half, quality=60),  # a near duplicate
        "daisy_bright": encoded(ImageEnhance.Brightness(daisy).enhance(1.05), quality=85),
        "truncated": photos["daisy"][1].read_bytes()[:3000],
        "html": b"<html><body>Too many requests</body></html>",
        "tiny": encoded(Image.new("RGB", (1, 1), "red"), "PNG"),
        "small": encoded(Image.new("RGB", (200, 31), "blue"), "PNG"),
        "green_stone": encoded(cabochon((40, 150, 60)), quality=95),
        "orange_stone": encoded(cabochon((230, 120, 30)), quality=95),
        "roses_only": photos["roses"][0].read_bytes(),
        "shared_in_roses": encoded(decode_image(shared), quality=80),
        "shared_in_tulips": shared,
        "tulips_only": photos["tulips"][0].read_bytes(),
    }
    names = write_raw({
        "daisy": [made[k] for k in ("daisy", "daisy_png", "daisy_half", "daisy_bright",
                                     "truncated", "html", "tiny", "small", "green_stone",
                                     "orange_stone")] + [photos["daisy"][2].read_bytes()],
        "roses": [made["roses_only"], made["shared_in_roses"]],
        "tulips": [made["tulips_only"], made["shared_in_tulips"]],
    })
    return {key: names[data] for key, data in made.items()}


def manifest_by_file() -> dict[str, dict[str, str]]:
    return {row["file"]: row for row in read_csv(Path("data/clean/manifest.csv"))}


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_clean_keeps_verifies_and_deduplicates(raw_tree: dict[str, str], make_params) -> None:
    clean.run(make_params(SETTINGS))
    rows = manifest_by_file()
    status = {key: rows[file]["status"] for key, file in raw_tree.items()}

    # Every stored input has one row; the failed download (no file) has none.
    raw_rows = [r for r in read_csv(Path("data/raw/manifest.csv")) if r["file"]]
    assert sorted(rows) == sorted(r["file"] for r in raw_rows)

    for key, reason in (("truncated", "undecodable"), ("html", "undecodable"),
                        ("tiny", "too small"), ("small", "too small")):
        assert status[key] == "dropped" and rows[raw_tree[key]]["reason"].startswith(reason)

    # Exact and near copies within one class: the largest original is kept, the rest name it.
    family = ("daisy", "daisy_png", "daisy_half", "daisy_bright")
    kept = [key for key in family if status[key] == "kept"]
    assert len(kept) == 1 and kept[0] in ("daisy", "daisy_png", "daisy_bright")
    kept_clean = rows[raw_tree[kept[0]]]["clean_file"]
    groups = {rows[raw_tree[key]]["group"] for key in family}
    assert len(groups) == 1 and groups != {""}
    for key in family:
        if key != kept[0]:
            assert rows[raw_tree[key]]["reason"] == f"duplicate of {kept_clean}"

    # One picture under two classes: no label can be trusted, so every copy goes.
    for key in ("shared_in_roses", "shared_in_tulips"):
        assert status[key] == "dropped"
        assert rows[raw_tree[key]]["reason"] == "ambiguous: the same picture is filed under " \
                                                "roses, tulips"

    # Same phash, different colours: both stay.
    stones = [rows[raw_tree[key]] for key in ("green_stone", "orange_stone")]
    assert stones[0]["phash"] == stones[1]["phash"]
    assert [s["status"] for s in stones] == ["kept", "kept"]

    metrics = json.loads(Path("metrics/clean.json").read_text(encoding="utf-8"))
    assert metrics["inputs"] == len(rows) == 15
    assert metrics["dropped"] == {"undecodable": 2, "too_small": 2, "duplicate": 3,
                                  "ambiguous": 2}
    assert metrics["kept"] == 6
    assert metrics["duplicate_groups"] == 2


def test_clean_outputs_are_resized_jpegs_and_copies_the_classes(raw_tree: dict[str, str],
                                                                make_params) -> None:
    clean.run(make_params(SETTINGS))
    rows = manifest_by_file()
    kept = [row for row in rows.values() if row["status"] == "kept"]
    stored = sorted(p.relative_to("data/clean").as_posix()
                    for p in Path("data/clean").rglob("*.jpg"))
    assert stored == sorted(row["clean_file"] for row in kept)
    for row in kept:
        assert row["clean_file"] == f"{row['file']}.jpg"
        # The later stages depend on the manifest, not the folder: it names the stored bytes.
        stored_bytes = (Path("data/clean") / row["clean_file"]).read_bytes()
        assert row["clean_sha256"] == hashlib.sha256(stored_bytes).hexdigest()
        with Image.open(Path("data/clean") / row["clean_file"]) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert min(image.size) == min(96, int(row["width"]), int(row["height"]))
    assert read_class_list(Path("data/clean/classes.csv")) == read_class_list(
        Path("data/raw/classes.csv"))


def test_clean_is_byte_identical_across_runs_and_worker_counts(raw_tree: dict[str, str],
                                                               make_params) -> None:
    clean.run(make_params(SETTINGS))
    first = tree_digest(Path("data/clean")), Path("metrics/clean.json").read_bytes()
    clean.run(make_params(SETTINGS | {"clean.workers": 1}))
    assert (tree_digest(Path("data/clean")), Path("metrics/clean.json").read_bytes()) == first


def test_the_stage_reuses_picture_blocks_and_restores_pillows_setting(
        raw_tree: dict[str, str], make_params) -> None:
    before = Image.core.get_blocks_max()
    reused = Image.core.get_stats()["reused_blocks"]
    clean.run(make_params(SETTINGS | {"clean.workers": 1}))
    assert Image.core.get_stats()["reused_blocks"] > reused
    assert Image.core.get_blocks_max() == before
    assert Image.core.get_stats()["blocks_cached"] == 0 or before > 0


def test_image_blocks_kept_restores_the_setting_after_an_error() -> None:
    before = Image.core.get_blocks_max()
    with pytest.raises(RuntimeError), clean.image_blocks_kept():
        assert Image.core.get_blocks_max() == clean.KEPT_IMAGE_BLOCKS
        raise RuntimeError("a failing picture")
    assert Image.core.get_blocks_max() == before


def test_clean_fails_clearly_when_nothing_is_kept(in_tmp_repo: Path, make_params) -> None:
    write_raw({"daisy": [b"not an image"], "roses": [encoded(Image.new("RGB", (8, 8)))]})
    with pytest.raises(StageError, match="kept no image"):
        clean.run(make_params(SETTINGS))
    assert not Path("data/clean").exists()


def test_clean_needs_the_raw_manifest(in_tmp_repo: Path, make_params) -> None:
    write_class_list(Path("data/raw/classes.csv"), [ClassSpec("daisy", 0, "daisy")])
    with pytest.raises(StageError, match="run the scrape stage"):
        clean.run(make_params(SETTINGS))



def test_one_content_under_two_extensions_keeps_its_clean_file(in_tmp_repo: Path,
                                                               flowers_mini: Path,
                                                               make_params) -> None:
    # An earlier folder source stored a folder's a.jpg and a.png (the same bytes) as <hash>.jpg
    # and <hash>.png. Both mapped to data/clean/<class>/<hash>.jpg: the copy was dropped as a
    # duplicate, and removing its output removed the kept file, which the manifest still listed.
    photo = sorted((flowers_mini / "roses").glob("*.jpg"))[0].read_bytes()
    others = [sorted((flowers_mini / cls).glob("*.jpg"))[0].read_bytes() for cls in ("daisy",
                                                                                      "tulips")]
    write_raw({"roses": [photo]}, suffixes=(".jpg", ".png"))
    with Path("data/raw/manifest.csv").open("a", newline="", encoding="utf-8") as handle:
        for cls, data in zip(("daisy", "tulips"), others):
            digest = hashlib.sha256(data).hexdigest()
            Path(f"data/raw/{cls}/{digest}.jpg").parent.mkdir(parents=True, exist_ok=True)
            Path(f"data/raw/{cls}/{digest}.jpg").write_bytes(data)
            csv.writer(handle).writerow([cls, "x", f"{cls}/{digest}.jpg", digest, len(data),
                                         200, ""])
    clean.run(make_params(SETTINGS))
    roses = [row for row in manifest_by_file().values() if row["class"] == "roses"]
    assert sorted(row["status"] for row in roses) == ["dropped", "kept"]
    kept = next(row for row in roses if row["status"] == "kept")
    assert (Path("data/clean") / kept["clean_file"]).is_file()
    dropped = next(row for row in roses if row["status"] == "dropped")
    assert dropped["reason"] == f"duplicate of {kept['clean_file']}"


def test_the_folder_source_stores_one_content_once(in_tmp_repo: Path, flowers_mini: Path,
                                                   make_params) -> None:
    from imgclf.stages import scrape

    folder = in_tmp_repo / "photos"
    for cls in CLASSES:
        photo = sorted((flowers_mini / cls).glob("*.jpg"))[0].read_bytes()
        (folder / cls).mkdir(parents=True)
        for name in ("a.jpg", "a.png"):
            (folder / cls / name).write_bytes(photo)
    params = make_params(SETTINGS | {"classes": "", "scrape.source": "folder",
                                     "scrape.folder": str(folder)})
    scrape.run(params)
    assert len({row["file"] for row in read_csv(Path("data/raw/manifest.csv"))}) == 3
    clean.run(params)
    assert sorted(row["status"] for row in manifest_by_file().values()) == ["kept"] * 3


def test_a_file_that_exhausts_memory_is_dropped_and_the_rest_kept(
        raw_tree: dict[str, str], make_params, monkeypatch) -> None:
    unlucky = raw_tree["roses_only"]
    decode, downscale, current = clean.decode, clean.downscale_to_short_side, []

    def decode_noting_the_file(path, **options):
        current[:] = [path]
        return decode(path, **options)

    def downscale_or_run_out_of_memory(image, short_side):
        if current == [Path("data/raw") / unlucky]:
            raise MemoryError
        return downscale(image, short_side)

    # One process (workers 1), so that the replacements are the ones that run.
    monkeypatch.setattr(clean, "decode", decode_noting_the_file)
    monkeypatch.setattr(clean, "downscale_to_short_side", downscale_or_run_out_of_memory)
    clean.run(make_params(SETTINGS | {"clean.workers": 1}))
    rows = manifest_by_file()
    assert rows[unlucky]["reason"] == "undecodable: out of memory"
    assert rows[raw_tree["tulips_only"]]["status"] == "kept"


def test_leftovers_of_killed_runs_are_removed(raw_tree: dict[str, str], make_params) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [Path("data/.clean.k2j4h7x1.tmp"),  # named before names held a process id
                 Path(f"data/.clean.{finished.stdout.strip()}.k2j4h7x1.tmp")]
        live = Path(f"data/.clean.{running.pid}.q9w8e7r6.tmp")
        for folder in (*stale, live):
            (folder / "daisy").mkdir(parents=True)
        clean.run(make_params(SETTINGS))
        assert [folder.exists() for folder in (*stale, live)] == [False, False, True]
    finally:
        running.kill()
        running.wait()


def test_a_raw_file_outside_its_class_folder_is_refused(in_tmp_repo: Path, make_params) -> None:
    write_raw({"daisy": [encoded(Image.new("RGB", (64, 64)))]})
    rows = read_csv(Path("data/raw/manifest.csv"))
    rows[0]["class"] = "roses"
    with Path("data/raw/manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(StageError, match="every file must be <class>/<name> of its row's class"):
        clean.run(make_params(SETTINGS))

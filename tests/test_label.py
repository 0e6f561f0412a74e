"""The label stage through `run(params)` on a small data/clean tree written the way clean does."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from imgclf import dedup
from imgclf.core.classes import ClassSpec, read_class_list, write_class_list
from imgclf.core.errors import StageError
from imgclf.core.files import read_csv, write_csv
from imgclf.core.images import decode_image, downscale_to_short_side
from imgclf.core.paths import (
    CLEAN_MANIFEST,
    SPLIT_CLASSES,
    SPLIT_FILES,
    SPLIT_METRICS,
    SPLIT_PER_CLASS,
)
from imgclf.stages import label

from helpers.config import NO_AUTO_REJECT

# Label ids deliberately not in alphabetical order: they must come from the list.
CLASSES = [ClassSpec("tulips", 0, "tulips"), ClassSpec("daisy", 1, "daisy"),
           ClassSpec("roses", 2, "roses")]
SETTINGS = {"seed": 42, "label.val_size": 0.15, "label.test_size": 0.15,
            "label.group_distance": 12, "label.group_tolerance": 40.0, **NO_AUTO_REJECT}
PER_CLASS = 30
FAMILIES = 4  # photos per class that get look-alike variants


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def smooth_picture(seed: int) -> Image.Image:
    """A soft random picture: a one-pixel crop of it is still the same scene to the eye."""
    cells = np.random.default_rng(seed).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize((96, 96), Image.Resampling.BICUBIC)


def variants(picture: Image.Image) -> list[Image.Image]:
    """Other exposures and a tiny crop of the same scene."""
    width, height = picture.size
    return [ImageEnhance.Brightness(picture).enhance(0.85),
            ImageEnhance.Brightness(picture).enhance(1.15),
            ImageEnhance.Contrast(picture).enhance(0.8),
            picture.crop((1, 1, width - 1, height - 1))]


def content_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def write_clean(pictures: dict[str, list[list[Image.Image]]],
                classes: list[ClassSpec] = CLASSES) -> None:
    """data/clean as the clean stage leaves it; each inner list is one scene's pictures."""
    rows = []
    for cls, scenes in pictures.items():
        for scene_number, scene in enumerate(scenes):
            for variant_number, picture in enumerate(scene):
                data = jpeg(picture)
                # Named by content as clean names them (decisions are keyed by it), then by scene.
                clean_file = f"{cls}/{content_name(data)}.s{scene_number:03d}v{variant_number}.jpg"
                path = Path("data/clean") / clean_file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                rows.append({"file": clean_file, "class": cls, "status": "kept",
                             "width": picture.width, "height": picture.height,
                             "phash": dedup.hash_hex(dedup.perceptual_hash(decode_image(path))),
                             "clean_file": clean_file})
    write_class_list(Path("data/clean/classes.csv"), classes)
    write_csv(Path("data/clean/manifest.csv"), ("file", "class", "status", "reason", "width",
                                                "height", "phash", "group", "clean_file"), rows)


@pytest.fixture(scope="module")
def scenes(flowers_mini: Path) -> dict[str, list[list[Image.Image]]]:
    """Per class: PER_CLASS photos, the first FAMILIES of them with look-alike variants, and one
    soft picture with its variants."""
    result = {}
    for number, spec in enumerate(CLASSES):
        paths = sorted((flowers_mini / spec.name).glob("*.jpg"))[:PER_CLASS]
        photos = [downscale_to_short_side(decode_image(p), 64) for p in paths]
        families = [[photo] + variants(photo)[:3] for photo in photos[:FAMILIES]]
        soft = smooth_picture(number)
        result[spec.name] = families + [[p] for p in photos[FAMILIES:]] + [[soft] + variants(soft)]
    return result


def read_splits() -> dict[str, list[dict[str, str]]]:
    return {name: read_csv(path) for name, path in SPLIT_FILES.items()}


def split_of_each_file() -> dict[str, tuple[str, dict[str, str]]]:
    return {row["path"]: (name, row) for name, rows in read_splits().items() for row in rows}


def output_bytes() -> list[bytes]:
    return [p.read_bytes() for p in (*SPLIT_FILES.values(), SPLIT_CLASSES,
                                     SPLIT_METRICS)]


def test_every_image_once_with_ids_from_the_class_list(in_tmp_repo, scenes, make_params) -> None:
    write_clean(scenes)
    label.run(make_params(SETTINGS))
    splits = read_splits()
    placed = split_of_each_file()
    stored = sorted(p.as_posix() for p in Path("data/clean").rglob("*.jpg"))
    assert sorted(placed) == stored
    ids = {spec.name: str(spec.label) for spec in CLASSES}
    for rows in splits.values():
        assert [row["path"] for row in rows] == sorted(row["path"] for row in rows)
        assert all(row["label"] == ids[row["class"]] for row in rows)
    assert read_class_list(SPLIT_CLASSES) == CLASSES


def test_fractions_are_roughly_right_in_every_class(in_tmp_repo, scenes, make_params) -> None:
    write_clean(scenes)
    label.run(make_params(SETTINGS))
    metrics = json.loads(SPLIT_METRICS.read_text(encoding="utf-8"))
    total = metrics["total"]
    assert total["all"] == sum(total[name] for name in label.SPLITS)
    for name in ("val", "test"):
        assert 0.09 <= total[name] / total["all"] <= 0.21
    per_class = read_csv(SPLIT_PER_CLASS)
    assert len(per_class) == len(read_class_list(SPLIT_CLASSES))
    for row in per_class:
        assert all(int(row[name]) >= 1 for name in label.SPLITS)
        assert sum(int(row[name]) for name in label.SPLITS) == sum(
            1 for item in read_csv(CLEAN_MANIFEST)
            if item["class"] == row["class"] and item["status"] == "kept")


def test_lookalikes_share_a_group_and_a_split(in_tmp_repo, scenes, make_params) -> None:
    write_clean(scenes)
    for seed in (1, 2, 3):
        label.run(make_params(SETTINGS | {"seed": seed}))
        placed = split_of_each_file()
        families = {}
        for path, (split, row) in placed.items():
            scene = path.split(".")[1].rsplit("v", 1)[0]  # <class>/<id>.<scene>v<variant>.jpg
            families.setdefault((row["class"], scene), []).append((split, row["group"]))
        multi = [members for members in families.values() if len(members) > 1]
        assert len(multi) == len(CLASSES) * (FAMILIES + 1)
        for members in multi:
            assert len(set(members)) == 1, members
    metrics = json.loads(SPLIT_METRICS.read_text(encoding="utf-8"))
    assert metrics["lookalike_groups"] == len(CLASSES) * (FAMILIES + 1)
    assert metrics["lookalike_images"] == len(CLASSES) * (FAMILIES * 4 + 5)


def test_same_inputs_same_bytes_other_seed_other_split(in_tmp_repo, scenes, make_params) -> None:
    write_clean(scenes)
    label.run(make_params(SETTINGS))
    first = output_bytes()
    label.run(make_params(SETTINGS))
    assert output_bytes() == first
    test_files = {row["path"] for row in read_splits()["test"]}
    label.run(make_params(SETTINGS | {"seed": 7}))
    assert {row["path"] for row in read_splits()["test"]} != test_files


def test_classes_of_the_minimum_size_appear_in_every_split(in_tmp_repo, scenes,
                                                          make_params) -> None:
    needed = label.groups_needed(make_params(SETTINGS).label)
    assert needed == 7  # test 0.15 = 1 fold of 7; val 0.15 = 1 fold of 6 of the rest
    small = {spec.name: scenes[spec.name][:needed] for spec in CLASSES}  # 4 families + 3 photos
    write_clean(small)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warns about classes smaller than a fold
        for seed in range(6):
            label.run(make_params(SETTINGS | {"seed": seed}))
            for name, rows in read_splits().items():
                assert {row["class"] for row in rows} == set(small), (seed, name)


def test_a_fold_that_misses_a_class_is_passed_over(make_params) -> None:
    # Three classes of 14 images in 10 to 12 look-alike groups of uneven size: the minimum for
    # test 0.2 and val 0.1. With seed 1, the first validation fold scikit-learn offers holds no
    # image of one class; a later fold holds them all.
    params = make_params(SETTINGS | {"label.val_size": 0.1, "label.test_size": 0.2}).label
    labels = np.repeat([0, 1, 2], 14)
    groups = np.array([0, 1, 1, 2, 3, 4, 5, 6, 7, 7, 7, 8, 9, 10, 11, 12, 12, 13, 14, 15, 16,
                       17, 18, 18, 18, 19, 20, 21, 22, 23, 24, 24, 25, 25, 26, 27, 28, 29, 30, 31,
                       31, 31])
    assert min(len(set(groups[labels == c])) for c in range(3)) == label.groups_needed(params)
    splits = label.assign_splits(labels, groups, params, seed=1)
    for name in label.SPLITS:
        assert set(labels[splits == name]) == {0, 1, 2}, name


@pytest.mark.parametrize("sizes", [{"tulips": 20, "daisy": 6, "roses": 3},
                                   {"tulips": 2, "daisy": 2, "roses": 1}])
def test_a_class_too_small_to_split_stops_with_its_name(in_tmp_repo, scenes, make_params,
                                                        sizes: dict[str, int]) -> None:
    # The second case is what made scikit-learn raise "n_splits=2 cannot be greater than the
    # number of members in each class"; the smallest class is named in both.
    photos = {name: scenes[name][FAMILIES:FAMILIES + count] for name, count in sizes.items()}
    write_clean(photos)
    smallest = min(sizes, key=sizes.get)
    with pytest.raises(StageError, match=rf"class '{smallest}' has too few distinct images to "
                                         rf"split: {sizes[smallest]} image\(s\) .* at least 7 "
                                         "per class"):
        label.run(make_params(SETTINGS))
    assert not SPLIT_FILES["train"].exists()


def test_lookalikes_count_once_towards_the_minimum(in_tmp_repo, scenes, make_params) -> None:
    # Seven pictures, but five of them are one scene: three distinct pictures.
    write_clean({"tulips": scenes["tulips"], "daisy": scenes["daisy"],
                 "roses": [scenes["roses"][-1]] + scenes["roses"][FAMILIES:FAMILIES + 2]})
    with pytest.raises(StageError, match=r"'roses' .*: 7 image\(s\) in 3 look-alike group"):
        label.run(make_params(SETTINGS))


def test_a_class_without_images_fails(in_tmp_repo, scenes, make_params) -> None:
    write_clean({"tulips": scenes["tulips"], "daisy": scenes["daisy"]})
    with pytest.raises(StageError, match="roses"):
        label.run(make_params(SETTINGS))

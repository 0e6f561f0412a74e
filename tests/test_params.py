"""params.yaml validation and class lists: bad values fail early with the key's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgclf.config.all import AllParams
from imgclf.core.classes import ClassListError, classes_from_names, read_class_list
from imgclf.core.params import ParamsError, load_params

from helpers.paths import REPO_ROOT


def test_shipped_params_are_valid() -> None:
    # The defaults run offline: the shipped sample and the shipped weights (see README).
    params = load_params(AllParams, REPO_ROOT / "params.yaml")
    assert (params.classes, params.scrape.source) == ("", "folder")
    assert (REPO_ROOT / params.scrape.folder).is_dir()
    assert params.train.arch == "mobilenet_v2"
    assert (REPO_ROOT / str(params.train.pretrained)).is_file()


@pytest.mark.parametrize("overrides, message", [
    ({"train.lr": -1}, r"train\.lr: a number > 0"),
    ({"train.lr": "fast"}, r"train\.lr: a number > 0 \(got 'fast'\)"),
    ({"train.lr": float("inf")}, r"train\.lr: a finite number"),
    ({"scrape.file_timeout": "inf"}, r"scrape\.file_timeout: a finite number"),
    ({"train.epochs": 1.5}, r"train\.epochs: an integer >= 1 \(got 1\.5\)"),
    ({"train.freeze_features": 1}, r"train\.freeze_features: true or false \(got 1\)"),
    ({"seed": 2**32}, r"seed: an integer >= 0 and < 4294967296"),
    ({"clean.hash_distance": 65}, r"clean\.hash_distance: an integer in 0\.\.64 \(got 65\)"),
    ({"scrape.filters.size": "huge"}, r"scrape\.filters\.size: empty or one of large"),
    ({"scrape.catalogue.url": "ftp://x"}, r"scrape\.catalogue\.url: an http\(s\) URL"),
    ({"train.pretrained": True}, r"train\.pretrained: a torchvision weights name"),
    ({"scrape.source": "bing", "classes": "data/classes/gemstones.csv"},
     r"scrape\.source: one of yandex, web, folder"),
    ({"label.val_size": 0.6, "label.test_size": 0.5}, r"less than 1"),
    ({"clean.short_side": 10}, r"clean\.short_side: an integer >= clean\.min_side"),
    ({"classes": "", "scrape.source": "yandex"}, r"classes: .*only with scrape\.source: folder"),
    ({"train.device": "tpu"}, r"train\.device: one of auto, cpu, cuda"),
])
def test_bad_values_name_the_key_and_what_is_allowed(make_params, overrides, message) -> None:
    with pytest.raises(ParamsError, match=message):
        make_params(overrides)


def test_numbers_written_by_dvc_set_param_are_accepted(make_params) -> None:
    # `dvc exp run -S train.lr=3e-4` writes 3e-4, which YAML reads as a string.
    assert make_params({"train.lr": "3e-4"}).train.lr == pytest.approx(3e-4)


def test_unknown_and_missing_keys(make_params) -> None:
    with pytest.raises(ParamsError, match=r"unknown key train\.learning_rate; allowed: arch"):
        make_params({"train.learning_rate": 0.1})
    with pytest.raises(ParamsError, match="not-there.yaml: not found"):
        load_params(AllParams, Path("not-there.yaml"))


@pytest.mark.parametrize("text, message", [
    ("seed: 1\nseed: 2\n", r"line 2, column 1\): .*key 'seed' appears twice"),
    ("train:\n  lr: [1\n", r"not valid YAML \(line 3"),
    ("train: {lr: 1\n", r"not valid YAML"),
])
def test_broken_params_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError, match=message):
        load_params(AllParams, path)


def test_params_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes("seed: 1 # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ParamsError, match=r"params\.yaml: not UTF-8 text"):
        load_params(AllParams, path)


@pytest.mark.parametrize("name, count", [("crimean_plants.csv", 50), ("gemstones.csv", 87)])
def test_shipped_class_lists(name: str, count: int) -> None:
    specs = read_class_list(REPO_ROOT / "data/classes" / name)
    assert [spec.label for spec in specs] == list(range(count))
    assert len({spec.name for spec in specs}) == count


def test_crimean_query_is_the_latin_name() -> None:
    first = read_class_list(REPO_ROOT / "data/classes/crimean_plants.csv")[0]
    assert (first.name, first.query) == ("Adenophora liliifolia", "Adenophora liliifolia")


@pytest.mark.parametrize("text, message", [
    ("name,label\na,0\nb,2\n", r"label ids must be 0\.\.1"),
    ("name,label\na,0\na,1\n", "more than once"),
    ("title,label\na,0\n", "needs a name column"),
    ("name,label\na,zero\n", "not an integer"),
    ("name,label\n../x,0\n", "cannot be a folder name"),
])
def test_bad_class_lists(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "classes.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ClassListError, match=message):
        read_class_list(path)


def test_class_list_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "classes.csv"
    path.write_bytes("name,label\nRosa canina \u00e9,0\n".encode("latin-1"))  # byte 23: 0xe9
    with pytest.raises(ClassListError, match=r"classes\.csv: not UTF-8 text \(byte 23"):
        read_class_list(path)


def test_folder_names_get_sorted_ids() -> None:
    assert [(s.name, s.label) for s in classes_from_names(["tulips", "daisy"])] == [
        ("daisy", 0), ("tulips", 1)]

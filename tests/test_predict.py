"""`python -m imgclf predict`: top-k lines per image, one-line errors, clear exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from imgclf import __main__ as cli
from imgclf import predict
from imgclf.data import Preprocessing
from imgclf.models import build_model, save_checkpoint

CLASSES = ["daisy", "dandelion", "roses", "sunflowers"]
PROBABILITY_LINE = re.compile(r"^\s+\d+\.\d\d%  (\w+)$")


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model("simple_cnn", len(CLASSES)).state_dict(),
                    arch="simple_cnn", classes=CLASSES, preprocessing=Preprocessing.for_size(64), epoch=1,
                    val_accuracy=0.5, train_params={})
    return path


@pytest.fixture
def photo(tmp_path: Path, flowers_mini: Path) -> Path:
    path = tmp_path / "photo.jpg"
    with Image.open(sorted((flowers_mini / "daisy").glob("*.jpg"))[0]) as image:
        image.save(path)
    return path


def _blocks(stdout: str) -> dict[str, list[tuple[str, float]]]:
    """{image: [(class, probability), ...]} from predict's output."""
    blocks: dict[str, list[tuple[str, float]]] = {}
    current = ""
    for line in stdout.splitlines():
        if match := PROBABILITY_LINE.match(line):
            blocks[current].append((match[1], float(line.split("%")[0]) / 100))
        else:
            current = line.rstrip(":")
            blocks[current] = []
    return blocks


def test_prints_the_top_k_classes(model_path, photo, capsys):
    assert predict.main([str(photo), "--model", str(model_path), "--top-k", "2"]) == 0
    ranking = _blocks(capsys.readouterr().out)[str(photo)]
    assert len(ranking) == 2 and {name for name, _ in ranking} <= set(CLASSES)
    assert ranking[0][1] >= ranking[1][1] and sum(p for _, p in ranking) <= 1.0001


def test_top_k_is_capped_at_the_number_of_classes(model_path, photo, capsys):
    assert cli.main(["predict", str(photo), "--model", str(model_path)]) == 0  # default k = 5
    ranking = _blocks(capsys.readouterr().out)[str(photo)]
    assert sorted(name for name, _ in ranking) == CLASSES
    assert sum(p for _, p in ranking) == pytest.approx(1, abs=1e-3)


def test_bad_images_get_one_line_each_and_the_rest_is_printed(model_path, photo, tmp_path,
                                                             capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[:1500])
    missing = tmp_path / "missing.jpg"
    argv = [str(missing), str(text), str(photo), str(truncated), "--model", str(model_path)]

    assert predict.main(argv) == 1
    out, err = capsys.readouterr()
    assert list(_blocks(out)) == [str(photo)]
    missing_error, text_error, truncated_error = err.splitlines()
    assert missing_error == f"{missing}: error: no such file"
    assert text_error == (f"{text}: error: not an image file in an allowed format (JPEG, PNG, "
                          "WebP, GIF, BMP or TIFF)")
    assert truncated_error.startswith(f"{truncated}: error: cannot decode: image file is truncated")


def test_missing_model_says_to_pull_or_reproduce(tmp_path, photo, capsys):
    assert predict.main([str(photo), "--model", str(tmp_path / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert "dvc pull" in err and "dvc repro" in err and len(err.splitlines()) == 1


def test_top_k_must_be_positive(model_path, photo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(photo), "--model", str(model_path), "--top-k", "0"])
    assert exit_info.value.code == 2
    assert "--top-k: expected a positive integer" in capsys.readouterr().err

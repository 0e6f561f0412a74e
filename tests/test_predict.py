"""`python -m imgclf predict`: top-k lines per image or a CSV row per file, on a checkpoint or
its ONNX export; bad files never stop a run; clear exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imgclf import __main__ as cli
from imgclf.core.files import read_csv
from imgclf.serving import predict
from imgclf.serving.loaders import load_classifier, top_k
from imgclf.stages.export import onnx_model_bytes

from helpers.dvcrepo import environment
from helpers.tinymodel import CLASSES, bad_checkpoints, mixed_folder, write_checkpoint

PROBABILITY_LINE = re.compile(r"^\s+\d+\.\d\d%  (\w+)$")


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "model.pt")


@pytest.fixture
def onnx_path(model_path: Path) -> Path:
    path = model_path.with_suffix(".onnx")
    path.write_bytes(onnx_model_bytes(load_classifier(model_path)))
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


def _expected_rankings(model: Path, paths: list[Path], k: int) -> dict[str, list]:
    """Each photo classified alone, in this process: what the batched run must reproduce."""
    classifier = load_classifier(model)
    transform = classifier.card.preprocessing.eval_transform()
    expected = {}
    for path in paths:
        with Image.open(path) as image:
            batch = transform(image.convert("RGB")).unsqueeze(0)
        expected[str(path)] = top_k(classifier.probabilities(batch)[0], CLASSES, k)
    return expected


def _check_rows(rows: list[dict], expected: dict[str, list], bad: dict[Path, str]) -> None:
    assert sorted(row["path"] for row in rows) == sorted([*expected, *map(str, bad)])
    assert [row["path"] for row in rows] == sorted(row["path"] for row in rows)  # name order
    for row in rows:
        if row["path"] in expected:
            assert row["error"] == ""
            ranking = [(row[f"class_{r}"], float(row[f"probability_{r}"])) for r in (1, 2, 3)]
            assert [name for name, _ in ranking] == [n for n, _ in expected[row["path"]]]
            assert [p for _, p in ranking] == pytest.approx(
                [p for _, p in expected[row["path"]]], abs=1e-5)
        else:
            assert bad[Path(row["path"])] in row["error"], row
            assert row["class_1"] == row["probability_1"] == ""


@pytest.mark.parametrize("model_kind", ["checkpoint", "onnx"])
def test_a_folder_of_good_and_bad_files_gives_one_row_each(model_kind, model_path, onnx_path,
                                                           tmp_path, flowers_mini, capsys):
    folder = tmp_path / "inbox"
    good, bad = mixed_folder(folder, flowers_mini, good=5)
    model = model_path if model_kind == "checkpoint" else onnx_path
    out = tmp_path / "predictions.csv"

    status = predict.main([str(folder), "--out", str(out), "--model", str(model),
                           "--top-k", "3", "--batch-size", "2", "--workers", "1"])

    assert status == 1  # some files failed
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "class_1", "probability_1", "class_2", "probability_2",
                             "class_3", "probability_3", "error"]
    _check_rows(rows, _expected_rankings(model_path, good, 3), bad)
    assert "5 of 8 files classified, 3 failed" in capsys.readouterr().err


def test_all_good_files_exit_0_and_hidden_files_are_skipped(model_path, tmp_path, flowers_mini):
    folder = tmp_path / "inbox"
    good, _ = mixed_folder(folder, flowers_mini, good=3)
    for path in [*folder.glob("*.*"), *folder.glob("more/*.*")]:
        if path not in good:
            path.unlink()
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    out = tmp_path / "predictions.csv"
    assert predict.main([str(folder), "--out", str(out), "--model", str(model_path),
                         "--workers", "0"]) == 0
    assert sorted(row["path"] for row in read_csv(out)) == sorted(map(str, good))


def test_missing_inputs_and_empty_folders_are_rows_with_their_error(model_path, photo, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "predictions.csv"
    argv = [str(tmp_path / "missing.jpg"), str(tmp_path / "empty"), str(photo)]
    assert predict.main([*argv, "--out", str(out), "--model", str(model_path)]) == 1
    errors = {row["path"]: row["error"] for row in read_csv(out)}
    assert errors == {argv[0]: "no such file", argv[1]: "a folder without files", argv[2]: ""}


def test_the_command_streams_a_folder_through_onnx_and_sets_the_exit_status(
        onnx_path, tmp_path, flowers_mini):
    """The real command line, as a user runs it: `python -m imgclf predict DIR --out CSV`."""
    folder = tmp_path / "inbox"
    good, bad = mixed_folder(folder, flowers_mini, good=4)
    out = tmp_path / "predictions.csv"
    result = subprocess.run([sys.executable, "-m", "imgclf", "predict", str(folder), "--out",
                             str(out), "--model", str(onnx_path), "--top-k", "3"],
                            env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    _check_rows(read_csv(out), _expected_rankings(onnx_path.with_suffix(".pt"), good, 3), bad)
    assert "4 of 7 files classified, 3 failed" in result.stderr


def test_console_output_covers_the_files_of_a_folder(model_path, tmp_path, flowers_mini,
                                                     capsys):
    folder = tmp_path / "inbox"
    good, bad = mixed_folder(folder, flowers_mini, good=2)
    assert predict.main([str(folder), "--model", str(model_path), "--top-k", "2"]) == 1
    out, err = capsys.readouterr()
    blocks = _blocks(out)
    assert sorted(blocks) == sorted(map(str, good))
    assert all(len(ranking) == 2 for ranking in blocks.values())
    assert sorted(line.split(": error: ")[0] for line in err.splitlines()) == sorted(map(str, bad))


@pytest.mark.parametrize("case", ["unknown arch", "other arch", "class count", "no classes",
                                  "bad preprocessing", "empty file"])
def test_an_unusable_checkpoint_exits_2_with_one_line(case, photo, tmp_path, capsys):
    path, message = bad_checkpoints(tmp_path)[case]
    assert predict.main([str(photo), "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_an_onnx_file_that_is_not_ours_exits_2(photo, tmp_path, capsys):
    stranger = tmp_path / "stranger.onnx"
    stranger.write_bytes(b"\x08\x07")  # a valid protobuf prefix, not a model
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"GIF89a not protobuf at all")
    for model in (stranger, garbage, tmp_path / "missing.onnx"):
        assert predict.main([str(photo), "--model", str(model)]) == 2
    messages = capsys.readouterr().err.splitlines()
    assert len(messages) == 3 and all(m.startswith("imgclf predict: error: ") for m in messages)
    assert "dvc repro export" in messages[2]

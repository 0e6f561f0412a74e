"""data/curation.csv: decisions keyed by content, checked on reading, written sorted."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgclf.curation.decisions import (
    Decision,
    DecisionError,
    content_id,
    read_decisions,
    write_decisions,
)

CLASSES = ["daisy", "roses", "tulips"]
A, B = "00b514a0a847999b4304", "ffe0c1d2a3b4c5d6e7f8"


def test_round_trip_sorted_by_content_id(tmp_path: Path) -> None:
    path = tmp_path / "curation.csv"
    decisions = {B: Decision(B, "relabel", "roses", "a rose, filed as daisy"),
                 A: Decision(A, "reject", note="a drawing")}
    write_decisions(decisions, path)
    assert path.read_text().splitlines() == ["image,decision,class,note",
                                             f"{A},reject,,a drawing",
                                             f"{B},relabel,roses,\"a rose, filed as daisy\""]
    assert read_decisions(CLASSES, path) == decisions


def test_no_file_means_no_decisions(tmp_path: Path) -> None:
    assert read_decisions(CLASSES, tmp_path / "curation.csv") == {}


def test_content_id_of_raw_and_cleaned_paths() -> None:
    assert content_id(f"data/clean/daisy/{A}.jpg.jpg") == A
    assert content_id(f"daisy/{A}.png") == A
    with pytest.raises(DecisionError, match="not a picture named by its content"):
        content_id("daisy/photo.jpg")


@pytest.mark.parametrize("row, message", [
    (f"{A},relabel,lilies,", r"curation\.csv:2: class: .* one of the 3 classes .*'lilies'"),
    (f"{A},delete,,", r"curation\.csv:2: decision: one of reject, relabel, keep"),
    (f"{A},reject,roses,", r"curation\.csv:2: class: empty unless the decision is relabel"),
    ("0b5,reject,,", r"curation\.csv:2: image: 20 lowercase hex digits"),
    (f"{A},reject,,\n{A},keep,,", r"curation\.csv:3: image .* is decided twice"),
])
def test_bad_rows_name_the_line_and_what_is_allowed(tmp_path: Path, row: str,
                                                    message: str) -> None:
    path = tmp_path / "curation.csv"
    path.write_text("image,decision,class,note\n" + row + "\n")
    with pytest.raises(DecisionError, match=message):
        read_decisions(CLASSES, path)

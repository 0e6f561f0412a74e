"""Class names become folder names on every machine that pulls the data: only portable ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imgclf.core.classes import ClassListError, check_class_name, read_class_list


@pytest.mark.parametrize("name, problem", [
    ("manifest.csv", "a file of that name sits beside the class folders"),
    ("Classes.CSV", "a file of that name sits beside the class folders"),
    ("x:y", "it contains ':'"),
    ("a" * 300, "300 characters, 300 bytes"),
    ("é" * 150, "150 characters, 300 bytes"),
    ("tab\there", r"it contains '\t'"),
    (".hidden", "it starts with '.', which hides a folder"),
    ("trailing.", "it ends with a space or '.', which Windows drops"),
])
def test_a_class_list_names_the_line_what_is_wrong_and_what_is_allowed(
        tmp_path: Path, name: str, problem: str) -> None:
    path = tmp_path / "classes.csv"
    path.write_text(f'name,label\ndaisy,0\n"{name}",1\n', encoding="utf-8")
    with pytest.raises(ClassListError) as caught:
        read_class_list(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: class name ")
    assert f"cannot be a folder name ({problem}); allowed: 1 to 100 characters" in message


@pytest.mark.parametrize("name", ["Coleus scutellarioides(CS)", "Адонис весенний", "Garnet Red",
                                  "a" * 100, "日本" * 42, "x.y-z_1"])
def test_ordinary_names_pass(name: str) -> None:
    check_class_name(name, "here")


def test_a_long_name_is_shortened_in_the_message() -> None:
    with pytest.raises(ClassListError, match=re.escape(f"'{'b' * 60}...'")):
        check_class_name("b" * 300, "here")

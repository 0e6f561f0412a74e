"""The class list: names, stable label ids and search queries.

Label ids are part of a trained model's contract, so they come from the class-list CSV (or, for a
folder without a list, from the sorted folder names), never from the order a file system lists.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from imgclf.core.errors import ImgclfError
from imgclf.core.files import write_csv

# Recognised column names, case-insensitive, in order of preference. The shipped lists use
# `Latin`/`Class` (Crimean plants) and `name`/`label` (gemstones).
NAME_COLUMNS = ("name", "latin", "class_name")
LABEL_COLUMNS = ("label", "class", "id")
QUERY_COLUMNS = ("query",)


class ClassListError(ImgclfError, ValueError):
    """The class list cannot be used as it is."""


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    name: str   # the class's name, also its folder name under data/raw and data/clean
    label: int  # the model's output index
    query: str  # what a web source searches for


# Class names become folder names in data/raw and data/clean, on this machine and on every
# machine that pulls the data: the rules keep them portable (Windows and macOS included).
MAX_NAME_CHARACTERS = 100
MAX_NAME_BYTES = 255  # most file systems' limit for one name, in UTF-8
FORBIDDEN_CHARACTERS = frozenset('/\\:*?"<>|')
# Files that the stages write beside the class folders (compared ignoring case, as macOS does).
RESERVED_NAMES = frozenset({"manifest.csv", "classes.csv"})
NAME_RULES = (f"1 to {MAX_NAME_CHARACTERS} characters ({MAX_NAME_BYTES} bytes in UTF-8), none of "
              f"{' '.join(sorted(FORBIDDEN_CHARACTERS))} or control characters, not starting "
              "with '.', not ending with a space or '.', not "
              + " or ".join(sorted(RESERVED_NAMES)))


def check_class_name(name: str, where: str) -> None:
    """A class name becomes a folder name: refuse anything that is not a plain, portable one."""
    problem = _name_problem(name)
    if problem:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise ClassListError(f"{where}: class name {shown!r} cannot be a folder name ({problem}); "
                             f"allowed: {NAME_RULES}")


def _name_problem(name: str) -> str:
    """Why `name` cannot be a portable folder name, or "" when it can."""
    size = len(name.encode("utf-8"))
    forbidden = sorted({char for char in name if char in FORBIDDEN_CHARACTERS or ord(char) < 32})
    if not name.strip():
        return "it is empty"
    if len(name) > MAX_NAME_CHARACTERS or size > MAX_NAME_BYTES:
        return f"{len(name)} characters, {size} bytes"
    if forbidden:
        return "it contains " + " ".join(repr(char) for char in forbidden)
    if name.startswith("."):
        return "it starts with '.', which hides a folder"
    if name.endswith((" ", ".")):
        return "it ends with a space or '.', which Windows drops"
    if name.lower() in RESERVED_NAMES:
        return "a file of that name sits beside the class folders"
    return ""


def _find_column(header: list[str], candidates: tuple[str, ...]) -> str | None:
    lowered = {column.strip().lower(): column for column in header}
    return next((lowered[c] for c in candidates if c in lowered), None)


def read_class_list(path: Path) -> list[ClassSpec]:
    """Read a class-list CSV, sorted by label id; ids must be 0..n-1, names unique."""
    if not path.is_file():
        raise ClassListError(f"classes: {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ClassListError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); "
                             "save the class list as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    name_col = _find_column(header, NAME_COLUMNS)
    label_col = _find_column(header, LABEL_COLUMNS)
    query_col = _find_column(header, QUERY_COLUMNS)
    if name_col is None or label_col is None:
        raise ClassListError(
            f"{path}: needs a name column ({', '.join(NAME_COLUMNS)}) and a label-id column "
            f"({', '.join(LABEL_COLUMNS)}); found columns {header}")
    specs = [_spec_from_row(row, path, line, name_col, label_col, query_col)
             for line, row in enumerate(reader, start=2)]
    _check_unique_and_dense(specs, path)
    return sorted(specs, key=lambda spec: spec.label)


def _spec_from_row(row: dict[str, str], path: Path, line: int, name_col: str, label_col: str,
                   query_col: str | None) -> ClassSpec:
    name = (row.get(name_col) or "").strip()
    check_class_name(name, f"{path}:{line}")
    try:
        label = int((row.get(label_col) or "").strip())
    except ValueError:
        raise ClassListError(f"{path}:{line}: label id {row.get(label_col)!r} is not an integer")
    query = (row.get(query_col) or "").strip() if query_col else ""
    return ClassSpec(name=name, label=label, query=query or name)


def _check_unique_and_dense(specs: list[ClassSpec], path: Path) -> None:
    if not specs:
        raise ClassListError(f"{path}: the class list is empty")
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ClassListError(f"{path}: class names appear more than once: {repeated}")
    labels = sorted(spec.label for spec in specs)
    if labels != list(range(len(specs))):
        raise ClassListError(f"{path}: label ids must be 0..{len(specs) - 1}, each once; "
                             f"got {labels}")


def classes_from_names(names: list[str]) -> list[ClassSpec]:
    """Classes for a folder without a class list: ids follow the sorted names."""
    for name in names:
        check_class_name(name, "folder")
    return [ClassSpec(name=name, label=i, query=name) for i, name in enumerate(sorted(names))]


def write_class_list(path: Path, specs: list[ClassSpec]) -> None:
    """Write the resolved classes (name, label, query) that later stages read."""
    write_csv(path, ("name", "label", "query"),
              ({"name": s.name, "label": s.label, "query": s.query} for s in specs))

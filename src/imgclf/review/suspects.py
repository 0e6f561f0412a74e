"""The audit's ranking, data/audit/suspects.csv (imgclf.curation.suspects: its columns and row
parser), as the review page reads it.

The page serves a picture only through this table, looked up by content id: every row is checked
here, so that the path it names is a plain `<class>/<file>` inside data/clean and nothing a
request sends ever becomes a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from imgclf.curation.decisions import CONTENT_ID, DecisionError, content_id
from imgclf.curation.suspects import Suspect, SuspectsError, read_located


def read_suspects(path: Path, classes: Iterable[str]) -> list[Suspect]:
    """The rows of `path` in its order (most suspicious first), each checked beyond the row
    parser: every row names a picture the page may serve."""
    known = set(classes)
    suspects: list[Suspect] = []
    seen: set[str] = set()
    for suspect, where in read_located(path):
        _check(suspect, known, where)
        if suspect.image in seen:
            raise SuspectsError(f"{where}: image {suspect.image} appears twice; the audit "
                                "writes one row per picture")
        seen.add(suspect.image)
        suspects.append(suspect)
    return suspects


def _check(suspect: Suspect, classes: set[str], where: str) -> None:
    if not CONTENT_ID.fullmatch(suspect.image):
        raise SuspectsError(f"{where}: image: a content id, 20 lowercase hex digits "
                            f"(got {suspect.image!r})")
    if suspect.cls not in classes:
        raise _unknown_class(where, "class", suspect.cls)
    if suspect.suggested and suspect.suggested not in classes:
        raise _unknown_class(where, "suggested", suspect.suggested)
    _check_file(suspect, where)


def _unknown_class(where: str, column: str, name: str) -> SuspectsError:
    return SuspectsError(f"{where}: {column}: {name!r} is not in data/clean/classes.csv; run "
                         "`dvc repro audit` to rank the current pictures")


def _check_file(suspect: Suspect, where: str) -> None:
    """A file is `<its class>/<its content id>...`: one folder down, no `..`, no absolute path."""
    parts = Path(suspect.file).parts
    try:
        named = content_id(suspect.file)
    except DecisionError:
        named = ""
    if len(parts) != 2 or parts[0] != suspect.cls or named != suspect.image \
            or "\\" in suspect.file:
        raise SuspectsError(f"{where}: file: <class>/<content id>.<ext>.jpg under data/clean, "
                            f"in the row's class and named by its image "
                            f"(got {suspect.file!r} for {suspect.cls}/{suspect.image})")

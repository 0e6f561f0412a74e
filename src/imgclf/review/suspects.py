"""The audit's ranking, data/audit/suspects.csv, as the review page reads it.

One row per cleaned picture, most suspicious first: `file` (its path under data/clean,
`<class>/<content id>.<ext>.jpg`), `image` (the content id), `class` (where it is filed),
`suggested` (the most likely other class), `issue` (off-topic, mislabeled or ok), `score` (higher
is more suspicious) and `cluster` (shared by a group of off-topic pictures, or empty).

The page serves a picture only through this table, looked up by content id: every row is checked
here, so that the path it names is a plain `<class>/<file>` inside data/clean and nothing a
request sends ever becomes a path.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Iterable

from imgclf.core.files import read_csv
from imgclf.core.paths import SUSPECTS
from imgclf.curation.decisions import CONTENT_ID, DecisionError, content_id
from imgclf.curation.suspects import COLUMNS, ISSUES, SuspectsError

# The audit stage writes the file (imgclf.curation.suspects); the review page only reads it, with
# checks of its own: every row names a picture it may serve.
SUSPECTS_FILE = SUSPECTS


@dataclasses.dataclass(frozen=True)
class Suspect:
    file: str       # under data/clean
    image: str      # the content id
    filed: str      # the class it is filed in
    suggested: str  # the most likely other class, or ""
    issue: str
    score: float
    cluster: str    # "" when it belongs to no group


def read_suspects(path: Path, classes: Iterable[str]) -> list[Suspect]:
    """The rows of `path` in its order (most suspicious first), each checked."""
    if not path.is_file():
        raise SuspectsError(f"{path} does not exist: run `dvc repro audit` first, which ranks the "
                            "cleaned pictures")
    rows = read_csv(path)
    if rows and set(COLUMNS) - set(rows[0]):
        raise SuspectsError(f"{path}: needs columns {', '.join(COLUMNS)}; "
                            f"found {', '.join(rows[0])}")
    known = set(classes)
    suspects: list[Suspect] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        suspect = _suspect(row, known, f"{path}:{line}")
        if suspect.image in seen:
            raise SuspectsError(f"{path}:{line}: image {suspect.image} appears twice; the audit "
                                "writes one row per picture")
        seen.add(suspect.image)
        suspects.append(suspect)
    return suspects


def _suspect(row: dict[str, str], classes: set[str], where: str) -> Suspect:
    suspect = Suspect(file=row["file"], image=row["image"], filed=row["class"],
                      suggested=row["suggested"], issue=row["issue"],
                      score=_score(row["score"], where), cluster=row["cluster"])
    if not CONTENT_ID.fullmatch(suspect.image):
        raise SuspectsError(f"{where}: image: a content id, 20 lowercase hex digits "
                            f"(got {suspect.image!r})")
    if suspect.filed not in classes:
        raise _unknown_class(where, "class", suspect.filed)
    if suspect.suggested and suspect.suggested not in classes:
        raise _unknown_class(where, "suggested", suspect.suggested)
    _check_file(suspect, where)
    if suspect.issue not in ISSUES:
        raise SuspectsError(f"{where}: issue: one of {', '.join(ISSUES)} "
                            f"(got {suspect.issue!r})")
    return suspect


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
    if len(parts) != 2 or parts[0] != suspect.filed or named != suspect.image \
            or "\\" in suspect.file:
        raise SuspectsError(f"{where}: file: <class>/<content id>.<ext>.jpg under data/clean, "
                            f"in the row's class and named by its image "
                            f"(got {suspect.file!r} for {suspect.filed}/{suspect.image})")


def _score(text: str, where: str) -> float:
    try:
        score = float(text)
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise SuspectsError(f"{where}: score: a finite number (got {text!r})")
    return score

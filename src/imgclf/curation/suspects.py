"""The audit's ranking, data/audit/suspects.csv: every cleaned picture, most suspicious first.

Columns: `file` (the path under data/clean, which carries the content id), `image` (that id, the
key of data/curation.csv), `class` (where it is filed), `suggested` (the most likely other
class), `issue` (`off-topic`, `mislabeled` or `ok`), `score` (0..1, higher = more suspicious) and
`cluster` (an id shared by a group of off-topic pictures of one class, empty otherwise).
The audit stage writes it; the label stage reads it for audit.auto_reject, the review page to
order what it shows.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Iterable, Iterator

from imgclf.core.errors import ImgclfError
from imgclf.core.files import read_csv, write_csv
from imgclf.core.paths import SUSPECTS

COLUMNS = ("file", "image", "class", "suggested", "issue", "score", "cluster")
ISSUES = ("off-topic", "mislabeled", "ok")


class SuspectsError(ImgclfError, ValueError):
    """data/audit/suspects.csv cannot be read."""


@dataclasses.dataclass(frozen=True)
class Suspect:
    file: str       # relative to data/clean: daisy/<id>.jpg.jpg
    image: str      # the content id
    cls: str
    suggested: str
    issue: str      # one of ISSUES
    score: float
    cluster: str = ""

    @property
    def flagged(self) -> bool:
        return self.issue != "ok"


def write_suspects(path: Path, suspects: Iterable[Suspect]) -> None:
    """Most suspicious first; ties in file order, so that the file is the same on every run."""
    ordered = sorted(suspects, key=lambda suspect: (-suspect.score, suspect.file))
    write_csv(path, COLUMNS, ({"file": s.file, "image": s.image, "class": s.cls,
                               "suggested": s.suggested, "issue": s.issue,
                               "score": f"{s.score:.4f}", "cluster": s.cluster}
                              for s in ordered))


def read_suspects(path: Path = SUSPECTS) -> dict[str, Suspect]:
    """The ranking by content id."""
    return {suspect.image: suspect for suspect, _ in read_located(path)}


def read_located(path: Path) -> Iterator[tuple[Suspect, str]]:
    """Each row as a Suspect with where it is (`path:line`, for messages), in the file's order;
    the columns, issue and score checked."""
    if not path.is_file():
        raise SuspectsError(f"{path} not found: run `dvc repro audit` first, which ranks the "
                            "cleaned pictures")
    rows = read_csv(path)
    if rows and set(COLUMNS) - set(rows[0]):
        raise SuspectsError(f"{path}: needs columns {', '.join(COLUMNS)}; "
                            f"found {', '.join(rows[0])}")
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        yield _suspect(row, where), where


def _suspect(row: dict[str, str], where: str) -> Suspect:
    if row["issue"] not in ISSUES:
        raise SuspectsError(f"{where}: issue: one of {', '.join(ISSUES)} (got {row['issue']!r})")
    try:
        score = float(row["score"])
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise SuspectsError(f"{where}: score: a finite number (got {row['score']!r})")
    return Suspect(row["file"], row["image"], row["class"], row["suggested"], row["issue"],
                   score, row["cluster"])

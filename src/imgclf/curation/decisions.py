"""The decisions file, data/curation.csv: what a person decided about pictures, kept in git.

One row per picture, keyed by its content id: the first 20 hex digits of the SHA-256 of the
bytes as scraped, which name the raw file (data/raw/<class>/<id>.<ext>) and, through it, the
cleaned one (data/clean/<class>/<id>.<ext>.jpg). A decision therefore survives a re-scrape, a
renamed class and new classes: the same bytes get the same id wherever they are filed.

- `reject`: the picture is in no split;
- `relabel`: it belongs to `class`, another class of the list;
- `keep`: reviewed, it belongs where it is (the audit stops asking about it).

The file is written atomically, sorted by id, so that a decision is one line in a git diff.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable, Literal, Mapping

from imgclf.core.errors import ImgclfError
from imgclf.core.files import read_csv, write_csv

CURATION_FILE = Path("data/curation.csv")
COLUMNS = ("image", "decision", "class", "note")
VERDICTS = ("reject", "relabel", "keep")
Verdict = Literal["reject", "relabel", "keep"]
CONTENT_ID = re.compile(r"[0-9a-f]{20}")


class DecisionError(ImgclfError, ValueError):
    """A decision that cannot be applied."""


@dataclasses.dataclass(frozen=True)
class Decision:
    image: str          # the content id
    decision: Verdict
    target: str = ""    # the new class, for relabel only
    note: str = ""


def content_id(file: str | Path) -> str:
    """The content id of a raw or cleaned picture's path (`daisy/00b5…4304.jpg.jpg`)."""
    image = Path(file).name.split(".", 1)[0]
    if not CONTENT_ID.fullmatch(image):
        raise DecisionError(f"{file}: not a picture named by its content (20 hex digits)")
    return image


def check(decision: Decision, classes: Iterable[str], where: str) -> None:
    """Refuse a decision that names no picture, no known verdict, or an unknown class."""
    if not CONTENT_ID.fullmatch(decision.image):
        raise DecisionError(f"{where}: image: 20 lowercase hex digits, a picture's content id "
                            f"(got {decision.image!r})")
    if decision.decision not in VERDICTS:
        raise DecisionError(f"{where}: decision: one of {', '.join(VERDICTS)} "
                            f"(got {decision.decision!r})")
    known = set(classes)
    if decision.decision == "relabel" and decision.target not in known:
        raise DecisionError(f"{where}: class: the class to move the picture to, one of the "
                            f"{len(known)} classes of the list (got {decision.target!r})")
    if decision.decision != "relabel" and decision.target:
        raise DecisionError(f"{where}: class: empty unless the decision is relabel "
                            f"(got {decision.target!r})")


def read_decisions(classes: Iterable[str], path: Path = CURATION_FILE) -> dict[str, Decision]:
    """The decisions by content id; none when the file does not exist."""
    if not path.is_file():
        return {}
    classes = list(classes)
    rows = read_csv(path)
    if rows and set(COLUMNS) - set(rows[0]):
        raise DecisionError(f"{path}: needs columns {', '.join(COLUMNS)}; "
                            f"found {', '.join(rows[0])}")
    decisions: dict[str, Decision] = {}
    for line, row in enumerate(rows, start=2):
        decision = Decision(row["image"], row["decision"], row["class"], row["note"])
        check(decision, classes, f"{path}:{line}")
        if decision.image in decisions:
            raise DecisionError(f"{path}:{line}: image {decision.image} is decided twice; keep "
                                "one row per picture")
        decisions[decision.image] = decision
    return decisions


def write_decisions(decisions: Mapping[str, Decision], path: Path = CURATION_FILE) -> None:
    write_csv(path, COLUMNS, ({"image": d.image, "decision": d.decision, "class": d.target,
                               "note": d.note} for _, d in sorted(decisions.items())))

"""What the review page changes: data/curation.csv, one batch of decisions at a time, with undo.

The file is read again before every change, so that an edit made meanwhile (by hand, by a
`git checkout`, by a second page) is kept and not overwritten with an old copy; each change is
written at once, atomically (`write_decisions`). Undo puts back what the last batch replaced, for
as long as this process runs.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from imgclf.core.errors import ImgclfError
from imgclf.curation.decisions import Decision, Verdict, check, read_decisions, write_decisions
from imgclf.curation.suspects import Suspect

# How many batches undo can take back: more than a person undoes, little memory.
UNDO_DEPTH = 1000


class ReviewError(ImgclfError, ValueError):
    """A change the page asked for that cannot be made."""


class UnknownImage(ReviewError, LookupError):
    """A content id that is in no row of suspects.csv."""


class NothingToUndo(ReviewError):
    """Undo when no batch is left to take back."""


@dataclasses.dataclass(frozen=True)
class Change:
    image: str
    decision: Verdict | None  # None: remove the picture's decision
    target: str = ""          # the new class, for relabel
    note: str = ""


# What a batch replaced: per content id, the decision before it (None: there was none).
Previous = dict[str, Decision | None]


class ReviewSession:
    def __init__(self, suspects: list[Suspect], classes: list[str], decisions_file: Path) -> None:
        self.suspects = suspects
        self.classes = classes
        self.decisions_file = decisions_file
        self._by_image = {suspect.image: suspect for suspect in suspects}
        self._lock = threading.Lock()  # FastAPI runs plain endpoints in a pool of threads
        self._history: list[Previous] = []
        self.decisions()  # a broken decisions file is reported at start, not on the first click

    def suspect(self, image: str) -> Suspect:
        try:
            return self._by_image[image]
        except KeyError:
            raise UnknownImage(f"image {image!r}: no picture of data/audit/suspects.csv has this "
                               "content id") from None

    def decisions(self) -> dict[str, Decision]:
        return read_decisions(self.classes, self.decisions_file)

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def apply(self, changes: list[Change]) -> None:
        """Make every change or, when one of them cannot be made, none."""
        new = {change.image: self._decision(change) for change in changes}
        with self._lock:
            previous = self._replace(new)
            self._history = (self._history + [previous])[-UNDO_DEPTH:]

    def undo(self) -> None:
        with self._lock:
            if not self._history:
                raise NothingToUndo("nothing to undo: no decision was made since the page started")
            self._replace(self._history.pop())

    def _replace(self, new: dict[str, Decision | None]) -> Previous:
        """Write `new` over the file's decisions; what it replaced."""
        decisions = self.decisions()
        previous = {image: decisions.get(image) for image in new}
        for image, decision in new.items():
            if decision is None:
                decisions.pop(image, None)
            else:
                decisions[image] = decision
        write_decisions(decisions, self.decisions_file)
        return previous

    def _decision(self, change: Change) -> Decision | None:
        suspect = self.suspect(change.image)
        if change.decision is None:
            return None
        decision = Decision(change.image, change.decision, change.target, change.note)
        check(decision, self.classes, f"image {change.image}")
        if change.decision == "relabel" and change.target == suspect.cls:
            raise ReviewError(f"image {change.image}: relabel to {change.target!r}, the class "
                              "it is filed in, changes nothing; keep says it belongs there")
        return decision

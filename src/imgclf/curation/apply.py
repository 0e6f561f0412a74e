"""What curation changes before the split: a person's decisions (data/curation.csv) and the
automatic rule (audit.auto_reject) applied to the cleaned pictures, and the estimate of the noise
that remains.

A person's decision wins over the rule: a picture someone kept is never rejected automatically.
One rule for every picture, before the split, so that train, validation and test are curated
alike.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from imgclf.curation.decisions import Decision
from imgclf.curation.suspects import Suspect

PERSON, AUTO = "person", "auto"
CHANGE_COLUMNS = ("image", "file", "class", "decision", "target", "by")


@dataclasses.dataclass(frozen=True)
class Change:
    """A picture that curation removes (reject) or moves (relabel) before the split."""
    image: str
    file: str
    cls: str        # where it is filed
    decision: str   # reject | relabel
    target: str     # the new class (relabel)
    by: str         # PERSON or AUTO

    def row(self) -> dict[str, str]:
        return {"image": self.image, "file": self.file, "class": self.cls,
                "decision": self.decision, "target": self.target, "by": self.by}


@dataclasses.dataclass(frozen=True)
class Picture:
    image: str  # content id
    file: str   # as the split lists it
    cls: str


def changes(pictures: Iterable[Picture], decisions: Mapping[str, Decision],
            suspects: Mapping[str, Suspect], thresholds: Mapping[str, float]) -> list[Change]:
    """The changes to `pictures`, in their order. `thresholds`: per issue, the score from which
    an undecided suspect is rejected (issues without one are never rejected automatically)."""
    found = []
    for picture in pictures:
        change = _change(picture, decisions.get(picture.image), suspects.get(picture.image),
                         thresholds)
        if change is not None:
            found.append(change)
    return found


def _change(picture: Picture, decision: Decision | None, suspect: Suspect | None,
            thresholds: Mapping[str, float]) -> Change | None:
    if decision is not None:
        if decision.decision == "reject":
            return Change(picture.image, picture.file, picture.cls, "reject", "", PERSON)
        if decision.decision == "relabel" and decision.target != picture.cls:
            return Change(picture.image, picture.file, picture.cls, "relabel", decision.target,
                          PERSON)
        return None  # kept, or relabeled to where it already is
    if suspect is not None and suspect.issue in thresholds \
            and suspect.score >= thresholds[suspect.issue]:
        return Change(picture.image, picture.file, picture.cls, "reject", "", AUTO)
    return None


def remaining_noise(suspects: Mapping[str, Suspect], decisions: Mapping[str, Decision],
                    auto_rejected: set[str], images: int) -> dict:
    """How often a reviewed suspect was really wrong (rejected or moved), carried over to the
    suspects nobody has reviewed (nor rejected automatically): their expected number of wrong
    pictures, and that as a share of the `images` that the split holds. None until a suspect
    has been reviewed."""
    flagged = [image for image, suspect in suspects.items() if suspect.flagged]
    reviewed = [image for image in flagged if image in decisions]
    confirmed = sum(decisions[image].decision != "keep" for image in reviewed)
    unreviewed = sum(image not in decisions and image not in auto_rejected for image in flagged)
    precision = confirmed / len(reviewed) if reviewed else None
    wrong_left = None if precision is None else precision * unreviewed
    return {"suspects": len(flagged), "reviewed_suspects": len(reviewed),
            "confirmed_suspects": confirmed, "unreviewed_suspects": unreviewed,
            "suspect_precision": precision,
            "estimated_wrong_left": None if wrong_left is None else round(wrong_left, 1),
            "estimated_noise_left": None if wrong_left is None or not images
            else round(wrong_left / images, 4)}

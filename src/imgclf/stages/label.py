"""Label stage: stable label ids and a stratified, seeded train/val/test split without leaks.

Label ids come from the class list. Look-alike groups (the same scene in another exposure, colour
edit or a slightly different framing, found with a looser threshold than the duplicates that clean
dropped) are never split: a picture in test whose twin is in train would make the test figures
optimistic.

Curation comes first, one rule for every picture: a picture that a person rejected in
data/curation.csv is in no split, one they relabeled is in its new class, and, when
audit.auto_reject sets a threshold, an undecided suspect of data/audit/suspects.csv scoring at
least that is rejected too. What changed is listed in data/split/curation.csv (evaluate reports
it next to the accuracy); metrics/split.json holds the counts and the estimate of the noise that
remains (from the decisions so far: the audit itself never reads them).

Reads data/clean (manifest, class list, images of candidate pairs), data/curation.csv and
data/audit/suspects.csv (when it exists; required with auto_reject) and writes data/split
(train.csv, val.csv, test.csv, classes.csv, curation.csv), metrics/split.json and
metrics/split_per_class.csv.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from imgclf import dedup
from imgclf.config.audit import AutoReject
from imgclf.config.label import LabelParams, LabelStageParams
from imgclf.core.classes import ClassSpec, read_class_list, write_class_list
from imgclf.core.cli import stage_main
from imgclf.core.errors import StageError
from imgclf.core.files import atomic_directory, read_csv, write_csv, write_json
from imgclf.core.images import decode_image
from imgclf.core.paths import (
    CLEAN_CLASSES,
    CLEAN_DIR,
    CLEAN_MANIFEST,
    SPLIT_CLASSES,
    SPLIT_COLUMNS,
    SPLIT_CURATION,
    SPLIT_DIR,
    SPLIT_FILES,
    SPLIT_METRICS,
    SPLIT_PER_CLASS,
    SUSPECTS,
)
from imgclf.curation import apply
from imgclf.curation.decisions import content_id, read_decisions
from imgclf.curation.suspects import Suspect, read_suspects

SPLITS = tuple(SPLIT_FILES)  # train, val, test
CURATION_COUNTS = ("removed", "moved_out", "moved_in")


@dataclasses.dataclass(frozen=True)
class Item:
    path: str  # relative to the repository root, e.g. "data/clean/daisy/3f2a.jpg"
    cls: str
    label: int
    phash: int


def run(params: LabelStageParams) -> None:
    classes = read_class_list(CLEAN_CLASSES)
    found = kept_images(classes)
    decisions = read_decisions(spec.name for spec in classes)
    thresholds = auto_reject_thresholds(params.audit.auto_reject)
    suspects = read_audit(thresholds)
    changes = apply.changes((apply.Picture(content_id(item.path), item.path, item.cls)
                             for item in found), decisions, suspects, thresholds)
    items = curated(found, changes, classes)
    labels = np.array([item.label for item in items])
    groups = lookalike_groups(items, params.label)
    check_class_sizes(items, groups, params.label)
    splits = assign_splits(labels, groups, params.label, params.seed)
    with atomic_directory(SPLIT_DIR) as out:
        for name in SPLITS:
            write_csv(out / SPLIT_FILES[name].name, SPLIT_COLUMNS,
                      ({"path": item.path, "label": item.label, "class": item.cls,
                        "group": int(group)}
                       for item, group, split in zip(items, groups, splits) if split == name))
        write_class_list(out / SPLIT_CLASSES.name, classes)
        write_csv(out / SPLIT_CURATION.name, apply.CHANGE_COLUMNS,
                  (change.row() for change in changes))
    auto_rejected = {change.image for change in changes if change.by == apply.AUTO}
    write_json(SPLIT_METRICS, summarise(items, groups, splits) | {"curation": {
        "rejected": sum(change.decision == "reject" for change in changes),
        "relabeled": sum(change.decision == "relabel" for change in changes),
        "auto_rejected": len(auto_rejected),
        **apply.remaining_noise(suspects, decisions, auto_rejected, len(items))}})
    write_csv(SPLIT_PER_CLASS, ("class", "label") + SPLITS + CURATION_COUNTS,
              counts_per_class(items, splits, classes, changes))


def kept_images(classes: list[ClassSpec]) -> list[Item]:
    """The kept images of the clean manifest, sorted by path; every class must have one."""
    if not CLEAN_MANIFEST.is_file():
        raise StageError(f"{CLEAN_MANIFEST} not found: run the clean stage first")
    label_of = {spec.name: spec.label for spec in classes}
    items = sorted((Item((CLEAN_DIR / row["clean_file"]).as_posix(), row["class"],
                         label_of[row["class"]], dedup.parse_hash(row["phash"]))
                    for row in read_csv(CLEAN_MANIFEST) if row["status"] == "kept"),
                   key=lambda item: item.path)
    present = {item.cls for item in items}
    empty = [spec.name for spec in classes if spec.name not in present]
    if empty:
        raise StageError(f"classes without any clean image: {', '.join(empty)}; scrape more "
                         "images for them or remove them from the class list")
    return items


def auto_reject_thresholds(rule: AutoReject) -> dict[str, float]:
    """The rules that are on, by issue as suspects.csv names it."""
    rules = {"off-topic": rule.off_topic, "mislabeled": rule.mislabeled}
    return {issue: float(value) for issue, value in rules.items() if value is not False}


def read_audit(thresholds: dict[str, float]) -> dict[str, Suspect]:
    """The audit's ranking by content id: needed by the automatic rule, used (when there) for
    the noise estimate; the label stage also runs without it, as in a pipeline before audit."""
    if thresholds or SUSPECTS.is_file():
        return read_suspects(SUSPECTS)
    return {}


def curated(items: list[Item], changes: list[apply.Change],
            classes: list[ClassSpec]) -> list[Item]:
    """The items without the rejected ones, relabeled ones in their new class."""
    label_of = {spec.name: spec.label for spec in classes}
    change_of = {change.file: change for change in changes}
    kept = []
    for item in items:
        change = change_of.get(item.path)
        if change is None:
            kept.append(item)
        elif change.decision == "relabel":
            kept.append(dataclasses.replace(item, cls=change.target,
                                            label=label_of[change.target]))
    return kept


def lookalike_groups(items: list[Item], params: LabelParams) -> np.ndarray:
    """A group id per item; thumbnails are decoded only for the items of candidate pairs."""
    hashes = np.array([item.phash for item in items], dtype=np.uint64)
    pairs = dedup.candidate_pairs(hashes, params.group_distance)
    involved, compact = np.unique(pairs, return_inverse=True)
    if len(involved):
        thumbnails = np.stack([dedup.thumbnail(decode_image(Path(items[k].path)))
                               for k in involved])
        close = dedup.thumbnail_differences(thumbnails, compact.reshape(pairs.shape))
        pairs = pairs[close <= params.group_tolerance]
    return dedup.group_ids(len(items), pairs)


def fold_count(fraction: float) -> int:
    """How many folds hold out about `fraction` of the images: the split takes whole folds."""
    return max(2, round(1 / fraction))


def val_fraction_of_rest(params: LabelParams) -> float:
    """Validation is taken from what test leaves: its fraction of that rest."""
    return params.val_size / (1 - params.test_size)


def groups_needed(params: LabelParams) -> int:
    """The look-alike groups a class needs so that test, val and train each get one: test holds
    out one of `fold_count(test_size)` folds, val one fold of what is left."""
    test_folds = fold_count(params.test_size)
    val_folds = fold_count(val_fraction_of_rest(params))
    needed = test_folds
    while needed - math.ceil(needed / test_folds) < val_folds:
        needed += 1
    return needed


def check_class_sizes(items: list[Item], groups: np.ndarray, params: LabelParams) -> None:
    """Stop, naming the smallest class, when a class is too small to appear in every split."""
    members: dict[str, set[int]] = {}
    for item, group in zip(items, groups):
        members.setdefault(item.cls, set()).add(int(group))
    needed = groups_needed(params)
    short = sorted((len(found), name) for name, found in members.items() if len(found) < needed)
    if not short:
        return
    count, smallest = short[0]
    images = sum(1 for item in items if item.cls == smallest)
    raise StageError(
        f"class {smallest!r} has too few distinct images to split: {images} image(s) in {count} "
        f"look-alike group(s); the split needs at least {needed} per class (label.test_size="
        f"{params.test_size:g} and label.val_size={params.val_size:g} take whole folds of "
        f"1/{fold_count(params.test_size)} and 1/{fold_count(val_fraction_of_rest(params))}, "
        f"and test, val and train each need an image of every class). {len(short)} class(es) "
        "fall short: add images to them, remove them from the class list, or raise "
        "label.test_size and label.val_size")


def assign_splits(labels: np.ndarray, groups: np.ndarray, params: LabelParams,
                  seed: int) -> np.ndarray:
    """The split of each item ("train", "val" or "test"): test first, then val from the rest."""
    splits = np.full(len(labels), "train", dtype=object)
    everything = np.arange(len(labels))
    test = held_out_fold(everything, labels, groups, params.test_size, seed)
    splits[test] = "test"
    rest = everything[splits == "train"]
    val = held_out_fold(rest, labels, groups, val_fraction_of_rest(params), seed)
    splits[val] = "val"
    return splits


def held_out_fold(indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float,
                  seed: int) -> np.ndarray:
    """One fold of StratifiedGroupKFold with about `fraction` of `indices`, whole groups only:
    the first fold that holds every class (with uneven groups, a fold can miss a small class),
    else the one that holds the most."""
    folds = StratifiedGroupKFold(n_splits=fold_count(fraction), shuffle=True, random_state=seed)
    classes = len(np.unique(labels[indices]))
    best, best_classes = np.empty(0, dtype=np.intp), -1
    for _, held_out in folds.split(indices, labels[indices], groups[indices]):
        held_classes = len(np.unique(labels[indices[held_out]]))
        if held_classes > best_classes:
            best, best_classes = held_out, held_classes
        if held_classes == classes:
            break
    return indices[best]


def summarise(items: list[Item], groups: np.ndarray, splits: np.ndarray) -> dict:
    """The metrics DVC shows: totals only (per-class counts would make `dvc exp show` a wall)."""
    sizes = np.bincount(groups)
    return {
        "total": {name: int(np.sum(splits == name)) for name in SPLITS} | {"all": len(items)},
        "lookalike_groups": int(np.sum(sizes > 1)),
        "lookalike_images": int(sizes[sizes > 1].sum()),
    }


def counts_per_class(items: list[Item], splits: np.ndarray, classes: list[ClassSpec],
                     changes: list[apply.Change]) -> list[dict[str, object]]:
    """One row per class: its label id, how many images each split holds, and how many
    curation removed from it, moved out of it and moved into it."""
    counts = Counter(zip((item.cls for item in items), splits))
    removed = Counter(change.cls for change in changes if change.decision == "reject")
    moved_out = Counter(change.cls for change in changes if change.decision == "relabel")
    moved_in = Counter(change.target for change in changes if change.decision == "relabel")
    return [{"class": spec.name, "label": spec.label}
            | {name: counts[spec.name, name] for name in SPLITS}
            | {"removed": removed[spec.name], "moved_out": moved_out[spec.name],
               "moved_in": moved_in[spec.name]}
            for spec in classes]


def main(argv: list[str] | None = None) -> int:
    return stage_main("label", run, LabelStageParams, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

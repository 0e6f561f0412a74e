"""Audit stage: ranks every cleaned picture by how likely it is not to belong where it is filed.

Features from a pretrained network (audit.arch, audit.pretrained), out-of-sample class
probabilities of a logistic regression (audit.folds-fold cross-validation), cleanlab's label
quality, how typical each picture is of any class, and groups of pictures far from the rest of
their class (imgclf.curation). It decides nothing: the label stage applies what a person decided
(data/curation.csv) and, when set, audit.auto_reject; it never reads the decisions, so editing
them never re-runs the audit.

Reads data/clean (manifest, class list, images); writes data/audit/suspects.csv and
metrics/audit.json (counts per issue and per class).
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from imgclf.config.audit import AuditParams, AuditStageParams
from imgclf.core.classes import read_class_list
from imgclf.core.cli import stage_main
from imgclf.core.errors import StageError
from imgclf.core.files import atomic_directory, read_csv, write_json
from imgclf.core.paths import (
    AUDIT_DIR,
    AUDIT_METRICS,
    CLEAN_CLASSES,
    CLEAN_DIR,
    CLEAN_MANIFEST,
    SUSPECTS,
)
from imgclf.curation import features, ranking
from imgclf.curation.suspects import ISSUES, Suspect, write_suspects


def run(params: AuditStageParams) -> None:
    class_names = [spec.name for spec in read_class_list(CLEAN_CLASSES)]
    files, labels = kept_pictures(class_names)
    vectors = picture_features(files, params.audit)
    suspects = ranking.rank(files, vectors, labels, class_names, params.audit.folds, params.seed,
                            params.audit.cluster_min_size)
    with atomic_directory(AUDIT_DIR) as out:
        write_suspects(out / SUSPECTS.name, suspects)
    summary = summarise(suspects, class_names)
    write_json(AUDIT_METRICS, summary)
    counts = summary["issues"]
    print(f"audit: {len(suspects)} images, {counts['off-topic']} off-topic and "
          f"{counts['mislabeled']} mislabeled suspects in {SUSPECTS}")


def kept_pictures(class_names: list[str]) -> tuple[list[str], np.ndarray]:
    """The kept pictures of the clean manifest (paths under data/clean, sorted) and their
    classes' positions in the class list."""
    if not CLEAN_MANIFEST.is_file():
        raise StageError(f"{CLEAN_MANIFEST} not found: run the clean stage first")
    position = {name: index for index, name in enumerate(class_names)}
    kept = sorted((row["clean_file"], position[row["class"]])
                  for row in read_csv(CLEAN_MANIFEST) if row["status"] == "kept")
    return [file for file, _ in kept], np.array([label for _, label in kept], dtype=np.intp)


def picture_features(files: list[str], params: AuditParams) -> np.ndarray:
    network = features.feature_network(params.arch, params.pretrained)
    return features.extract_features([CLEAN_DIR / file for file in files], network,
                                     params.image_size, params.batch_size)


def summarise(suspects: list[Suspect], class_names: list[str]) -> dict:
    """Counts per issue, overall and per class, and how many foreign groups were found."""
    per_class = Counter((suspect.cls, suspect.issue) for suspect in suspects)
    return {
        "images": len(suspects),
        "issues": {issue: sum(per_class[name, issue] for name in class_names)
                   for issue in ISSUES},
        "clusters": len({suspect.cluster for suspect in suspects if suspect.cluster}),
        "per_class": {name: {issue: per_class[name, issue] for issue in ISSUES}
                      for name in class_names},
    }


def main(argv: list[str] | None = None) -> int:
    return stage_main("audit", run, AuditStageParams, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())

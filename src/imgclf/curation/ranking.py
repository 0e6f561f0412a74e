"""The audit's ranking of every picture: scores (imgclf.curation.scoring), foreign groups
(imgclf.curation.clusters), and which issue a suspect has.

A suspect is a picture more likely not to belong where it is filed than to (score >= 0.5). It is
`mislabeled` when it looks like a typical picture of the class it is most
likely to belong to instead, and `off-topic` when it does not (a drawing, a map, a car among
plants: typical of no class), or when it belongs to a foreign group of its class.
"""

from __future__ import annotations

import numpy as np

from imgclf.core.errors import StageError
from imgclf.curation import clusters, scoring
from imgclf.curation.decisions import content_id
from imgclf.curation.suspects import Suspect

# A foreign group is at least as far from its class's core as this share of the pairs of
# classes are from each other (a quarter of them: measured on plants-40, docs/benchmarks.md).
CLASS_DISTANCE_QUANTILE = 0.25
# A suspect scores at least this: it is more likely not to belong where it is filed than to.
SUSPECT_SCORE = 0.5
# A suspect is mislabeled when it is at least as typical of the suggested class as the 10 % least
# typical of that class's own pictures; otherwise it looks like no class: off-topic.
TYPICAL = 0.1


def rank(files: list[str], features: np.ndarray, labels: np.ndarray, class_names: list[str],
         folds: int, seed: int, cluster_min_size: int) -> list[Suspect]:
    """A Suspect per picture (`files` relative to data/clean, in the order of `features`)."""
    n_classes = len(class_names)
    if n_classes < 2:
        raise StageError(f"the audit compares classes with each other and needs at least 2 "
                         f"(got {n_classes}: {', '.join(class_names)})")
    folds = scoring.fold_count(labels, class_names, folds)
    threshold = clusters.between_class_distance(features, labels, n_classes,
                                                CLASS_DISTANCE_QUANTILE)
    groups = clusters.foreign_groups(features, labels, n_classes, threshold, cluster_min_size)
    probabilities = scoring.out_of_sample_probabilities(features, labels, groups, n_classes,
                                                        folds, seed)
    typicality = scoring.class_typicality(features, labels, n_classes)
    score = scoring.suspicion(labels, probabilities, typicality)
    suggested = scoring.suggested_classes(labels, probabilities)
    flagged = score >= SUSPECT_SCORE
    looks_like_suggested = typicality[np.arange(len(labels)), suggested] >= TYPICAL
    issues = np.where(~flagged, "ok", np.where(
        looks_like_suggested & (groups == clusters.NO_GROUP), "mislabeled", "off-topic"))
    return [Suspect(file, content_id(file), class_names[label], class_names[other], str(issue),
                    float(value), str(group) if is_flagged and group != clusters.NO_GROUP else "")
            for file, label, other, issue, value, group, is_flagged
            in zip(files, labels, suggested, issues, score, groups, flagged)]

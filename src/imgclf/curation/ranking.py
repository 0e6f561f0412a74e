"""The audit's ranking of every picture: scores (imgclf.curation.scoring), foreign groups
(imgclf.curation.clusters), and which issue a suspect has.

A suspect is a picture that the out-of-sample classifier files under another class, that looks like
no class (at least twice scoring.ATYPICAL deviations below every class), or that belongs to a
foreign group of its class. It is `mislabeled` when it looks like a typical picture
of the class it most likely belongs to instead, and `off-topic` when it does not (a drawing, a
map, a car among plants) or is in a foreign group.
"""

from __future__ import annotations

import numpy as np

from imgclf.core.errors import StageError
from imgclf.curation import clusters, scoring
from imgclf.curation.decisions import content_id
from imgclf.curation.suspects import Suspect


def rank(files: list[str], features: np.ndarray, labels: np.ndarray, class_names: list[str],
         folds: int, seed: int, cluster_min_size: int) -> list[Suspect]:
    """A Suspect per picture (`files` relative to data/clean, in the order of `features`)."""
    n_classes = len(class_names)
    if n_classes < 2:
        raise StageError(f"the audit compares classes with each other and needs at least 2 "
                         f"(got {n_classes}: {', '.join(class_names)})")
    folds = scoring.fold_count(labels, class_names, folds)
    groups = clusters.foreign_groups(features, labels, n_classes, cluster_min_size)
    probabilities = scoring.out_of_sample_probabilities(features, labels, groups, n_classes,
                                                        folds, seed)
    atypical = scoring.atypicality(features, labels, n_classes)
    in_group = groups != clusters.NO_GROUP
    score = scoring.suspicion(labels, probabilities, atypical)
    suggested = scoring.suggested_classes(labels, probabilities)
    unlike_any = atypical.min(axis=1) >= 2 * scoring.ATYPICAL
    flagged = (probabilities.argmax(axis=1) != labels) | in_group | unlike_any
    looks_like_suggested = atypical[np.arange(len(labels)), suggested] < scoring.ATYPICAL
    issues = np.where(~flagged, "ok", np.where(
        looks_like_suggested & ~in_group, "mislabeled", "off-topic"))
    return [Suspect(file, content_id(file), class_names[label], class_names[other], str(issue),
                    float(value), "" if group == clusters.NO_GROUP else str(group))
            for file, label, other, issue, value, group
            in zip(files, labels, suggested, issues, score, groups)]


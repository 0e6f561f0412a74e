"""How likely each picture is not to belong where it is filed.

A cheap classifier (logistic regression on the pictures' features) is trained k times, each
time without one fold, and gives the pictures of that fold their class probabilities: no picture
judges itself, and the pictures of a foreign group (imgclf.curation.clusters) share one fold, so
that no group judges itself either. cleanlab turns those out-of-sample probabilities into
label-quality scores; with how atypical a picture is of every class they give the score
(higher = more suspicious).
"""

from __future__ import annotations

import warnings

import numpy as np
from cleanlab.rank import get_label_quality_scores
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from imgclf.core.errors import StageError
from imgclf.curation import clusters

# Enough iterations for L-BFGS on unit-length features; more only moves the last decimals.
MAX_ITERATIONS = 300
REGULARISATION = 10.0
# A picture this many robust deviations less like a class than the class's own pictures does not
# look like one of them (the usual cut-off for outliers). 2 found a few more planted off-topic
# pictures in bench_audit's small cases but let ordinary odd pictures of plants-40's large classes
# outrank the mislabeled ones (recall 0.87 against 0.96; docs/benchmarks.md, "Audit").
ATYPICAL = 3.0
# Floor of a class's spread: a class of identical pictures must not make every other one
# infinitely atypical.
MIN_SPREAD = 1e-3


def fold_count(labels: np.ndarray, class_names: list[str], folds: int) -> int:
    """`folds`, or fewer when the smallest class has fewer pictures (every fold needs each class
    in training); at least 2."""
    counts = np.bincount(labels, minlength=len(class_names))
    smallest = int(counts.argmin())
    if counts[smallest] < 2:
        raise StageError(f"class {class_names[smallest]!r} has {counts[smallest]} clean "
                         "image(s); the audit needs at least 2 per class (cross-validation "
                         "leaves each picture out once): add images or remove the class")
    return min(folds, int(counts[smallest]))


def out_of_sample_probabilities(features: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                                n_classes: int, folds: int, seed: int) -> np.ndarray:
    """Class probabilities (n x n_classes), each row from a classifier that never saw that
    picture nor its group. `groups`: an id per picture; pictures sharing one share a fold."""
    # Pictures outside any group are each their own group.
    fold_groups = np.where(groups >= 0, groups, groups.max(initial=0) + 1 + np.arange(len(groups)))
    probabilities = np.zeros((len(labels), n_classes))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held_out in splitter.split(features, labels, fold_groups):
        model = LogisticRegression(C=REGULARISATION, max_iter=MAX_ITERATIONS)
        with warnings.catch_warnings():
            # An unconverged fit still ranks pictures; the last decimals do not matter here.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], labels[train])
        probabilities[np.ix_(held_out, model.classes_)] = model.predict_proba(features[held_out])
    return probabilities


def atypicality(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """How much less each picture resembles each class than the class's own pictures do
    (n x n_classes): robust deviations (scaled MAD) of its cosine similarity to the class's mean
    below the median of the class's own pictures; 0 or less: as typical as most of them. Median
    and MAD, not ranks: a class of ten pictures then still tells a slightly odd picture from one
    of another world, and a minority of wrong pictures does not widen the yardstick."""
    similarity = features @ clusters.class_means(features, labels, n_classes).T
    deviations = np.empty_like(similarity)
    for label in range(n_classes):
        median, spread = clusters.median_and_spread(similarity[labels == label, label])
        deviations[:, label] = (median - similarity[:, label]) / max(spread, MIN_SPREAD)
    return deviations


def suspicion(labels: np.ndarray, probabilities: np.ndarray,
              atypical: np.ndarray) -> np.ndarray:
    """1 - (cleanlab's label quality x how plausibly the picture is of any class at all).

    Label quality (self-confidence: the out-of-sample probability of the filed class) finds
    pictures that look like another class. It misses pictures that look like no class when
    several of them share a class and vouch for each other in training; `atypical`
    (atypicality's deviations) catches those: up to ATYPICAL deviations below the class the
    picture resembles most, the quality counts in full; from twice that on, not at all."""
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    plausible = np.clip(2 - atypical.min(axis=1) / ATYPICAL, 0, 1)
    return 1 - quality * plausible


def suggested_classes(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The most likely class other than the filed one."""
    others = probabilities.copy()
    others[np.arange(len(labels)), labels] = -1
    return others.argmax(axis=1)

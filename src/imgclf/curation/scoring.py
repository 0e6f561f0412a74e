"""How likely each picture is not to belong where it is filed.

A cheap classifier (logistic regression on the pictures' features) is trained k times, each
time without one fold, and gives the pictures of that fold their class probabilities: no picture
judges itself, and the pictures of a foreign group (imgclf.curation.clusters) share one fold, so
that no group judges itself either. cleanlab turns those out-of-sample probabilities into
label-quality scores; with how typical a picture is of any class they give the score
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

# Enough iterations for L-BFGS on unit-length features; more only moves the last decimals.
MAX_ITERATIONS = 300
REGULARISATION = 10.0
TYPICAL = 0.1


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


def class_typicality(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """How typical each picture is of each class (n x n_classes, 0..1): the share of the class's
    own pictures that are less similar (cosine) to the class's mean than this picture is. A
    drawing or a car among plants is far from every class's mean: below the class's own pictures,
    typicality about 0 for every class, however many of its kind share its class."""
    means = np.stack([features[labels == label].mean(axis=0) for label in range(n_classes)])
    similarity = features @ means.T
    own = similarity[np.arange(len(labels)), labels]
    return np.stack([np.searchsorted(np.sort(own[labels == label]), similarity[:, label])
                     / np.sum(labels == label) for label in range(n_classes)], axis=1)


def suspicion(labels: np.ndarray, probabilities: np.ndarray,
              typicality: np.ndarray) -> np.ndarray:
    """1 - (cleanlab's label quality x typicality of the most resembled class).

    Label quality (self-confidence: the out-of-sample probability of the filed class) finds
    pictures that look like another class; typicality finds those that look like no class,
    which label quality alone misses when several of them share a class and vouch for each other
    in training (on plants-40 with 100 flower photos: recall 0.91 alone, 0.99 with it)."""
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    return 1 - quality * np.minimum(1, typicality.max(axis=1) / TYPICAL)


def suggested_classes(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The most likely class other than the filed one."""
    others = probabilities.copy()
    others[np.arange(len(labels)), labels] = -1
    return others.argmax(axis=1)

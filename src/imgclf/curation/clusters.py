"""Groups of pictures inside a class that sit far from everything else in the data.

One ambiguous query can fill a class with dozens of pictures of one wrong thing (a car, a town, a
herbarium sheet). Such pictures are each other's nearest neighbours, so a nearest-neighbour
outlier score misses them, and a classifier that sees some of them in training learns them as
part of the class.

Each class's pictures are split into a few clusters (average linkage on cosine distances). Every
cluster of at least `min_size` pictures and at most half its class is a candidate, and its
closeness is the highest cosine similarity between its mean direction and that of anything else:
the rest of its class or another class. Candidates are compared with each other, not with a fixed
distance: most are ordinary sub-kinds of their class (dandelion seed heads beside dandelion
flowers), and a foreign group is a candidate whose closeness is an outlier among them. A fixed
cut-off fails from one data set to the next: classes of flowers sit much closer to each other
than classes of leaves do, and sub-kinds of a flower then look as far apart as two classes.
A foreign group takes in the pictures of its class closer to it than to the rest (clustering
cuts one wrong kind into several pieces); the audit holds it out of training as one and shows it
to the reviewer as one.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering

NO_GROUP = -1
# A class is split into at most this many clusters: enough to set one wrong kind of picture
# apart from a class's few sub-kinds.
MAX_CLUSTERS = 8
# A foreign group is at least this many robust deviations (scaled MAD) less close to anything
# than the median candidate. With candidates of at least 5 pictures (audit.cluster_min_size),
# twelve leaves planted in a flower class of flowers-mini measured 3.3 to 5.9 deviations away and
# no cluster of the clean flowers above 1.2. It cannot tell another kind of thing from the same
# thing photographed otherwise: on plants-40, leaves of one species on a patterned cloth instead
# of white paper measured 6.3 (docs/benchmarks.md, "Audit"). A group is a question for a person,
# asked once for all its pictures; its pictures keep their own scores.
OUTLIER_DEVIATIONS = 3.0
# Fewer candidates than this give no usable median and spread: no group is called foreign.
MIN_CANDIDATES = 5


def median_and_spread(values: np.ndarray) -> tuple[float, float]:
    """The median and the scaled median absolute deviation (a standard deviation for normal data,
    unmoved by a minority of outliers)."""
    median = float(np.median(values))
    return median, 1.4826 * float(np.median(np.abs(values - median)))


def class_means(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The mean feature vector of each class (unit features: mean_a @ mean_b is the average
    cosine similarity between a picture of a and a picture of b)."""
    return np.stack([features[labels == label].mean(axis=0) for label in range(n_classes)])


def directions(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def candidates(features: np.ndarray, labels: np.ndarray, n_classes: int,
               min_size: int) -> list[tuple[np.ndarray, float]]:
    """(members, closeness) of every cluster that could be a foreign group."""
    classes = directions(class_means(features, labels, n_classes))
    found = []
    for label in range(n_classes):
        members = np.flatnonzero(labels == label)
        count = min(MAX_CLUSTERS, len(members) // min_size)
        if count < 2:  # too small to tell a group from the rest of its class
            continue
        clusters = AgglomerativeClustering(n_clusters=count, metric="cosine", linkage="average"
                                           ).fit_predict(features[members])
        others = np.delete(classes, label, axis=0)
        for cluster in range(count):
            inside = clusters == cluster
            if not min_size <= inside.sum() <= len(members) / 2:
                continue
            direction = directions(features[members[inside]].mean(axis=0))
            rest = directions(features[members[~inside]].mean(axis=0))
            found.append((members[inside], max(float(direction @ rest),
                                               float((others @ direction).max(initial=-1)))))
    return found


def foreign_groups(features: np.ndarray, labels: np.ndarray, n_classes: int,
                   min_size: int) -> np.ndarray:
    """A group id per picture (NO_GROUP for most): ids are shared by the pictures of one foreign
    group, numbered from 0 in class order."""
    groups = np.full(len(labels), NO_GROUP)
    found = candidates(features, labels, n_classes, min_size)
    if len(found) < MIN_CANDIDATES:
        return groups
    median, spread = median_and_spread(np.array([value for _, value in found]))
    if spread == 0:
        return groups
    outliers = [members for members, value in found
                if (median - value) / spread >= OUTLIER_DEVIATIONS]
    for group_id, members in enumerate(outliers):
        groups[kindred(features, labels, members)] = group_id
    return groups


def kindred(features: np.ndarray, labels: np.ndarray, group: np.ndarray) -> np.ndarray:
    """The group and the pictures of its class closer to the group's direction than to the rest
    of the class's: clustering cuts a wrong kind's pictures into a few clusters, and those that
    fell outside the group would otherwise teach the classifier that they belong."""
    members = np.flatnonzero(labels == labels[group[0]])
    inside = np.isin(members, group)
    toward_group = features[members] @ directions(features[group].mean(axis=0))
    toward_rest = features[members] @ directions(features[members[~inside]].mean(axis=0))
    return members[inside | (toward_group > toward_rest)]

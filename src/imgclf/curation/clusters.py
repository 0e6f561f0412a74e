"""Groups of pictures inside a class that sit far from the class's other pictures.

One ambiguous query can fill a class with dozens of pictures of one wrong thing (a car, a town, a
herbarium sheet). Such pictures are each other's nearest neighbours, so a nearest-neighbour
outlier score misses them, and a classifier that sees some of them in training learns them as
part of the class. Here each class's pictures are clustered (average linkage on cosine
distances); the largest cluster is the class's core, and every other cluster of at least
`min_size` pictures is a foreign group. The cut-off distance is taken from the data: a group is
foreign when it is as far from the core as two different classes typically are from each other.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering

NO_GROUP = -1


def class_means(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The mean feature vector of each class (unit features: mean_a @ mean_b is the average
    cosine similarity between a picture of a and a picture of b)."""
    return np.stack([features[labels == label].mean(axis=0) for label in range(n_classes)])


def between_class_distance(features: np.ndarray, labels: np.ndarray, n_classes: int,
                           quantile: float) -> float:
    """A `quantile` of the average cosine distance between two pictures of two different
    classes, over all pairs of classes."""
    means = class_means(features, labels, n_classes)
    distances = 1 - means @ means.T
    return float(np.quantile(distances[~np.eye(n_classes, dtype=bool)], quantile))


def foreign_groups(features: np.ndarray, labels: np.ndarray, n_classes: int, threshold: float,
                   min_size: int) -> np.ndarray:
    """A group id per picture (NO_GROUP for most): ids are shared by the pictures of one foreign
    group, numbered from 0 in class order."""
    groups = np.full(len(labels), NO_GROUP)
    next_id = 0
    for label in range(n_classes):
        members = np.flatnonzero(labels == label)
        if len(members) < 2 * min_size:  # too small to tell a core from a group
            continue
        clusters = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold,
                                           metric="cosine", linkage="average"
                                           ).fit_predict(features[members])
        sizes = np.bincount(clusters)
        core = sizes.argmax()
        for cluster in np.flatnonzero(sizes >= min_size):
            if cluster != core:
                groups[members[clusters == cluster]] = next_id
                next_id += 1
    return groups

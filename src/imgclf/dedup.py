"""Near-duplicate search, shared by `clean` (drop copies) and `label` (keep look-alikes together).

A perceptual-hash match is a candidate, not a verdict: phash sees only coarse luminance, so
different pictures of a similar shape collide (leaves on a plain sheet, gemstones of one cut in
different colours). Candidates are confirmed by comparing small RGB thumbnails pixel by pixel.

The thumbnail comparison takes the *largest* per-pixel difference, not the mean. Measured on
plants-40 (docs/benchmarks.md#threshold-calibration), a mean is dominated by the plain background:
two different leaves on the same sheet differ by about 1 grey level on average, less than a JPEG
re-encode of a detailed photo, while the largest difference sees where the leaves' outlines and
veins disagree.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# 32 px: the largest difference of distinct plants-40 leaves stays above 30, while resized,
# re-encoded and brightened copies stay below 25; at 16 and 24 px the two ranges overlap.
THUMBNAIL_SIDE = 32
# Hash comparisons held in memory at once while searching (about 40 MB of temporaries).
BLOCK_ELEMENTS = 1 << 22
# Pairs compared at once (about 50 MB of float32 thumbnails).
PAIR_CHUNK = 2048


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash as an int; `hash_hex` gives imagehash's hex spelling."""
    bits = imagehash.phash(image).hash.flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_hex(value: int) -> str:
    return f"{value:016x}"


def parse_hash(text: str) -> int:
    return int(text, 16)


def thumbnail(image: Image.Image) -> np.ndarray:
    """A THUMBNAIL_SIDE² RGB uint8 array of the whole picture, aspect ignored.

    Lanczos to twice the side, then 2x2 averages: a plain area average (BOX) aliases fine
    texture, so a copy at half the size differed by up to 45 grey levels instead of 22.
    """
    double = image.convert("RGB").resize((2 * THUMBNAIL_SIDE, 2 * THUMBNAIL_SIDE),
                                         Image.Resampling.LANCZOS)
    return np.asarray(double.reduce(2), dtype=np.uint8)


def candidate_pairs(hashes: np.ndarray, max_distance: int,
                    block_elements: int = BLOCK_ELEMENTS) -> np.ndarray:
    """All index pairs (i, j), i < j, whose hashes differ in at most `max_distance` bits.

    Compares every pair (no sorting trick can find all near neighbours) in row blocks of the
    upper triangle, so memory stays bounded; the result is sorted by i, then j.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    rows = max(1, block_elements // max(n, 1))
    found = [np.empty((0, 2), dtype=np.intp)]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        distance = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, start:])
        i, j = np.nonzero(distance <= max_distance)
        upper = j > i  # columns start at `start`: local j > local i means global j > global i
        found.append(np.stack([i[upper] + start, j[upper] + start], axis=1))
    return np.concatenate(found)


def thumbnail_differences(thumbnails: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """For each pair, the largest per-pixel difference (0-255, mean over R, G, B) of the two
    thumbnails once their brightness and contrast are matched.

    One offset and one gain are shared by the three channels: a copy made brighter or flatter
    still matches, a stone of another colour does not.
    """
    chunks = [_largest_difference(thumbnails[pairs[start:start + PAIR_CHUNK, 0]],
                                  thumbnails[pairs[start:start + PAIR_CHUNK, 1]])
              for start in range(0, len(pairs), PAIR_CHUNK)]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.float32)


def _largest_difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    first, second = _match_contrast(first.astype(np.float32), second.astype(np.float32))
    return np.abs(first - second).mean(axis=3).max(axis=(1, 2))


def _match_contrast(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre both stacks of images and scale them to the geometric mean of their contrasts."""
    axes = (1, 2, 3)
    first = first - first.mean(axis=axes, keepdims=True)
    second = second - second.mean(axis=axes, keepdims=True)
    spread_first = first.std(axis=axes, keepdims=True) + 1  # +1: flat images stay finite
    spread_second = second.std(axis=axes, keepdims=True) + 1
    common = np.sqrt(spread_first * spread_second)
    return first * (common / spread_first), second * (common / spread_second)


def confirmed_pairs(thumbnails: np.ndarray, pairs: np.ndarray, tolerance: float) -> np.ndarray:
    """The pairs whose thumbnails differ by at most `tolerance` (see thumbnail_differences)."""
    return pairs[thumbnail_differences(thumbnails, pairs) <= tolerance]


def group_ids(count: int, pairs: np.ndarray) -> np.ndarray:
    """Connected groups of `count` items linked by `pairs`: one id per item, 0..groups-1,
    numbered in the order of each group's first item (an item without pairs is its own group)."""
    links = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(count, count))
    _, labels = connected_components(links, directed=False)
    # scipy does not promise an order for its labels: renumber by first appearance.
    _, first_item, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first_item), dtype=np.intp)
    rank[np.argsort(first_item)] = np.arange(len(first_item))
    return rank[inverse]

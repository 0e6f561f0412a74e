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

import itertools
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# 32 px: the largest difference of distinct plants-40 leaves stays above 30, while resized,
# re-encoded and brightened copies stay below 25; at 16 and 24 px the two ranges overlap.
THUMBNAIL_SIDE = 32
# Hash comparisons held in memory at once when comparing all pairs (about 40 MB of temporaries).
BLOCK_ELEMENTS = 1 << 22
# Candidate pairs of the multi-index search verified at once (about 100 MB of temporaries).
CANDIDATE_CHUNK = 1 << 20
# Blocks of at most 22 bits (three or more): a block's two bucket tables, 2**width offsets and
# sizes, stay within 64 MB.
MIN_BLOCKS = 3
# The cost model's unit costs, measured on the two-core development VM (bench_dedup.py).
SECONDS_PER_COMPARISON = 4e-9
SECONDS_PER_PROBED_HASH = 6e-9
SECONDS_PER_CANDIDATE = 20e-9
SECONDS_PER_BUCKET = 3e-9
SECONDS_PER_SORTED_HASH = 100e-9
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
                    blocks: int | None = None) -> np.ndarray:
    """All index pairs (i, j), i < j, whose hashes differ in at most `max_distance` bits, sorted
    by i, then j.

    Identical hashes are searched once (a folder of copies, or all-zero hashes, costs only its
    output). The distinct ones go through a multi-index search, or through comparing all pairs
    where the cost model says that is cheaper (loose distances, few hashes). `blocks` forces the
    multi-index search with that many blocks (MIN_BLOCKS..64).
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    distance = _checked_distance(max_distance)
    groups = _DistinctValues.of(hashes)
    count = blocks if blocks is not None else _cheapest_block_count(len(groups.values), distance)
    if count is None:
        value_pairs = _compare_all(groups.values, distance)
    else:
        value_pairs = _multi_index_pairs(groups.values, distance, _split(count))
    return _sorted_pairs(groups.index_pairs(value_pairs), len(hashes))


def _checked_distance(max_distance: int) -> int:
    distance = operator.index(max_distance)  # TypeError for 2.5 or "4", as a slice would
    if distance < 0:
        raise ValueError(f"max_distance must be at least 0, got {distance}")
    return min(distance, 64)  # every pair of 64-bit hashes is within 64 bits


@dataclass(frozen=True)
class _DistinctValues:
    """The distinct hashes, ascending, and where the indices of each sit in `order`."""

    values: np.ndarray  # distinct hashes, ascending
    order: np.ndarray  # indices of the input, stably sorted by hash
    starts: np.ndarray  # values[k] is hashes[order[starts[k]:starts[k] + sizes[k]]]
    sizes: np.ndarray

    @classmethod
    def of(cls, hashes: np.ndarray) -> _DistinctValues:
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        starts = np.flatnonzero(np.diff(ordered, prepend=~ordered[:1]) != 0)
        sizes = np.diff(starts, append=len(hashes))
        return cls(ordered[starts], order, starts, sizes)

    def index_pairs(self, value_pairs: np.ndarray) -> np.ndarray:
        """Unordered index pairs: every member of each value pair's first value with every member
        of its second, and every two members of one value."""
        first, second = value_pairs[:, 0], value_pairs[:, 1]
        across = [np.stack([self.order[self.starts[first[k]] + offset // self.sizes[second[k]]],
                            self.order[self.starts[second[k]] + offset % self.sizes[second[k]]]],
                           axis=1)
                  for k, offset in _ranges(np.zeros(len(value_pairs), dtype=np.intp),
                                           self.sizes[first] * self.sizes[second])]
        # Within a value: each sorted position with the positions after it in its group.
        group_end = np.repeat(self.starts + self.sizes, self.sizes)
        positions = np.arange(len(self.order))
        within = [np.stack([self.order[k], self.order[position]], axis=1)
                  for k, position in _ranges(positions + 1, group_end - positions - 1)]
        return np.concatenate([np.empty((0, 2), dtype=np.intp), *across, *within])


def _sorted_pairs(pairs: np.ndarray, count: int) -> np.ndarray:
    """(min, max) of each pair, sorted by the first index, then the second."""
    low, high = pairs.min(axis=1), pairs.max(axis=1)
    key = np.sort(low * count + high)  # one int64 sort instead of a lexsort of two columns
    return np.stack([key // max(count, 1), key % max(count, 1)], axis=1).astype(np.intp)


def _ranges(starts: np.ndarray, lengths: np.ndarray,
            chunk: int = CANDIDATE_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(k, position) for every position in [starts[k], starts[k] + lengths[k]), at most `chunk`
    at a time: memory stays bounded however large one range (one hash bucket) is."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    for begin in range(0, total, chunk):
        stop = min(begin + chunk, total)
        owners = np.arange(np.searchsorted(ends, begin, side="right"),
                           np.searchsorted(ends, stop - 1, side="right") + 1)
        range_begin = ends[owners] - lengths[owners]
        taken = np.minimum(ends[owners], stop) - np.maximum(range_begin, begin)
        owner = np.repeat(owners, taken)
        yield owner, starts[owner] + np.arange(begin, stop) - range_begin.repeat(taken)


@dataclass(frozen=True)
class _Block:
    """Bits [shift, shift + width) of a hash."""

    shift: int
    width: int

    @property
    def mask(self) -> np.uint64:
        return np.uint64(((1 << self.width) - 1) << self.shift)

    def of(self, values: np.ndarray) -> np.ndarray:
        return ((values >> np.uint64(self.shift)) & np.uint64((1 << self.width) - 1)).astype(
            np.intp)


def _split(count: int) -> list[_Block]:
    """64 bits in `count` blocks as even as can be."""
    if not MIN_BLOCKS <= count <= 64:
        raise ValueError(f"blocks must be {MIN_BLOCKS}..64, got {count}")
    widths = [64 // count + (k < 64 % count) for k in range(count)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [_Block(int(shift), width) for shift, width in zip(shifts, widths)]


def _tolerance(distance: int, count: int) -> int:
    """Bits a pair within `distance` differs by in at least one of `count` blocks, at most: were
    every block r + 1 bits apart, the pair would be count * (r + 1) > distance bits apart."""
    return -(-(distance + 1) // count) - 1


def _cheapest_block_count(distinct: int, distance: int) -> int | None:
    """The block count the cost model finds cheapest for `distinct` random hashes, or None when
    comparing all pairs is cheaper. Probes grow as C(width, r), candidates as n² / 2**width: at
    ≤ 4 bits three blocks of ~21 bits with one-bit probes keep a million hashes near one
    candidate each, where five exact blocks of ~13 bits would give each about 600."""
    costs = {count: _estimated_seconds(distinct, distance, count)
             for count in range(MIN_BLOCKS, min(max(MIN_BLOCKS, distance + 1), 64) + 1)}
    costs[None] = distinct * distinct / 2 * SECONDS_PER_COMPARISON
    return min(costs, key=costs.__getitem__)


def _estimated_seconds(distinct: int, distance: int, count: int) -> float:
    tolerance = _tolerance(distance, count)
    total = 0.0
    for block in _split(count):
        probes = sum(math.comb(block.width, bits) for bits in range(tolerance + 1))
        candidates = distinct * distinct / 2 ** (block.width + 1)
        total += (probes * (distinct * SECONDS_PER_PROBED_HASH + candidates
                            * SECONDS_PER_CANDIDATE)
                  + 2 ** block.width * SECONDS_PER_BUCKET + distinct * SECONDS_PER_SORTED_HASH)
    return total


def _compare_all(values: np.ndarray, distance: int) -> np.ndarray:
    """Pairs (u, v), u < v, within `distance`, comparing every pair in row blocks of the upper
    triangle so that memory stays bounded."""
    n = len(values)
    rows = max(1, BLOCK_ELEMENTS // max(n, 1))
    found = [np.empty((0, 2), dtype=np.intp)]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        bits = np.bitwise_count(values[start:stop, None] ^ values[None, start:])
        i, j = np.nonzero(bits <= distance)
        upper = j > i  # columns start at `start`: local j > local i means global j > global i
        found.append(np.stack([i[upper] + start, j[upper] + start], axis=1))
    return np.concatenate(found)


def _multi_index_pairs(values: np.ndarray, distance: int, blocks: list[_Block]) -> np.ndarray:
    """Pairs (u, v), u < v, of distinct `values` within `distance` bits, by multi-index hashing.

    Such a pair differs by at most r = _tolerance bits in at least one block: in each block the
    hashes are bucketed by the block's value, and each hash looks up the buckets of every value
    within r bits of its own. A pair is kept only from the first block where it is within r bits,
    so each is found once, with no set of pairs to deduplicate.
    """
    tolerance = _tolerance(distance, len(blocks))
    found = [np.empty((0, 2), dtype=np.intp)]
    for index, block in enumerate(blocks):
        buckets = _Buckets.of(block.of(values), block.width)
        for first, second in buckets.pairs_within(tolerance):
            difference = values[first] ^ values[second]
            keep = np.bitwise_count(difference) <= distance
            for earlier in blocks[:index]:
                keep &= np.bitwise_count(difference & earlier.mask) > tolerance
            found.append(np.stack([np.minimum(first, second)[keep],
                                   np.maximum(first, second)[keep]], axis=1))
    return np.concatenate(found)


@dataclass(frozen=True)
class _Buckets:
    """Hashes grouped by one block's `width`-bit key: bucket k holds order[starts[k]:][:sizes[k]].

    Dense tables rather than a search: a lookup is a gather, about 20 times cheaper than
    np.searchsorted in a million keys (MIN_BLOCKS caps their size).
    """

    keys: np.ndarray
    width: int
    order: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, keys: np.ndarray, width: int) -> _Buckets:
        sizes = np.bincount(keys, minlength=2 ** width)
        starts = np.cumsum(sizes) - sizes
        return cls(keys, width, np.argsort(keys, kind="stable"), starts, sizes)

    def pairs_within(self, tolerance: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every unordered pair of hashes whose keys differ by at most `tolerance` bits, once, in
        chunks."""
        # Same key: each sorted position with the positions after it in its bucket.
        positions = np.arange(len(self.order))
        following = self.starts[self.keys[self.order]] + self.sizes[self.keys[self.order]] \
            - positions - 1
        yield from self._expand(self.order, positions + 1, following)
        # Keys differing by a mask: of the two, exactly one lacks the mask's top bit. Asking only
        # from that side finds each pair once, and the askers are chosen once per top bit.
        for top in range(self.width):
            queries = np.flatnonzero((self.keys >> top) & 1 == 0)
            asked = self.keys[queries] ^ (1 << top)
            for lower in _masks(top, tolerance - 1):
                targets = asked ^ lower
                hit = np.flatnonzero(self.sizes[targets])
                yield from self._expand(queries[hit], self.starts[targets[hit]],
                                        self.sizes[targets[hit]])

    def _expand(self, queries: np.ndarray, starts: np.ndarray,
                lengths: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for owner, position in _ranges(starts, lengths):
            yield queries[owner], self.order[position]


def _masks(width: int, bits: int) -> Iterator[int]:
    """Every `width`-bit mask of at most `bits` bits."""
    for count in range(min(bits, width) + 1):
        for chosen in itertools.combinations(range(width), count):
            yield sum(1 << bit for bit in chosen)


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

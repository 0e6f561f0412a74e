"""Near-duplicate machinery: exact candidate search (multi-index or all pairs), thumbnail
confirmation, groups."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from imgclf import dedup
from imgclf.core.images import decode_image, downscale_to_short_side

from helpers.pictures import cabochon

# The calibrated clean.pixel_tolerance (docs/benchmarks.md#threshold-calibration).
CLEAN_TOLERANCE = 24.0


def brute_force_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
            if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= max_distance]


def clustered_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random hashes, half of them a few flipped bits away from another one."""
    base = rng.integers(0, 2**64, size=n // 2, dtype=np.uint64)
    flips = np.zeros(n - len(base), dtype=np.uint64)
    for _ in range(3):
        flips |= np.uint64(1) << rng.integers(0, 64, size=len(flips)).astype(np.uint64)
    near = base[rng.integers(0, len(base), size=len(flips))] ^ flips
    return rng.permutation(np.concatenate([base, near]))


@pytest.mark.parametrize("blocks", [None, 3, 5, 13, 64])
def test_candidate_pairs_match_brute_force(blocks: int | None) -> None:
    hashes = clustered_hashes(np.random.default_rng(7), 300)
    hashes[:20] = hashes[20]  # identical hashes too
    for max_distance in (0, 3, 12):
        pairs = dedup.candidate_pairs(hashes, max_distance, blocks=blocks)
        assert [tuple(p) for p in pairs.tolist()] == brute_force_pairs(hashes, max_distance)


def planted_hashes(rng: np.random.Generator, n: int, farthest: int) -> np.ndarray:
    """Random hashes, a third of them neighbours of another at every distance 0..farthest: half
    with flips at random bits, half with flips spread evenly over the 64 bits (each block of the
    multi-index search then holds about its share, the pigeonhole's tightest case)."""
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    per_distance = n // 3 // (farthest + 1)
    neighbours = rng.permutation(n)[:per_distance * (farthest + 1)].reshape(farthest + 1, -1)
    for distance, chosen in enumerate(neighbours):
        for k, index in enumerate(chosen):
            if k % 2:
                bits = rng.choice(64, size=distance, replace=False)
            else:
                bits = (np.arange(distance) * 64 // max(distance, 1) + rng.integers(64)) % 64
            flips = np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64), initial=0)
            hashes[index] = hashes[rng.integers(n)] ^ np.uint64(flips)
    return hashes


def vectorised_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j within `max_distance` by comparing every pair, and their distances."""
    found, distances = [], []
    for start in range(0, len(hashes), 256):
        bits = np.bitwise_count(hashes[start:start + 256, None] ^ hashes[None, :])
        i, j = np.nonzero(bits <= max_distance)
        upper = j > i + start
        found.append(np.stack([i[upper] + start, j[upper]], axis=1))
        distances.append(bits[i[upper], j[upper]])
    return np.concatenate(found), np.concatenate(distances)


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hashes = planted_hashes(np.random.default_rng(17), 50_000, 14)
    return hashes, *vectorised_pairs(hashes, 14)


@pytest.mark.parametrize("max_distance", [4, 12])
def test_candidate_pairs_of_50000_planted_hashes_are_exact(
        planted: tuple[np.ndarray, np.ndarray, np.ndarray], max_distance: int) -> None:
    hashes, pairs, distances = planted
    # The planted neighbours reach every distance up to two beyond the limit.
    assert set(range(max_distance + 3)) <= set(distances.tolist())
    expected = pairs[distances <= max_distance]
    assert np.array_equal(dedup.candidate_pairs(hashes, max_distance), expected)


def test_candidate_pairs_of_nothing_and_of_one() -> None:
    for hashes in (np.array([], dtype=np.uint64), np.array([5], dtype=np.uint64)):
        for max_distance in (0, 4, 64):
            pairs = dedup.candidate_pairs(hashes, max_distance)
            assert pairs.shape == (0, 2) and pairs.dtype == np.intp


def test_candidate_pairs_of_identical_hashes_are_all_pairs() -> None:
    hashes = np.zeros(2_000, dtype=np.uint64)
    expected = np.stack(np.triu_indices(len(hashes), k=1), axis=1)
    for max_distance in (0, 4, 12):
        pairs = dedup.candidate_pairs(hashes, max_distance)
        assert pairs.dtype == np.intp and np.array_equal(pairs, expected)


def test_candidate_pairs_at_64_bits_and_beyond_are_all_pairs() -> None:
    hashes = clustered_hashes(np.random.default_rng(3), 50)
    expected = np.stack(np.triu_indices(len(hashes), k=1), axis=1)
    for max_distance in (64, 65, 1000):
        assert np.array_equal(dedup.candidate_pairs(hashes, max_distance), expected)


def test_candidate_pairs_reject_invalid_distances_and_blocks() -> None:
    hashes = np.arange(10, dtype=np.uint64)
    with pytest.raises(ValueError, match="at least 0"):
        dedup.candidate_pairs(hashes, -1)
    with pytest.raises(TypeError):
        dedup.candidate_pairs(hashes, 2.5)
    for blocks in (2, 65):
        with pytest.raises(ValueError, match="blocks"):
            dedup.candidate_pairs(hashes, 4, blocks=blocks)


def test_candidate_pairs_handle_top_bit() -> None:
    hashes = np.array([2**63 + 1, 2**63, 1], dtype=np.uint64)
    assert dedup.candidate_pairs(hashes, 1).tolist() == [[0, 1], [0, 2]]


def test_a_huge_bucket_is_searched_in_bounded_memory() -> None:
    """6,000 distinct hashes sharing their low 43 bits (like phashes of similar pictures): two of
    three blocks hold one bucket of 18 million candidate pairs each, yet few pairs are near."""
    rng = np.random.default_rng(5)
    high = rng.choice(2**21, size=6_000, replace=False).astype(np.uint64)
    hashes = (high << np.uint64(43)) | np.uint64(0x5A5A5A5A5A5)
    tracemalloc.start()
    try:
        pairs = dedup.candidate_pairs(hashes, 4, blocks=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [tuple(p) for p in pairs.tolist()] == [tuple(p) for p in
                                                  vectorised_pairs(hashes, 4)[0].tolist()]
    # Unchunked, the candidates' indices and hashes alone would take over 1 GB.
    assert peak < 300 * 2**20


def test_hash_is_imagehash_phash(flowers_mini: Path) -> None:
    image = decode_image(sorted((flowers_mini / "roses").glob("*.jpg"))[0])
    value = dedup.perceptual_hash(image)
    assert dedup.hash_hex(value) == str(imagehash.phash(image))
    assert dedup.parse_hash(dedup.hash_hex(value)) == value


def jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return decode_image(buffer.getvalue())


def difference(first: Image.Image, second: Image.Image) -> float:
    thumbnails = np.stack([dedup.thumbnail(first), dedup.thumbnail(second)])
    return float(dedup.thumbnail_differences(thumbnails, np.array([[0, 1]]))[0])


def test_thumbnail_shape() -> None:
    thumb = dedup.thumbnail(Image.new("RGB", (300, 100), "red"))
    assert thumb.shape == (dedup.THUMBNAIL_SIDE, dedup.THUMBNAIL_SIDE, 3)
    assert thumb.dtype == np.uint8


def test_copies_are_confirmed(flowers_mini: Path) -> None:
    for path in sorted((flowers_mini / "sunflowers").glob("*.jpg"))[:3]:
        original = downscale_to_short_side(decode_image(path), 256)
        half = original.resize((original.width // 2, original.height // 2),
                               Image.Resampling.LANCZOS)
        for copy in (jpeg_round_trip(half, 50), jpeg_round_trip(original, 95),
                     jpeg_round_trip(ImageEnhance.Brightness(original).enhance(0.9), 85),
                     jpeg_round_trip(ImageEnhance.Contrast(original).enhance(0.9), 85)):
            assert difference(original, copy) <= CLEAN_TOLERANCE




def test_same_cut_in_another_colour_is_not_a_copy() -> None:
    green, orange = cabochon((40, 150, 60)), cabochon((230, 120, 30))
    assert dedup.perceptual_hash(green) == dedup.perceptual_hash(orange)
    assert difference(green, orange) > 3 * CLEAN_TOLERANCE


def test_different_photos_are_not_copies(flowers_mini: Path) -> None:
    first, second = (decode_image(p) for p in sorted((flowers_mini / "daisy").glob("*.jpg"))[:2])
    assert difference(first, second) > 3 * CLEAN_TOLERANCE


def test_confirmed_pairs_filter_by_tolerance() -> None:
    thumbnails = np.stack([dedup.thumbnail(cabochon(c))
                           for c in ((40, 150, 60), (42, 152, 62), (230, 120, 30))])
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    assert dedup.confirmed_pairs(thumbnails, pairs, CLEAN_TOLERANCE).tolist() == [[0, 1]]
    assert dedup.thumbnail_differences(thumbnails, pairs[:0]).shape == (0,)


def test_groups_follow_chains_and_first_members() -> None:
    pairs = np.array([[3, 5], [1, 4], [4, 6], [0, 6]])
    assert dedup.group_ids(8, pairs).tolist() == [0, 0, 1, 2, 0, 2, 0, 3]
    assert dedup.group_ids(3, np.empty((0, 2), dtype=np.intp)).tolist() == [0, 1, 2]

"""Near-duplicate machinery: exhaustive candidate search, thumbnail confirmation, groups."""

from __future__ import annotations

import io
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


@pytest.mark.parametrize("block_elements", [1, 50, 1 << 22])
def test_candidate_pairs_match_brute_force(block_elements: int) -> None:
    hashes = clustered_hashes(np.random.default_rng(7), 300)
    for max_distance in (0, 3, 20):
        pairs = dedup.candidate_pairs(hashes, max_distance, block_elements=block_elements)
        assert [tuple(p) for p in pairs.tolist()] == brute_force_pairs(hashes, max_distance)


def test_candidate_pairs_of_nothing_and_of_one() -> None:
    for hashes in (np.array([], dtype=np.uint64), np.array([5], dtype=np.uint64)):
        assert dedup.candidate_pairs(hashes, 64).shape == (0, 2)


def test_candidate_pairs_handle_top_bit() -> None:
    hashes = np.array([2**63 + 1, 2**63, 1], dtype=np.uint64)
    assert dedup.candidate_pairs(hashes, 1).tolist() == [[0, 1], [0, 2]]


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

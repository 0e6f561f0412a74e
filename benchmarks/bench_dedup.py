"""All-pairs perceptual-hash candidate search and thumbnail confirmation: seconds per size.

Random uint64 hashes stand in for real ones (the search does the same work whatever the values).
Usage: python benchmarks/bench_dedup.py [--sizes 10000 50000 --max-distance 12] [--smoke]
(`--smoke`: 1,000 hashes and 1,000 thumbnail pairs.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from imgclf import dedup


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--max-distance", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=100_000,
                        help="thumbnail pairs to confirm in the second measurement")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: runs in a second")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.pairs = [1_000], 1_000
    return args


def time_search(n: int, max_distance: int) -> tuple[float, int]:
    hashes = np.random.default_rng(0).integers(0, 2**64, size=n, dtype=np.uint64)
    start = time.perf_counter()
    pairs = dedup.candidate_pairs(hashes, max_distance)
    return time.perf_counter() - start, len(pairs)


def time_confirmation(count: int) -> float:
    rng = np.random.default_rng(0)
    side = dedup.THUMBNAIL_SIDE
    thumbnails = rng.integers(0, 256, size=(1000, side, side, 3), dtype=np.uint8)
    pairs = rng.integers(0, len(thumbnails), size=(count, 2))
    start = time.perf_counter()
    dedup.thumbnail_differences(thumbnails, pairs)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    for n in args.sizes:
        seconds, found = time_search(n, args.max_distance)
        print(f"candidate_pairs: {n:>7,} hashes, {n * (n - 1) // 2:>13,} pairs compared, "
              f"distance <= {args.max_distance}: {seconds:6.2f} s ({found} found)")
    seconds = time_confirmation(args.pairs)
    print(f"thumbnail_differences: {args.pairs:,} pairs of {dedup.THUMBNAIL_SIDE} px thumbnails: "
          f"{seconds:.2f} s ({args.pairs / seconds:,.0f} pairs/s)")


if __name__ == "__main__":
    main()

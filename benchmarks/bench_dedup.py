"""Near-duplicate candidate search and thumbnail confirmation: seconds and peak memory per size.

Random uint64 hashes with 1 % planted neighbours (at random distances up to the limit) stand in
for real ones. For each size and each limit (≤ 4 bits as `clean`, ≤ 12 as `label`) it prints the
time of `candidate_pairs`, the block count its cost model chose, the peak of memory traced during
the search, and the old all-pairs comparison's time: measured up to --brute-force-max hashes,
beyond that extrapolated as n² from the largest measured size.
Usage: python benchmarks/bench_dedup.py [--hashes 50000 1000000] [--max-distances 4 12] [--smoke]
(`--smoke`: 2,000 hashes and 1,000 thumbnail pairs.)
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from imgclf import dedup


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hashes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--max-distances", type=int, nargs="+", default=[4, 12])
    parser.add_argument("--brute-force-max", type=int, default=50_000,
                        help="largest size compared all-pairs (quadratic: 50,000 take ~5 s)")
    parser.add_argument("--pairs", type=int, default=100_000,
                        help="thumbnail pairs to confirm in the second measurement")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: runs in a second")
    args = parser.parse_args()
    if args.smoke:
        args.hashes, args.pairs = [2_000], 1_000
    return args


def planted_hashes(n: int, max_distance: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    near = rng.choice(n, size=n // 100, replace=False)
    for index in near:
        bits = rng.choice(64, size=rng.integers(max_distance + 1), replace=False)
        flips = np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64), initial=0)
        hashes[index] = hashes[rng.integers(n)] ^ np.uint64(flips)
    return hashes


def time_search(hashes: np.ndarray, max_distance: int) -> tuple[float, int, int]:
    """Seconds, pairs found and peak traced bytes of one candidate_pairs call."""
    tracemalloc.start()
    start = time.perf_counter()
    pairs = dedup.candidate_pairs(hashes, max_distance)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, len(pairs), peak


def time_brute_force(hashes: np.ndarray, max_distance: int) -> float:
    # The all-pairs comparison that candidate_pairs replaced (now its fallback for loose limits).
    start = time.perf_counter()
    dedup._compare_all(np.unique(hashes), max_distance)
    return time.perf_counter() - start


def time_confirmation(count: int) -> float:
    rng = np.random.default_rng(0)
    side = dedup.THUMBNAIL_SIDE
    thumbnails = rng.integers(0, 256, size=(1000, side, side, 3), dtype=np.uint8)
    pairs = rng.integers(0, len(thumbnails), size=(count, 2))
    start = time.perf_counter()
    dedup.thumbnail_differences(thumbnails, pairs)
    return time.perf_counter() - start


def report_search(sizes: list[int], max_distance: int, brute_force_max: int) -> None:
    first_seconds, brute = None, None
    for n in sorted(sizes):
        hashes = planted_hashes(n, max_distance)
        seconds, found, peak = time_search(hashes, max_distance)
        first_seconds = first_seconds or (n, seconds)
        if n <= brute_force_max:
            brute = (n, time_brute_force(hashes, max_distance))
            old = f"all pairs {brute[1]:.2f} s"
        else:
            old = ("all pairs ~" f"{brute[1] * (n / brute[0]) ** 2:.0f} s (extrapolated)"
                   if brute else "all pairs not measured")
        blocks = dedup._cheapest_block_count(len(np.unique(hashes)), max_distance)
        print(f"candidate_pairs: {n:>9,} hashes, distance <= {max_distance:>2}: {seconds:7.2f} s, "
              f"{found:,} pairs, blocks {blocks or 'none (all pairs)'}, "
              f"peak {peak / 2**20:.0f} MiB; {old}; "
              f"time / time at {first_seconds[0]:,}: {seconds / first_seconds[1]:.1f}", flush=True)


def main() -> None:
    args = parse_args()
    for max_distance in args.max_distances:
        report_search(args.hashes, max_distance, args.brute_force_max)
    seconds = time_confirmation(args.pairs)
    print(f"thumbnail_differences: {args.pairs:,} pairs of {dedup.THUMBNAIL_SIDE} px thumbnails: "
          f"{seconds:.2f} s ({args.pairs / seconds:,.0f} pairs/s)")


if __name__ == "__main__":
    main()

"""Peak memory of the audit's feature extraction against the size of the features it returns.

The features are the audit's largest object (1,280 float32 a picture with MobileNetV2: 5 kB), and
the stage's memory grows with them (docs/benchmarks.md, "Scale"). This runs
imgclf.curation.features.extract_features on N pictures (plants-40's, repeated to reach N) at a
small size, and prints the features' size, the process's peak resident memory before and after,
and their ratio: how many copies of the features the extraction holds at its peak (the decoder's
and the network's working memory included).
Usage: python benchmarks/bench_audit_memory.py [--pictures 20000] [--image-size 32] [--smoke]
(`--smoke`: 64 flowers-mini pictures: seconds.)
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from imgclf.curation import features

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
WEIGHTS = REPO_ROOT / "weights/mobilenet_v2-imagenet-fp16.pth"


def peak_megabytes() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=int, default=20_000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = SHARED / "datasets" / ("flowers-mini" if args.smoke else "plants-40")
    count = 64 if args.smoke else args.pictures
    found = sorted(path for path in folder.glob("*/*") if path.suffix in (".jpg", ".webp"))
    paths = (found * (count // len(found) + 1))[:count]
    network = features.feature_network("mobilenet_v2", str(WEIGHTS))
    before = peak_megabytes()
    start = time.perf_counter()
    vectors = features.extract_features(paths, network, args.image_size, 64)
    seconds = time.perf_counter() - start
    grown = peak_megabytes() - before
    size = vectors.nbytes / 2**20
    print(f"bench_audit_memory: {time.strftime('%Y-%m-%d %H:%M')}, {count} pictures of "
          f"{folder.name} at {args.image_size} px, torch threads 1, {seconds:.0f} s")
    print(f"features {size:.0f} MB; peak resident memory {before:.0f} MB before, "
          f"+{grown:.0f} MB during the extraction: {grown / size:.1f} x the features")


if __name__ == "__main__":
    main()

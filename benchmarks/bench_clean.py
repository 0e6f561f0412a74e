"""The clean stage on ../shared/datasets/plants-40: images per second with 1 and 2 workers,
against the floor of only decoding the same files.

Builds data/raw in a scratch folder the way scrape leaves it (content-hash names, manifest,
class list), then times each measurement in a fresh process (`--measure`), so that one run's
allocator state cannot speed up the next: glibc keeps freed memory once a large block has been
freed, and on this VM the page faults of fresh decode buffers cost about two thirds of the decode
time. Each measurement runs with glibc's default malloc settings and again with the heap kept
(MALLOC_MMAP_THRESHOLD_=64 MiB and MALLOC_TRIM_THRESHOLD_=128 MiB; either alone does not help).
`clean.run` uses the repository's params.yaml, workers overridden.
Usage: python benchmarks/bench_clean.py [--data DIR --workers 1 2] [--smoke]
(`--smoke`: 4 images of each flowers-mini class, one worker, default malloc: seconds.)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgclf.config.all import AllParams
from imgclf.core.classes import classes_from_names, write_class_list
from imgclf.core.files import read_csv, write_csv
from imgclf.core.images import decode_image
from imgclf.core.params import load_params
from imgclf.core.paths import RAW_CLASSES, RAW_DIR, RAW_MANIFEST
from imgclf.stages import clean

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
MANIFEST_COLUMNS = ("class", "origin", "file", "sha256", "bytes", "status", "reason")
MALLOC_SETTINGS = {
    "default malloc": {},
    "heap kept (mmap 64 MiB, trim 128 MiB)": {"MALLOC_MMAP_THRESHOLD_": str(64 << 20),
                                              "MALLOC_TRIM_THRESHOLD_": str(128 << 20)},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED / "datasets/plants-40")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--per-class", type=int, default=None,
                        help="use only the first N images of each class")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny input (flowers-mini, 4 images a class, one worker)")
    parser.add_argument("--measure", choices=("decode", "clean"),
                        help="internal: time one measurement in the current folder and print it")
    args = parser.parse_args()
    if args.smoke:
        args.data, args.per_class, args.workers = SHARED / "datasets/flowers-mini", 4, [1]
    return args


def build_raw(source: Path, per_class: int | None) -> None:
    """Copy `source`/<class>/<image> (the first `per_class` of each) into data/raw under
    content-hash names."""
    names = sorted(p.name for p in source.iterdir() if p.is_dir())
    write_class_list(RAW_CLASSES, classes_from_names(names))
    rows = []
    for name in names:
        (RAW_DIR / name).mkdir(parents=True, exist_ok=True)
        for image in sorted(p for p in (source / name).iterdir() if p.is_file())[:per_class]:
            data = image.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            file = f"{name}/{digest}{image.suffix.lower()}"
            (RAW_DIR / file).write_bytes(data)
            rows.append({"class": name, "origin": str(image), "file": file, "sha256": digest,
                         "bytes": len(data), "status": 200, "reason": ""})
    write_csv(RAW_MANIFEST, MANIFEST_COLUMNS, rows)


def raw_files() -> list[Path]:
    return sorted({RAW_DIR / row["file"] for row in read_csv(RAW_MANIFEST)})


def decode_only(path: Path) -> tuple[int, int]:
    return decode_image(path).size


def time_decoding(files: list[Path], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        list(map(decode_only, files))
    else:
        with multiprocessing.Pool(workers) as pool:
            list(pool.imap(decode_only, files, chunksize=clean.CHUNK_SIZE))
    return time.perf_counter() - start


def time_clean(workers: int) -> float:
    params = load_params(AllParams, REPO_ROOT / "params.yaml")
    clean_params = params.clean.model_copy(update={"workers": workers})
    params = params.model_copy(update={"clean": clean_params})
    start = time.perf_counter()
    clean.run(params)
    return time.perf_counter() - start


def measure_in_fresh_process(scratch: str, kind: str, workers: int, env: dict[str, str]) -> float:
    result = subprocess.run([sys.executable, __file__, "--measure", kind, "--workers",
                             str(workers)], cwd=scratch, env=os.environ | env, check=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return float(result.stdout)


def main() -> None:
    args = parse_args()
    if args.measure == "decode":
        print(time_decoding(raw_files(), args.workers[0]))
        return
    if args.measure == "clean":
        with contextlib.redirect_stdout(sys.stderr):  # the stage prints a summary on stdout
            seconds = time_clean(args.workers[0])
        print(seconds)
        return
    settings = dict(list(MALLOC_SETTINGS.items())[:1]) if args.smoke else MALLOC_SETTINGS
    with tempfile.TemporaryDirectory(prefix="bench-clean-") as scratch:
        os.chdir(scratch)
        build_raw(args.data.resolve(), args.per_class)
        files = raw_files()
        os.chdir(REPO_ROOT)
        print(f"{len(files)} images from {args.data}, {os.cpu_count()} CPU cores; "
              f"params.yaml clean: {load_params(AllParams, REPO_ROOT / 'params.yaml').clean}")
        for label, env in settings.items():
            for workers in args.workers:
                decode = measure_in_fresh_process(scratch, "decode", workers, env)
                whole = measure_in_fresh_process(scratch, "clean", workers, env)
                print(f"{label}, workers={workers}: decode only {len(files) / decode:6.1f} "
                      f"images/s ({decode:5.1f} s) | clean stage {len(files) / whole:6.1f} "
                      f"images/s ({whole:5.1f} s)")


if __name__ == "__main__":
    main()

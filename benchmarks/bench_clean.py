"""The clean stage on ../shared/datasets/plants-40: images per second with 1 and 2 workers,
against the floor of only decoding the same files.

Builds data/raw in a scratch folder the way scrape leaves it (content-hash names, manifest,
class list), then times each measurement in a fresh process (`--measure`), so that one run's
allocator state cannot speed up the next: glibc keeps freed memory once a large block has been
freed, and on this VM the page faults of fresh decode buffers cost about two thirds of the decode
time. Each measurement runs with glibc's default malloc settings and again with the heap kept
(MALLOC_MMAP_THRESHOLD_=64 MiB and MALLOC_TRIM_THRESHOLD_=128 MiB; either alone does not help).
`clean.run` uses the repository's params.yaml, workers overridden. Decoding alone runs in
processes set up as the stage's workers are (`clean.keep_image_blocks`), so that the ratio of the
two, printed as "stage/floor", compares only the work done per image.

`--jpeg-short-side PX` stores every picture as a JPEG (quality 90) resized to that shorter side
instead of copying the file: sources of the size a web search returns, where the stage decodes a
JPEG at 1/2, 1/4 or 1/8 of its size (`draft`) and the floor decodes it whole.

`--steps N` also times each step of one image (decode, downscale, hash, thumbnail, encode, write)
over N images in this process. `--save-clean DIR` keeps the stage's last output; `--compare DIR`
checks the stage's output against such a saved one: the same status (kept or dropped) and reason
for every file, how many perceptual hashes changed and by how many bits, and the PSNR of every
cleaned JPEG against the saved one (min, median, max).
Usage: python benchmarks/bench_clean.py [--data DIR --workers 1 2] [--jpeg-short-side PX]
       [--steps N] [--save-clean DIR] [--compare DIR] [--smoke]
(`--smoke`: 4 images of each flowers-mini class as 600 px JPEGs, one worker, default malloc:
seconds.)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import math
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from imgclf import dedup
from imgclf.config.all import AllParams
from imgclf.config.clean import CleanParams
from imgclf.core.classes import classes_from_names, write_class_list
from imgclf.core.files import read_csv, write_csv
from imgclf.core.images import decode, decode_image, downscale_to_short_side
from imgclf.core.params import load_params
from imgclf.core.paths import CLEAN_DIR, CLEAN_MANIFEST, RAW_CLASSES, RAW_DIR, RAW_MANIFEST
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
    parser.add_argument("--jpeg-short-side", type=int, default=None, metavar="PX",
                        help="store each picture as a JPEG with this shorter side (web-sized "
                             "JPEG sources) instead of copying the file")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny input (flowers-mini, 4 images a class as 600 px JPEGs, one "
                             "worker)")
    parser.add_argument("--steps", type=int, default=0, metavar="N",
                        help="also time each step of the stage on the first N images")
    parser.add_argument("--save-clean", type=Path, metavar="DIR",
                        help="copy the stage's last data/clean to DIR")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="compare the stage's output with a data/clean saved in DIR")
    parser.add_argument("--measure", choices=("decode", "clean"),
                        help="internal: time one measurement in the current folder and print it")
    args = parser.parse_args()
    if args.smoke:
        args.data, args.per_class, args.workers = SHARED / "datasets/flowers-mini", 4, [1]
        args.jpeg_short_side = args.jpeg_short_side or 600
        args.steps = args.steps or 8
    for name in ("data", "save_clean", "compare"):  # the benchmark changes folders
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    return args


def build_raw(source: Path, per_class: int | None, jpeg_short_side: int | None) -> None:
    """Write `source`/<class>/<image> (the first `per_class` of each) into data/raw under
    content-hash names: the files as they are, or re-encoded (`source_bytes`)."""
    names = sorted(p.name for p in source.iterdir() if p.is_dir())
    write_class_list(RAW_CLASSES, classes_from_names(names))
    rows = []
    for name in names:
        (RAW_DIR / name).mkdir(parents=True, exist_ok=True)
        for image in sorted(p for p in (source / name).iterdir() if p.is_file())[:per_class]:
            data, suffix = source_bytes(image, jpeg_short_side)
            digest = hashlib.sha256(data).hexdigest()
            file = f"{name}/{digest}{suffix}"
            (RAW_DIR / file).write_bytes(data)
            rows.append({"class": name, "origin": str(image), "file": file, "sha256": digest,
                         "bytes": len(data), "status": 200, "reason": ""})
    write_csv(RAW_MANIFEST, MANIFEST_COLUMNS, rows)


def source_bytes(image: Path, jpeg_short_side: int | None) -> tuple[bytes, str]:
    """The file's bytes and suffix; with `jpeg_short_side`, the picture resized (Lanczos) to that
    shorter side and encoded as a JPEG of quality 90 instead."""
    if jpeg_short_side is None:
        return image.read_bytes(), image.suffix.lower()
    picture = decode_image(image)
    scale = jpeg_short_side / min(picture.size)
    size = (round(picture.width * scale), round(picture.height * scale))
    return clean.encode_jpeg(picture.resize(size, Image.Resampling.LANCZOS), 90), ".jpg"


def raw_files() -> list[Path]:
    return sorted({RAW_DIR / row["file"] for row in read_csv(RAW_MANIFEST)})


def decode_only(path: Path) -> tuple[int, int]:
    return decode_image(path).size


def time_decoding(files: list[Path], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        with clean.image_blocks_kept():
            list(map(decode_only, files))
    else:
        with multiprocessing.Pool(workers, initializer=clean.keep_image_blocks) as pool:
            list(pool.imap(decode_only, files, chunksize=clean.CHUNK_SIZE))
    return time.perf_counter() - start


def time_steps(files: list[Path], params: CleanParams, out_dir: Path) -> dict[str, float]:
    """Milliseconds per image of each step of `clean._prepare`, each step run over all `files`
    before the next (the pictures stay in memory, so the allocator is warm)."""
    steps: dict[str, float] = {}

    def timed(name: str, work: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        work(items[0])  # not timed: the first call imports and sets up
        start = time.perf_counter()
        results = [work(item) for item in items]
        steps[name] = (time.perf_counter() - start) / len(items) * 1000
        return results

    with clean.image_blocks_kept():
        decoded = timed("decode", lambda path: decode(path, short_side=params.short_side).image,
                        files)
        small = timed("downscale", lambda image: downscale_to_short_side(image, params.short_side),
                      decoded)
        timed("perceptual hash", dedup.perceptual_hash, small)
        timed("thumbnail", dedup.thumbnail, small)
        encoded = timed("JPEG encode", lambda image: clean.encode_jpeg(image, params.jpeg_quality),
                        small)
        names = itertools.count()
        timed("write", lambda data: (out_dir / f"{next(names)}.jpg").write_bytes(data), encoded)
    return steps


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 pictures (inf when identical)."""
    error = np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255 ** 2 / error)


def compare_outputs(saved: Path, current: Path) -> list[str]:
    """Lines saying how the data/clean in `current` differs from the one in `saved`."""
    before = {row["file"]: row for row in read_csv(saved / CLEAN_MANIFEST.name)}
    after = {row["file"]: row for row in read_csv(current / CLEAN_MANIFEST.name)}
    changed = sorted(file for file in before.keys() | after.keys()
                     if (before.get(file, {}).get("status"), before.get(file, {}).get("reason"))
                     != (after.get(file, {}).get("status"), after.get(file, {}).get("reason")))
    bits = [bin(dedup.parse_hash(before[file]["phash"]) ^ dedup.parse_hash(row["phash"]))
            .count("1") for file, row in after.items()
            if file in before and row["phash"] and before[file]["phash"]]
    moved = [count for count in bits if count]
    ratios = [psnr(np.asarray(decode_image(saved / row["clean_file"])),
                   np.asarray(decode_image(current / row["clean_file"])))
              for file, row in after.items()
              if row["clean_file"] and before.get(file, {}).get("clean_file") == row["clean_file"]]
    lines = [f"compared with {saved}: {len(after)} files ({len(before)} saved), "
             f"{sum(row['status'] == 'kept' for row in after.values())} kept "
             f"({sum(row['status'] == 'kept' for row in before.values())} saved); "
             f"{len(changed)} with another status or reason"
             + (f", e.g. {changed[:3]}" if changed else ""),
             f"perceptual hashes: {len(moved)} of {len(bits)} changed"
             + (f", by {min(moved)}-{max(moved)} bits (median {statistics.median(moved)})"
                if moved else "")]
    if ratios:
        lines.append(f"PSNR of {len(ratios)} cleaned JPEGs against the saved ones: min "
                     f"{min(ratios):.1f} dB, median {statistics.median(ratios):.1f} dB, max "
                     f"{max(ratios):.1f} dB; {sum(r < 40 for r in ratios)} below 40 dB")
    return lines


def time_clean(workers: int) -> float:
    params = load_params(AllParams, REPO_ROOT / "params.yaml")
    clean_params = params.clean.model_copy(update={"workers": workers})
    params = params.model_copy(update={"clean": clean_params})
    start = time.perf_counter()
    clean.run(params)
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process and of its finished workers, which a busy machine changes much
    less than the wall-clock time."""
    return sum(usage.ru_utime + usage.ru_stime for usage in
               (resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN)))


def measure_in_fresh_process(scratch: str, kind: str, workers: int,
                             env: dict[str, str]) -> tuple[float, float]:
    """Seconds and CPU seconds of one measurement."""
    result = subprocess.run([sys.executable, __file__, "--measure", kind, "--workers",
                             str(workers)], cwd=scratch, env=os.environ | env, check=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seconds, cpu = result.stdout.split()
    return float(seconds), float(cpu)


def main() -> None:
    args = parse_args()
    if args.measure:
        cpu = cpu_seconds()
        if args.measure == "decode":
            seconds = time_decoding(raw_files(), args.workers[0])
        else:
            with contextlib.redirect_stdout(sys.stderr):  # the stage prints a summary on stdout
                seconds = time_clean(args.workers[0])
        print(seconds, cpu_seconds() - cpu)
        return
    settings = dict(list(MALLOC_SETTINGS.items())[:1]) if args.smoke else MALLOC_SETTINGS
    with tempfile.TemporaryDirectory(prefix="bench-clean-") as scratch:
        os.chdir(scratch)
        build_raw(args.data, args.per_class, args.jpeg_short_side)
        files = [Path(scratch) / file for file in raw_files()]
        os.chdir(REPO_ROOT)
        params = load_params(AllParams, REPO_ROOT / "params.yaml").clean
        stored = f" as {args.jpeg_short_side} px JPEGs" if args.jpeg_short_side else ""
        print(f"{len(files)} images from {args.data}{stored}, {os.cpu_count()} CPU cores, "
              f"load average {' '.join(f'{load:.2f}' for load in os.getloadavg())}; "
              f"params.yaml clean: {params}")
        if args.steps:
            with tempfile.TemporaryDirectory(prefix="bench-clean-steps-") as out_dir:
                steps = time_steps(files[::max(1, len(files) // args.steps)][:args.steps], params,
                                   Path(out_dir))
            print("per image, ms: " + ", ".join(f"{name} {ms:.2f}" for name, ms in steps.items()))
        for label, env in settings.items():
            for workers in args.workers:
                decode_s, decode_cpu = measure_in_fresh_process(scratch, "decode", workers, env)
                whole, whole_cpu = measure_in_fresh_process(scratch, "clean", workers, env)
                print(f"{label}, workers={workers}: decode only {len(files) / decode_s:6.1f} "
                      f"images/s ({decode_s:5.1f} s, CPU {decode_cpu:5.1f} s) | clean stage "
                      f"{len(files) / whole:6.1f} images/s ({whole:5.1f} s, CPU {whole_cpu:5.1f} s)"
                      f" | stage/floor {decode_s / whole:.2f} (CPU {decode_cpu / whole_cpu:.2f})")
        output = Path(scratch) / CLEAN_DIR
        if args.compare or args.smoke:  # the smoke run compares the output with itself
            print("\n".join(compare_outputs(args.compare or output, output)))
        if args.save_clean:
            shutil.rmtree(args.save_clean, ignore_errors=True)
            shutil.copytree(output, args.save_clean)


if __name__ == "__main__":
    main()

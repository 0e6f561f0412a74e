"""Peak memory of decoding large pictures: threads decoding at once (the download workers) and
one large JPEG decoded the way the clean stage decodes it.

Each measurement runs in a fresh process and reports its peak resident memory while decoding
(Linux's VmHWM, reset just before through /proc/self/clear_refs) above what it held before
(interpreter, libraries, the files' bytes), and the time.

1. `threads`: THREADS threads each decode one PNG of SIDE x SIDE pixels (49 megapixels by
   default, just under the 50-megapixel limit) with `decode_image`, as the download workers do;
   once as the code is, and once with the pixel budget lifted (`images.DECODE_BUDGET`).
2. `clean-jpeg`: one SIDE x SIDE JPEG decoded and shrunk to a 256 px short side as clean does
   (a reduced-size decode where the code offers one).

`--baseline-src DIR` repeats both with another checkout's `src` (for example the code before a
change: `git archive main src | tar -x -C /tmp/before`, then `--baseline-src /tmp/before/src`).
Usage: python benchmarks/bench_memory.py [--side 7000 --threads 8] [--baseline-src DIR] [--smoke]
(`--smoke`: 1500 px pictures, 2 threads: a few seconds.)
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHORT_SIDE = 256  # clean.short_side in params.yaml


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=7000, help="pictures are SIDE x SIDE")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src to compare")
    parser.add_argument("--smoke", action="store_true", help="small pictures, 2 threads")
    parser.add_argument("--child", choices=("threads", "clean-jpeg"), help=argparse.SUPPRESS)
    parser.add_argument("--no-budget", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.side, args.threads = 1500, 2
    return args


def make_pictures(folder: Path, side: int, count: int) -> tuple[list[Path], Path]:
    """`count` different PNGs and one JPEG of side x side: smooth colour ramps with a little
    noise, so that the files stay small but every pixel must be decoded."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pngs = []
    for number in range(count):
        noise = np.random.default_rng(number).integers(0, 8, size=(side, 1, 1))
        pixels = np.empty((side, side, 3), dtype=np.uint8)
        pixels[..., 0] = ramp[None, :]
        pixels[..., 1] = ramp[:, None]
        pixels[..., 2] = (ramp[None, :] + number * 20) % 256
        pixels += noise.astype(np.uint8)
        path = folder / f"{number}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        pngs.append(path)
    jpeg = folder / "large.jpg"
    Image.open(pngs[0]).convert("RGB").save(jpeg, quality=85)
    return pngs, jpeg


def memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc/self/status, in MB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status: this benchmark needs Linux")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5", encoding="ascii")  # 5: reset VmHWM


def child(args: argparse.Namespace) -> None:
    """Decode in this process and print {"peak_mb": ..., "seconds": ...} as JSON."""
    from imgclf.core import images

    if args.no_budget:
        images.DECODE_BUDGET = images.PixelBudget(sys.maxsize)
    contents = [path.read_bytes() for path in args.files]
    reset_peak()
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    if args.child == "threads":
        with ThreadPoolExecutor(max_workers=len(contents)) as pool:
            list(pool.map(lambda data: images.decode_image(data).size, contents))
    else:
        reduced = "short_side" in inspect.signature(images.decode_image).parameters
        options = {"short_side": SHORT_SIDE} if reduced else {}
        picture = images.decode_image(contents[0], **options)
        images.downscale_to_short_side(picture, SHORT_SIDE)
    print(json.dumps({"peak_mb": memory_mb("VmHWM") - before,
                      "seconds": time.perf_counter() - start}))


def measure(src: Path, kind: str, files: list[Path], no_budget: bool = False) -> dict:
    env = os.environ | {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--child", kind, "--files", *map(str, files)]
    result = subprocess.run(command + (["--no-budget"] if no_budget else []), env=env,
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    codes = {"this checkout": REPO_ROOT / "src"}
    if args.baseline_src:
        codes["baseline " + str(args.baseline_src)] = args.baseline_src.resolve()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        pngs, jpeg = make_pictures(Path(scratch), args.side, args.threads)
        megapixels = args.side * args.side / 1e6
        print(f"{args.threads} threads x {args.side}x{args.side} PNG ({megapixels:.1f} MP each), "
              f"one {args.side}x{args.side} JPEG -> short side {SHORT_SIDE}; "
              f"{os.cpu_count()} CPU cores; peak RSS above the process's own, per fresh process")
        for name, src in codes.items():
            runs = [("threads", pngs, False), ("clean-jpeg", [jpeg], False)]
            if name == "this checkout":
                runs.insert(1, ("threads, no pixel budget", pngs, True))
            for label, files, no_budget in runs:
                figures = measure(src, label.split(",")[0], files, no_budget)
                print(f"{name:>16} | {label:<26} | peak {figures['peak_mb']:7.0f} MB | "
                      f"{figures['seconds']:6.2f} s")


if __name__ == "__main__":
    main()

"""The folder source on a directory and on a .zip of the same tree: seconds for the scrape stage.

Zips `--data` (plants-40 by default) into a scratch folder, then runs `python -m imgclf scrape`
with `scrape.source: folder` on the directory and on the archive, each in a fresh scratch
repository with the checkout's own params.yaml (classes from the folder names).
`--baseline-src DIR` repeats both with another checkout's `src` and the params.yaml beside it
(for example the code before a change: `git archive main src params.yaml | tar -x -C /tmp/before`,
then `--baseline-src /tmp/before/src`).
Usage: python benchmarks/bench_folder.py [--data DIR] [--baseline-src DIR] [--smoke]
(`--smoke`: 5 images of each flowers-mini class.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from workspace import REPO_ROOT, SHARED, write_folder_params


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "datasets/plants-40")
    parser.add_argument("--per-class", type=int, default=None,
                        help="use only the first N images of each class")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src to compare")
    parser.add_argument("--smoke", action="store_true", help="tiny input: a few seconds")
    args = parser.parse_args()
    if args.smoke:
        args.data, args.per_class = SHARED / "datasets/flowers-mini", 5
    return args


def copy_tree(source: Path, target: Path, per_class: int | None) -> int:
    """Copy `source`/<class>/<image> (the first `per_class` of each class); the file count."""
    count = 0
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True)
        for image in sorted(p for p in folder.iterdir() if p.is_file())[:per_class]:
            shutil.copyfile(image, target / folder.name / image.name)
            count += 1
    return count


def zip_tree(tree: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                handle.write(path, path.relative_to(tree.parent).as_posix())


def scrape_seconds(src: Path, folder: Path, scratch: Path) -> float:
    """Run the scrape stage of the checkout whose `src` is given on `folder`; wall seconds."""
    repo = Path(tempfile.mkdtemp(dir=scratch, prefix="repo-"))
    write_folder_params(repo, folder, template=src.parent / "params.yaml")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgclf", "scrape"], cwd=repo, check=True,
                   env=os.environ | {"PYTHONPATH": str(src.resolve())},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    codes = {"this checkout": REPO_ROOT / "src"}
    if args.baseline_src:
        codes["baseline " + str(args.baseline_src)] = args.baseline_src
    with tempfile.TemporaryDirectory(prefix="bench-folder-") as scratch_name:
        scratch = Path(scratch_name)
        tree = scratch / "tree" / args.data.name
        count = copy_tree(args.data, tree, args.per_class)
        archive = scratch / f"{args.data.name}.zip"
        zip_tree(tree, archive)
        print(f"{count} files from {args.data} ({archive.stat().st_size / 1e6:.1f} MB zipped); "
              f"{os.cpu_count()} CPU cores; scrape stage wall time, fresh repository each")
        for name, src in codes.items():
            seconds = {kind: scrape_seconds(src, path, scratch)
                       for kind, path in (("directory", tree), ("zip", archive))}
            print(f"{name}: directory {seconds['directory']:6.1f} s | zip {seconds['zip']:6.1f} s"
                  f" ({seconds['zip'] / seconds['directory']:.1f}x the directory)")


if __name__ == "__main__":
    main()

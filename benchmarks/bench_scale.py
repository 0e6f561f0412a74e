"""Scale: the data stages and DVC at thousands of pictures (issue 17, items 3 and 4).

For each size N it generates a class tree of N small real-looking JPEGs (crops, flips, colour
shifts and re-encodes of ../shared/datasets/flowers-mini and plants-40, about 1 % planted exact
copies and 1 % near copies), copies this checkout into a scratch git repository
(`copy_repository`, as the DVC tests do) with the folder source on that tree, and measures:
`dvc repro -s` of each data stage in turn (scrape, clean, audit, label: `dvc repro label` needs
the audit's ranking), a no-op `dvc repro label`, `dvc status`, `dvc push` to a local SeaweedFS
S3 server (scripts/s3_server.py, as bench_remote.py) and `dvc pull` into a fresh clone.

Each command's time is split into the stage's own command and DVC's share (hashing, cache,
lock file); memory is sampled every 0.1 s with psutil: the DVC process's resident set, and the
sum over the stage command's processes (clean's workers included; pages they share are counted
once per process, so an upper bound). It prints a table per size, extrapolates linearly to 100k
and a million pictures, and draws time and memory against size (docs/scale.png by default).

`--try-config core.checksum_jobs=8` (repeatable) re-times the no-op repro and the status with
that DVC setting, for a before/after in the same run. Last, it re-times them with dvc.yaml as it
was before the data folders were named by their manifests (every stage that reads data/raw or
data/clean naming the folder itself; `dvc commit` records that without running a stage).

Usage: python benchmarks/bench_scale.py [SIZE ...] [--smoke] [--workdir DIR] [--plot PNG]
       [--results JSON] [--audit-image-size PX] [--try-config KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
import yaml
from PIL import Image, ImageEnhance
from workspace import REPO_ROOT, SHARED, scratch_workspace, write_folder_params

from imgclf.core.paths import CLEAN_DIR, RAW_DIR

sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT / "tests"))
from s3_server import SeaweedS3  # noqa: E402

from helpers.dvcrepo import copy_repository, environment  # noqa: E402

SOURCES = ("flowers-mini", "plants-40")
STAGES = ("scrape", "clean", "audit", "label")
DATA_FOLDERS = (RAW_DIR.as_posix(), CLEAN_DIR.as_posix())
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
PLANTED_SHARE = 0.01  # of each kind: exact copies, near copies
SAMPLE_SECONDS = 0.1
MB = 1024 * 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, help="pictures per tree (default: 5000)")
    parser.add_argument("--smoke", action="store_true",
                        help="one tiny tree (80 pictures of flowers-mini), plot in a temp folder")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep trees and repositories here (default: a temporary folder)")
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs/scale.png")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON file the figures are merged into (by size); the plot draws "
                             "every size in it")
    parser.add_argument("--audit-image-size", type=int, default=64,
                        help="audit.image_size (the audit is not what this measures; at 64 px "
                             "the network does (160/64)^2 = 6x less work than at the default "
                             "160 px, and the features take the same memory)")
    parser.add_argument("--try-config", action="append", default=[], metavar="KEY=VALUE",
                        help="re-time the no-op repro and status with this `dvc config`")
    args = parser.parse_args()
    if args.smoke:
        args.sizes = [80]
        args.plot = Path(tempfile.mkdtemp(prefix="bench-scale-plot-")) / "scale.png"
    args.sizes = args.sizes or [5000]
    return args


# --- the synthetic tree ---------------------------------------------------------------------

def source_pictures(names: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(class, path) of every source photo, interleaved across classes so that any prefix covers
    the classes evenly."""
    by_class: dict[str, list[Path]] = {}
    for name in names:
        for folder in sorted(p for p in (SHARED / "datasets" / name).iterdir() if p.is_dir()):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            by_class.setdefault(folder.name, []).extend(files)
    ranked = [(index, cls, path) for cls, files in by_class.items()
              for index, path in enumerate(files)]
    return [(cls, path) for _, cls, path in sorted(ranked)]


def make_variants(task: tuple[Path, Path, int, int]) -> list[Path]:
    """`count` different crops of one photo, each flipped or not, shifted in brightness and
    colour, scaled to a 256-400 px longer side and saved as JPEG at quality 72-92."""
    source, folder, count, seed = task
    rng = random.Random(seed)
    with Image.open(source) as opened:
        photo = opened.convert("RGB")
    written = []
    for variant in range(count):
        width, height = photo.size
        area = rng.uniform(0.45, 0.9) * width * height
        aspect = rng.uniform(0.75, 1.33)
        w = min(width, round((area * aspect) ** 0.5))
        h = min(height, round((area / aspect) ** 0.5))
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        picture = photo.crop((left, top, left + w, top + h))
        if variant % 2 == 1:
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        picture = ImageEnhance.Brightness(picture).enhance(rng.uniform(0.85, 1.15))
        picture = ImageEnhance.Color(picture).enhance(rng.uniform(0.8, 1.2))
        scale = rng.randint(256, 400) / max(picture.size)
        picture = picture.resize((max(1, round(picture.width * scale)),
                                  max(1, round(picture.height * scale))), Image.LANCZOS)
        path = folder / f"{source.stem}-{variant}.jpg"
        picture.save(path, "JPEG", quality=rng.randint(72, 92))
        written.append(path)
    return written


def generate_tree(root: Path, size: int, names: tuple[str, ...], seed: int = 0) -> dict:
    """`size` pictures under root/<class>/; returns what was planted."""
    planted = max(1, round(size * PLANTED_SHARE))
    base = size - 2 * planted
    sources = source_pictures(names)
    tasks = []
    for index, (cls, path) in enumerate(sources[:base]):
        count = base // len(sources) + (1 if index < base % len(sources) else 0)
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        tasks.append((path, folder, count, seed * 1_000_003 + index))
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        pictures = [p for written in pool.imap(make_variants, tasks, chunksize=16)
                    for p in written]
    rng = random.Random(seed)
    chosen = rng.sample(pictures, 2 * planted)
    for original in chosen[:planted]:  # exact copies: the same bytes under another name
        shutil.copyfile(original, original.with_name(original.stem + "-copy.jpg"))
    for original in chosen[planted:]:  # near copies: 95 % of the size, re-encoded at q 80
        with Image.open(original) as picture:
            smaller = picture.resize((round(picture.width * 0.95), round(picture.height * 0.95)),
                                     Image.LANCZOS)
            smaller.save(original.with_name(original.stem + "-near.jpg"), "JPEG", quality=80)
    files = sum(1 for _ in root.glob("*/*.jpg"))
    return {"pictures": files, "classes": len(list(root.iterdir())), "sources": len(tasks),
            "exact_copies": planted, "near_copies": planted,
            "tree_mb": round(sum(p.stat().st_size for p in root.glob("*/*.jpg")) / MB, 1)}


# --- measuring commands ---------------------------------------------------------------------

def measure(repo: Path, env: dict[str, str], *command: str) -> dict:
    """Run a command, sampling memory: seconds, the stage command's seconds (from its first to
    its last sample), the command's own peak RSS and its children's peak summed RSS, in MB."""
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        process = psutil.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        own = children = 0
        first = last = None
        while process.poll() is None:
            try:
                own = max(own, process.memory_info().rss)
                descendants = process.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            total = 0
            for child in descendants:
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            if descendants:
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
            children = max(children, total)
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read()
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed in {repo}:\n{output[-3000:]}")
    return {"seconds": seconds, "command_seconds": (last - first) if first is not None else 0.0,
            "dvc_mb": own / MB, "stage_mb": children / MB, "output": output}


def quiet(repo: Path, env: dict[str, str], *command: str) -> str:
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {repo}:\n"
                         f"{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout + result.stderr


def scratch_repository(repo: Path, tree: Path, audit_image_size: int,
                       server: SeaweedS3, size: int) -> dict[str, str]:
    """This checkout copied into `repo` as a git repository, params on the tree, the S3 remote
    the default; returns the environment of commands run in it."""
    repo.mkdir(parents=True)
    copy_repository(repo)
    env = environment(repo, server.env())
    params = write_folder_params(repo, tree, template=repo / "params.yaml")
    params["audit"]["image_size"] = audit_image_size
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    quiet(repo, env, "git", "init", "-q")
    quiet(repo, env, "dvc", "remote", "modify", "s3", "endpointurl", server.endpoint)
    quiet(repo, env, "dvc", "remote", "modify", "s3", "url", f"s3://{server.bucket}/scale-{size}")
    quiet(repo, env, "dvc", "remote", "default", "s3")
    quiet(repo, env, "git", "add", "-A")
    quiet(repo, env, "git", "commit", "-q", "-m", "scratch copy for bench_scale")
    return env


def noop_checks(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    figures = {"repro_noop": measure(repo, env, "dvc", "repro", "label")}
    if "Running stage" in figures["repro_noop"]["output"]:
        raise SystemExit(f"the no-op dvc repro ran stages:\n{figures['repro_noop']['output']}")
    figures["status"] = measure(repo, env, "dvc", "status", "--with-deps", "label")
    if "up to date" not in figures["status"]["output"]:
        raise SystemExit(f"dvc status is not clean:\n{figures['status']['output'][-3000:]}")
    return figures


def name_the_folders(repo: Path, env: dict[str, str]) -> None:
    """Every dependency inside a data folder replaced by the folder itself in dvc.yaml (as it was
    before), recorded in dvc.lock by `dvc commit` so that the next repro is a no-op again."""
    path = repo / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text(encoding="utf-8"))
    for stage in pipeline["stages"].values():
        deps: list[str] = []
        for dep in stage.get("deps", []):
            named = next((f for f in DATA_FOLDERS if dep.startswith(f"{f}/")), dep)
            if named not in deps:
                deps.append(named)
        stage["deps"] = deps
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False), encoding="utf-8")
    quiet(repo, env, "dvc", "commit", "--force", "--with-deps", "label")


def run_size(workdir: Path, size: int, args: argparse.Namespace, server: SeaweedS3) -> dict:
    base = workdir / f"n{size}"
    tree, repo, clone = base / "pictures", base / "repo", base / "clone"
    start = time.perf_counter()
    result: dict = {"size": size, "tree": generate_tree(
        tree, size, SOURCES[:1] if args.smoke else SOURCES)}
    result["tree"]["generate_seconds"] = round(time.perf_counter() - start, 1)
    env = scratch_repository(repo, tree, args.audit_image_size, server, size)
    ops: dict[str, dict] = {}
    for stage in STAGES:
        ops[stage] = measure(repo, env, "dvc", "repro", "-s", stage)
    ops.update(noop_checks(repo, env))
    quiet(repo, env, "git", "add", "-A")
    quiet(repo, env, "git", "commit", "-q", "-m", "bench_scale outputs")
    ops["push"] = measure(repo, env, "dvc", "push", "--with-deps", "label")
    quiet(base, env, "git", "clone", "-q", str(repo), str(clone))
    clone_env = environment(clone, server.env())
    ops["pull"] = measure(clone, clone_env, "dvc", "pull", "--with-deps", "label")
    tried = {}
    for setting in args.try_config:
        key, value = setting.split("=", 1)
        quiet(repo, env, "dvc", "config", key, value)
        tried[setting] = {name: _public(op) for name, op in noop_checks(repo, env).items()}
        quiet(repo, env, "dvc", "config", "--unset", key)
    name_the_folders(repo, env)
    folders_named = {name: _public(op) for name, op in noop_checks(repo, env).items()}
    clean = json.loads((repo / "metrics/clean.json").read_text(encoding="utf-8"))
    split = json.loads((repo / "metrics/split.json").read_text(encoding="utf-8"))
    result.update(
        ops={name: _public(op) for name, op in ops.items()}, tried=tried,
        folders_named=folders_named,
        cache_files=sum(1 for p in (repo / ".dvc/cache/files").rglob("*") if p.is_file()),
        raw=sum(1 for _ in (repo / "data/raw").glob("*/*.*")),
        clean_counts={k: v for k, v in clean.items() if not isinstance(v, (dict, list))},
        split_counts={k: v for k, v in split.items() if not isinstance(v, (dict, list))})
    if args.workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return result


def _public(op: dict) -> dict:
    return {key: round(value, 2) for key, value in op.items() if key != "output"}


# --- report ---------------------------------------------------------------------------------

LABELS = {"scrape": "scrape (folder)", "clean": "clean", "audit": "audit", "label": "label",
          "repro_noop": "no-op dvc repro label", "status": "dvc status --with-deps label",
          "push": "dvc push to S3", "pull": "dvc pull from S3 (fresh clone)"}


def conditions() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    dvc = subprocess.run(["dvc", "--version"], capture_output=True, text=True,
                         env=environment()).stdout.strip()
    return (f"{datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, load average {load}, "
            f"DVC {dvc}, Python {platform.python_version()}")


def print_size(result: dict) -> None:
    tree = result["tree"]
    print(f"\n## {result['size']:,} pictures ({tree['classes']} classes, {tree['tree_mb']} MB; "
          f"{tree['exact_copies']} exact + {tree['near_copies']} near copies planted; "
          f"generated in {tree['generate_seconds']} s)")
    print(f"data/raw {result['raw']:,} files; clean: {result['clean_counts']}; "
          f"DVC cache {result['cache_files']:,} files")
    print("| operation | seconds | stage command s | DVC's share s | DVC peak MB | stage peak MB |")
    print("|---|---|---|---|---|---|")
    for name, op in result["ops"].items():
        print(f"| {LABELS[name]} | {op['seconds']:.1f} | {op['command_seconds']:.1f} | "
              f"{op['seconds'] - op['command_seconds']:.1f} | {op['dvc_mb']:.0f} | "
              f"{op['stage_mb']:.0f} |")
    tried = dict(result["tried"])
    tried["every stage naming data/raw and data/clean (the layout before)"] = (
        result["folders_named"])
    for setting, ops in tried.items():
        print(f"with {setting}: " + ", ".join(
            f"{LABELS[name]} {op['seconds']:.1f} s" for name, op in ops.items()))


def extrapolate(results: list[dict]) -> None:
    """Linear in the number of pictures through the two largest sizes measured."""
    if len(results) < 2:
        return
    (n1, r1), (n2, r2) = [(r["size"], r) for r in sorted(results, key=lambda r: r["size"])[-2:]]
    print(f"\nextrapolated linearly through {n1:,} and {n2:,} pictures "
          "(seconds; peak MB of the stage, or of DVC for the DVC commands):")
    print("| operation | 100,000 s | 1,000,000 s | 100,000 MB | 1,000,000 MB |")
    print("|---|---|---|---|---|")
    for name in r2["ops"]:
        key = "stage_mb" if name in STAGES else "dvc_mb"
        row = []
        for field in ("seconds", key):
            a, b = r1["ops"][name][field], r2["ops"][name][field]
            slope = (b - a) / (n2 - n1)
            row += [b + slope * (n - n2) for n in (100_000, 1_000_000)]
        print(f"| {LABELS[name]} | {row[0]:,.0f} | {row[1]:,.0f} | {row[2]:,.0f} | "
              f"{row[3]:,.0f} |")


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda r: r["size"])
    sizes = [r["size"] for r in results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for name in results[-1]["ops"]:
        left.plot(sizes, [r["ops"][name]["seconds"] for r in results], marker="o",
                  label=LABELS[name])
        key = "stage_mb" if name in STAGES else "dvc_mb"
        if name in STAGES or name in ("repro_noop", "push", "pull"):
            right.plot(sizes, [r["ops"][name][key] for r in results], marker="o",
                       label=LABELS[name] + ("" if name in STAGES else " (DVC)"))
    left.plot(sizes, [r["folders_named"]["repro_noop"]["seconds"] for r in results], marker="x",
              linestyle="--", label=LABELS["repro_noop"] + ", stages naming the folders (before)")
    for axis, unit in ((left, "seconds"), (right, "peak resident MB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("pictures")
        axis.set_ylabel(unit)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=6)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    args = parse_args()
    stated = conditions()
    print(f"bench_scale: {stated}; audit.image_size {args.audit_image_size}")
    earlier = []
    if args.results and args.results.exists():
        earlier = json.loads(args.results.read_text(encoding="utf-8"))
    results = []
    with scratch_workspace(args.workdir, "bench-scale-") as workdir, \
            SeaweedS3(workdir / "s3") as server:
        for size in args.sizes:
            result = run_size(workdir, size, args, server)
            result["conditions"] = stated
            print_size(result)
            results.append(result)
    measured = {r["size"] for r in results}
    every = sorted([r for r in earlier if r["size"] not in measured] + results,
                   key=lambda r: r["size"])
    if args.results:
        args.results.write_text(json.dumps(every, indent=1), encoding="utf-8")
    extrapolate(every)
    plot(every, args.plot, "bench_scale: " + re.sub(r", Python.*", "", stated))
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()

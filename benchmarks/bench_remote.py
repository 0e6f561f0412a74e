"""Push and pull of a real pipeline's outputs through S3 (SeaweedFS on 127.0.0.1).

Builds data/raw, data/clean and data/split of ../shared/datasets/plants-40 (about 5,000 images)
with the real stages under `dvc repro`, and a model (one short epoch: the point is the files, not
the accuracy), in a clone of this repository. Then it times, against a local SeaweedFS server
(scripts/s3_server.py): the first `dvc push`, a no-op re-push, a `dvc pull` into a fresh clone,
and in that clone a no-op `dvc repro` and `dvc status`. The same first push to a local-directory
remote is timed too, for a ratio measured in the same run.

Usage: python benchmarks/bench_remote.py [--smoke] [--data DIR] [--workdir DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from workspace import REPO_ROOT, SHARED, scratch_workspace, write_folder_params

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from s3_server import SeaweedS3  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="flowers-mini (200 images) instead of plants-40: seconds")
    parser.add_argument("--data", type=Path, default=None,
                        help="image folder (default: plants-40, or flowers-mini with --smoke)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="dvc push/pull -j (default: DVC's own, 4 x cores)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep everything here (default: a temporary folder, removed)")
    args = parser.parse_args()
    if args.data is None:
        args.data = SHARED / "datasets" / ("flowers-mini" if args.smoke else "plants-40")
    return args


def environment(repo: Path, credentials: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, **credentials)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on users' machines
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=str(repo / "src"), OMP_NUM_THREADS="1",
               AWS_EC2_METADATA_DISABLED="true",  # never ask a cloud metadata address
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    return env


def timed(repo: Path, env: dict[str, str], *command: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {repo}:\n{output[-3000:]}")
    return seconds, output


def cache_size(repo: Path) -> tuple[int, int]:
    """Files and bytes in the repository's DVC cache (what a push sends)."""
    files = [p for p in (repo / ".dvc/cache/files").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    args = parse_args()
    jobs = ["-j", str(args.jobs)] if args.jobs else []
    with scratch_workspace(args.workdir, "bench-remote-") as workdir, \
            SeaweedS3(workdir / "s3") as server:
        figures = run(workdir, args.data, server, jobs)
    report(args, figures)


def run(workdir: Path, data: Path, server: SeaweedS3, jobs: list[str]) -> dict[str, object]:
    repo, clone = workdir / "repo", workdir / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(repo)], check=True)
    env = environment(repo, server.env())
    # A model file of the real size from one short epoch at a small image size.
    write_folder_params(repo, data, template=repo / "params.yaml", epochs=1, image_size=64,
                        workers=0, device="cpu")
    timed(repo, env, "dvc", "remote", "modify", "s3", "endpointurl", server.endpoint)
    timed(repo, env, "dvc", "remote", "modify", "s3", "url", "s3://imgclf/bench")
    timed(repo, env, "dvc", "remote", "default", "s3")
    timed(repo, env, "dvc", "remote", "modify", "local", "url", str(workdir / "dir-remote"))
    figures: dict[str, object] = {"build": timed(repo, env, "dvc", "repro")[0]}
    timed(repo, env, "git", "add", "-A")
    timed(repo, env, "git", "commit", "-q", "-m", "benchmark data and model")
    figures["files"], figures["bytes"] = cache_size(repo)
    figures["images"] = sum(1 for _ in (repo / "data/clean").glob("*/*.jpg"))
    figures["push"] = timed(repo, env, "dvc", "push", *jobs)[0]
    figures["repush"] = timed(repo, env, "dvc", "push", *jobs)[0]
    figures["push_dir"] = timed(repo, env, "dvc", "push", "-r", "local", *jobs)[0]

    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    clone_env = environment(clone, server.env())
    figures["pull"] = timed(clone, clone_env, "dvc", "pull", *jobs)[0]
    figures["repro_noop"], repro = timed(clone, clone_env, "dvc", "repro")
    if "Running stage" in repro:
        raise SystemExit(f"a no-op dvc repro ran stages after the pull:\n{repro[-3000:]}")
    figures["status"], status = timed(clone, clone_env, "dvc", "status")
    if "up to date" not in status:
        raise SystemExit(f"dvc status is not clean after the pull:\n{status[-3000:]}")
    figures["link"] = "hard links" if next((clone / "data/clean").glob("*/*.jpg")).stat(
        ).st_nlink > 1 else "copies"
    return figures


def report(args: argparse.Namespace, figures: dict) -> None:
    megabytes = figures["bytes"] / 1e6
    print(f"data: {args.data} ({figures['images']} images after clean) | cores: {os.cpu_count()}"
          f" | dvc jobs: {args.jobs or 'default'} | workspace files: {figures['link']}")
    print(f"pushed: {figures['files']} files, {megabytes:.1f} MB "
          f"(data/raw, data/clean, data/split, model, plots)")
    print(f"{'dvc repro (build, 1 short epoch)':<36} {figures['build']:8.1f} s")
    for key, label in (("push", "first push to S3"), ("repush", "no-op re-push to S3"),
                       ("push_dir", "first push to a local directory"),
                       ("pull", "pull into a fresh clone from S3")):
        seconds = figures[key]
        rate = "" if key == "repush" else f"  {megabytes / seconds:7.1f} MB/s" \
            f"  {figures['files'] / seconds:7.0f} files/s"
        print(f"{label:<36} {seconds:8.1f} s{rate}")
    print(f"{'no-op dvc repro after the pull':<36} {figures['repro_noop']:8.1f} s")
    print(f"{'dvc status after the pull':<36} {figures['status']:8.1f} s")
    print(f"ratio first push S3 / local directory: {figures['push'] / figures['push_dir']:.2f}")


if __name__ == "__main__":
    main()

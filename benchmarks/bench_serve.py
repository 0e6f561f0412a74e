"""Using the model: batch prediction with PyTorch against ONNX Runtime, and the HTTP service
under a fixed concurrent load, with micro-batching on and off.

1. Batch prediction (`imgclf.serving.predict.classify`, the code behind `predict --out`): images per
   second over the same photos with the checkpoint and with its ONNX export (exported here),
   at each of `--batch-sizes`, with the same decoding workers and threads; the ratio comes from
   this one run. The model alone (preprocessed batches, no decoding) is timed too, to tell the
   two costs apart.
2. The service (`python -m imgclf serve` as a separate process): `--clients` threads, each with
   a keep-alive connection, send `--requests` single-image POST /predict in all; per-request
   latency p50/p99 and requests per second, for each backend and each of `--max-batches` (the
   service's `--max-batch`; 1 turns micro-batching off). The clients run on the same machine
   and take CPU from the server: on 2 cores the figures are a floor.

Speed does not depend on the weights' values: without --model it builds an untrained network
(`--arch`, `--image-size`). Usage:
  python benchmarks/bench_serve.py [--model models/model.pt] [--images N] [--threads 1]
                                   [--batch-sizes 1 8 32] [--max-batches 1 4 32] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch

from imgclf.modelcard import ModelCard
from imgclf.serving.loaders import Classifier, load_classifier
from imgclf.serving.predict import classify
from imgclf.stages.export import onnx_model_bytes
from imgclf.training.checkpoint import save_checkpoint
from imgclf.training.models import build_model
from imgclf.training.transforms import Preprocessing

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWERS = REPO_ROOT.parent / "shared/datasets/flowers-mini"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a checkpoint (default: an untrained --arch)")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--images", type=int, default=200, help="photos for batch prediction")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--threads", type=int, default=1, help="model threads")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-batches", type=int, nargs="+", default=[1, 4, 32],
                        help="the service's --max-batch values to compare")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny: 64 px, 8 photos, 2 clients x 16 requests, one server")
    args = parser.parse_args()
    if args.smoke:
        args.image_size, args.images, args.clients, args.requests = 64, 8, 2, 16
        args.batch_sizes, args.max_batches = [4], [4]
    return args


def prepare_models(args: argparse.Namespace, folder: Path) -> tuple[Path, Path]:
    """The checkpoint (given, or an untrained one) and its ONNX export, in `folder`."""
    checkpoint = args.model
    if checkpoint is None:
        checkpoint = folder / "model.pt"
        card = ModelCard(format_version=1, arch=args.arch, classes=["a", "b", "c", "d", "e"],
                         preprocessing=Preprocessing.for_size(args.image_size), epoch=0,
                         val_accuracy=0.0, train_params={})
        save_checkpoint(checkpoint, build_model(args.arch, 5).state_dict(), card)
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(onnx_model_bytes(load_classifier(checkpoint)))
    return checkpoint, onnx_path


def photos(data: Path, count: int) -> list[Path]:
    files = sorted(data.rglob("*.jpg"))
    return [files[i % len(files)] for i in range(count)]


def time_batch_prediction(classifier: Classifier, files: list[Path], batch_size: int,
                          workers: int) -> tuple[float, np.ndarray]:
    """Images per second through predict's DataLoader pipeline, and the top-1 classes."""
    entries = [(str(path), "") for path in files]
    start = time.perf_counter()
    outcomes = list(classify(classifier, entries, 1, batch_size, workers))
    seconds = time.perf_counter() - start
    assert all(ranking for _, ranking, _ in outcomes), "a benchmark photo failed to decode"
    return len(files) / seconds, np.array([ranking[0][0] for _, ranking, _ in outcomes])


def time_model_only(classifier: Classifier, batch_size: int, images: int) -> float:
    """Images per second of the model alone on preprocessed batches (about `images` in all)."""
    size = classifier.card.preprocessing.image_size
    batch = torch.randn(batch_size, 3, size, size)
    classifier.probabilities(batch)  # warm-up: first-call allocations
    repeats = max(2, images // batch_size)
    start = time.perf_counter()
    for _ in range(repeats):
        classifier.probabilities(batch)
    return repeats * batch_size / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, max_batch: int, args: argparse.Namespace, log: Path
                 ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "imgclf", "serve", "--model", str(model), "--port", str(port),
             "--max-batch", str(max_batch), "--threads", str(args.threads)],
            env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server stopped: {log.read_text()}")
        try:
            requests.get(f"{url}/health", timeout=2)
            return process, url
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the server did not start in 120 s") from None
            time.sleep(0.2)


def load_test(url: str, uploads: list[tuple[str, bytes]], args: argparse.Namespace) -> dict:
    """`args.requests` single-image requests from `args.clients` threads; latency and rate."""
    local, sessions = threading.local(), []

    def call(index: int) -> float:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        name, data = uploads[index % len(uploads)]
        start = time.perf_counter()
        response = local.session.post(f"{url}/predict", files=[("files", (name, data))],
                                      timeout=120)
        response.raise_for_status()
        return time.perf_counter() - start

    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(call, range(args.clients)))  # warm-up: one request per connection
        before = requests.get(f"{url}/health").json()
        start = time.perf_counter()
        latencies = np.array(list(pool.map(call, range(args.requests))))
        seconds = time.perf_counter() - start
    after = requests.get(f"{url}/health").json()
    for session in sessions:
        session.close()
    passes = after["forward_passes"] - before["forward_passes"]
    return {"p50_ms": 1000 * np.percentile(latencies, 50),
            "p99_ms": 1000 * np.percentile(latencies, 99),
            "requests_per_s": args.requests / seconds,
            "mean_batch": (after["images"] - before["images"]) / max(passes, 1)}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    files = photos(args.data, args.images)
    with tempfile.TemporaryDirectory(prefix="bench_serve.") as scratch:
        folder = Path(scratch)
        checkpoint, onnx_path = prepare_models(args, folder)
        backends = {"pytorch": checkpoint, "onnxruntime": onnx_path}
        classifiers = {name: load_classifier(path, args.threads) for name, path in backends.items()}
        info = classifiers["pytorch"].card
        print(f"model: {info.arch} at {info.preprocessing.image_size} px, {len(info.classes)} "
              f"classes ({checkpoint if args.model else 'untrained'}); {args.threads} model "
              f"thread(s), {args.workers} decoding worker(s), {len(files)} photos from "
              f"{args.data.name}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} at the start")

        print("\nbatch prediction (the predict --out pipeline), images/s:")
        print("  batch  backend       end to end  model only   ONNX Runtime / PyTorch")
        for batch_size in args.batch_sizes:
            rates, top1 = {}, {}
            for name, classifier in classifiers.items():
                rates[name], top1[name] = time_batch_prediction(classifier, files, batch_size,
                                                                args.workers)
                model_rate = time_model_only(classifier, batch_size, len(files))
                ratio = (f"{rates[name] / rates['pytorch']:.2f}x end to end"
                         if name == "onnxruntime" else "")
                print(f"  {batch_size:5d}  {name:12s} {rates[name]:10.1f} {model_rate:11.1f}   "
                      f"{ratio}")
            agreement = float((top1["pytorch"] == top1["onnxruntime"]).mean())
            print(f"         same top-1 on {agreement:.0%} of the photos")

        uploads = [(path.name, path.read_bytes()) for path in files[:16]]
        print(f"\nservice: {args.clients} clients, {args.requests} requests of one image each:")
        # The smoke run starts one server (each start imports torch: seconds).
        configurations = [("onnxruntime", args.max_batches[0])] if args.smoke else [
            (name, max_batch) for name in backends for max_batch in args.max_batches]
        for name, max_batch in configurations:
            process, url = start_server(backends[name], max_batch, args, folder / "server.log")
            try:
                result = load_test(url, uploads, args)
            finally:
                process.terminate()
                process.wait(timeout=30)
            print(f"  {name:12s} max-batch {max_batch:2d}: p50 {result['p50_ms']:6.1f} ms, "
                  f"p99 {result['p99_ms']:6.1f} ms, {result['requests_per_s']:6.1f} "
                  f"requests/s, mean batch {result['mean_batch']:.1f}")


if __name__ == "__main__":
    main()

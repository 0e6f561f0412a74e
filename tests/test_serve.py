"""`python -m imgclf serve`: a real server process on a free 127.0.0.1 port, driven over HTTP.

The server runs a tiny untrained model with small limits (1 MB bodies, 4 files, 1 megapixel),
so that each limit is reached with small files.
"""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import torch
from PIL import Image

from imgclf.core.images import decode_image
from imgclf.serving import app as serve
from imgclf.serving.loaders import load_classifier, top_k

from helpers.dvcrepo import environment
from helpers.tinymodel import CLASSES, bad_checkpoints, photos, write_checkpoint
from helpers.webfake import bomb_png, free_port

MAX_UPLOAD_BYTES = 1_000_000


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory):
    """The service as a user starts it (default host), in a folder that is not a repository."""
    port = free_port()
    folder = tmp_path_factory.mktemp("cwd")
    log = folder / "server.log"  # a file, not a pipe that nobody reads and that could fill up
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "imgclf", "serve", "--model", str(model_path), "--port",
             str(port), "--max-upload-bytes", str(MAX_UPLOAD_BYTES), "--max-files", "4",
             "--max-pixels", "1000000", "--threads", "1"],
            cwd=folder, env=environment(), stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, log.read_text()
            try:
                requests.get(f"{url}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start in 120 s"
                time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def pictures(flowers_mini: Path) -> list[Path]:
    return photos(flowers_mini, 4)


@pytest.fixture(scope="module")
def expected(model_path: Path, pictures: list[Path]) -> dict[str, list[tuple[str, float]]]:
    """Each picture's ranking computed in this process, alone: what the service must answer."""
    classifier = load_classifier(model_path)
    transform = classifier.card.preprocessing.eval_transform()
    return {path.name: top_k(classifier.probabilities(transform(decode_image(path))[None])[0],
                             CLASSES, len(CLASSES))
            for path in pictures}


def _post(url: str, files: list[tuple[str, bytes]], session=requests, **params):
    return session.post(f"{url}/predict", params=params, timeout=60,
                        files=[("files", (name, data)) for name, data in files])


def _assert_ranking(answer: dict, ranking: list[tuple[str, float]], k: int) -> None:
    assert [entry["name"] for entry in answer["classes"]] == [name for name, _ in ranking[:k]]
    assert [entry["probability"] for entry in answer["classes"]] == pytest.approx(
        [probability for _, probability in ranking[:k]], abs=1e-4)


def test_health_model_and_api_pages(server, model_path):
    url, process = server
    assert requests.get(f"{url}/health").json()["status"] == "ok"
    model = requests.get(f"{url}/model").json()
    assert model["classes"] == CLASSES and model["arch"] == "simple_cnn"
    assert (model["format"], model["val_accuracy"], model["epoch"]) == ("pytorch", 0.5, 1)
    assert model["preprocessing"]["image_size"] == 64
    assert model["training_commit"] is None and model["test_metrics"] is None  # no repository
    assert "/predict" in requests.get(f"{url}/openapi.json").json()["paths"]
    assert "swagger" in requests.get(f"{url}/docs").text.lower()
    # Bound to the loopback address only, as no option asked for another.
    listening = {c.laddr.ip for c in psutil.Process(process.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}


def test_one_image(server, pictures, expected):
    url, _ = server
    response = _post(url, [(pictures[0].name, pictures[0].read_bytes())])
    assert response.status_code == 200, response.text
    [answer] = response.json()["predictions"]
    assert answer["file"] == pictures[0].name
    _assert_ranking(answer, expected[pictures[0].name], len(CLASSES))  # top_k 5 capped at 4
    assert sum(entry["probability"] for entry in answer["classes"]) == pytest.approx(1, abs=1e-4)


def test_several_images_in_one_request_keep_their_order(server, pictures, expected):
    url, _ = server
    sent = list(reversed(pictures))
    response = _post(url, [(path.name, path.read_bytes()) for path in sent], top_k=2)
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert [answer["file"] for answer in answers] == [path.name for path in sent]
    for answer in answers:
        _assert_ranking(answer, expected[answer["file"]], 2)


def test_oversized_uploads_are_refused_with_413(server):
    url, _ = server
    big = bytes(MAX_UPLOAD_BYTES + 100_000)
    response = _post(url, [("big.jpg", big)])
    assert response.status_code == 413
    assert response.json()["detail"].startswith(
        f"request body: at most {MAX_UPLOAD_BYTES} bytes (got ")

    # Without Content-Length (chunked): refused once the streamed body passes the limit.
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\n"
        for _ in range(12):
            yield bytes(100_000)
        yield b"\r\n--b--\r\n"
    response = requests.post(f"{url}/predict", data=chunks(), timeout=60,
                             headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert "stopped at" in response.json()["detail"]

    # A declared size over the limit is answered before a byte of the body is sent.
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as raw:
        raw.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/"
                    b"form-data; boundary=b\r\nContent-Length: 5000000000\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")


def test_too_many_files_are_refused(server, pictures):
    url, _ = server
    response = _post(url, [(f"{i}.jpg", pictures[0].read_bytes()) for i in range(5)])
    assert response.status_code == 413
    assert response.json()["detail"] == "files: at most 4 images per request (got 5)"


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "green").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "make", "reason"), [
    ("notes.txt", lambda photo: b"a shopping list, not a photo", "not an image file"),
    ("empty.jpg", lambda photo: b"", "not an image file"),
    ("cut.jpg", lambda photo: photo[:2000], "truncated"),
    ("big.png", lambda photo: _png((1001, 1000)), "too many pixels: 1001x1000 > 1000000"),
    ("bomb.png", lambda photo: bomb_png(), "too many pixels: 8000x8000"),
])
def test_what_is_not_a_usable_image_gets_422_and_the_reason(server, pictures, name, make,
                                                            reason):
    url, _ = server
    photo = pictures[0].read_bytes()
    response = _post(url, [(pictures[0].name, photo), (name, make(photo))])
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith(f"{name}: ") and reason in detail, detail


def test_no_file_is_a_clear_422(server):
    url, _ = server
    response = requests.post(f"{url}/predict", timeout=30)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "files"]


def test_a_burst_of_concurrent_requests_is_answered_correctly(server, pictures, expected):
    """200 requests from 8 client threads, each with its own keep-alive connection."""
    url, _ = server
    before = requests.get(f"{url}/health").json()
    uploads = [(path.name, path.read_bytes()) for path in pictures]
    local, sessions = threading.local(), []

    def call(index: int) -> tuple[str, int, dict]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        name, data = uploads[index % len(uploads)]
        response = _post(url, [(name, data)], session=local.session, top_k=1)
        return name, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(200)))
    for session in sessions:
        session.close()

    assert [status for _, status, _ in results] == [200] * 200, results[:3]
    for name, _, body in results:
        [answer] = body["predictions"]
        assert answer["file"] == name
        _assert_ranking(answer, expected[name], 1)
    after = requests.get(f"{url}/health").json()
    assert after["images"] - before["images"] == 200
    # A pass takes at most max_batch images (the server's default): never fewer passes than that.
    assert after["forward_passes"] - before["forward_passes"] >= 200 / serve.Limits().max_batch


class _Recorder:
    """A classifier that records the size of each forward pass."""

    def __init__(self) -> None:
        self.passes: list[int] = []

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        self.passes.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :2].numpy()


def test_requests_waiting_together_share_a_forward_pass():
    async def scenario(max_batch: int) -> tuple[list[int], list[np.ndarray]]:
        recorder = _Recorder()
        batcher = serve.Batcher(recorder, max_batch=max_batch)
        # Five requests (1, 2, 1, 1, 3 images) are queued before the loop takes any.
        requests_ = [torch.full((n, 3, 2, 2), float(i)) for i, n in enumerate((1, 2, 1, 1, 3))]
        waiting = [asyncio.ensure_future(batcher.probabilities(r)) for r in requests_]
        await asyncio.sleep(0)
        loop = asyncio.create_task(batcher.run())
        answers = await asyncio.gather(*waiting)
        loop.cancel()
        batcher.close()
        for index, (request, answer) in enumerate(zip(requests_, answers)):
            assert answer.shape == (len(request), 2) and (answer == index).all()
        return recorder.passes

    assert asyncio.run(scenario(max_batch=32)) == [8]  # all at once
    assert asyncio.run(scenario(max_batch=3)) == [3, 2, 3]  # in order, at most 3 a pass
    assert asyncio.run(scenario(max_batch=1)) == [1, 2, 1, 1, 3]  # batching off


@pytest.mark.parametrize("case", ["unknown arch", "class count", "no classes",
                                  "bad preprocessing"])
def test_the_service_refuses_to_start_on_an_unusable_checkpoint(case, tmp_path, capsys):
    path, message = bad_checkpoints(tmp_path)[case]
    assert serve.main(["--model", str(path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imgclf serve: error: ") and len(err.splitlines()) == 1


def test_loopback_addresses_are_told_apart_from_others():
    assert all(map(serve.is_loopback, ["127.0.0.1", "127.3.4.5", "::1", "localhost"]))
    assert not any(map(serve.is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.org"]))

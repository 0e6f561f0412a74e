"""`python -m imgclf serve [--model models/model.pt] [--host 127.0.0.1] [--port 8000] ...`

The trained model over HTTP (FastAPI on uvicorn: typed endpoints, request validation and the
OpenAPI page come with it; a standard-library server would need all three written by hand):

- `POST /predict`: one or more images as multipart fields named `files`; JSON with the top-k
  classes of each, in the order sent. `?top_k=3` chooses k.
- `GET /health`, `GET /model` (classes, architecture, preprocessing, training commit, validation
  and test accuracy), `GET /docs` (the OpenAPI page) and `/openapi.json`.

One process holds one model. The event loop reads uploads; images are decoded in a few threads
(`--decode-workers`: large images need memory while they are decoded, so this bounds it); one
inference thread runs the model. Requests that queue up while it is busy go through the next
forward pass together (micro-batching, up to `--max-batch` images): a lone request waits for
nobody, and under load the passes grow. docs/serving.md has the measurements.

Limits: the request body (`--max-upload-bytes`, checked on Content-Length before anything is
read, and again while a body without one streams in), images per request (`--max-files`),
pixels per image (`--max-pixels`: decompression bombs), open connections
(`--max-connections`, beyond which uvicorn answers 503). What is not a usable image is refused
with 422 and the reason. It binds 127.0.0.1 unless told otherwise, and has no authentication:
see docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

import anyio
import numpy as np
import torch
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgclf.core.errors import ImgclfError
from imgclf.core.images import ImageError, decode_image
from imgclf.core.paths import MODEL_PATH
from imgclf.modelcard import ModelCard
from imgclf.serving import provenance
from imgclf.serving.loaders import Classifier, load_classifier, top_k
from imgclf.serving.predict import positive_int


@dataclasses.dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 16 * 2**20
    max_files: int = 32
    max_pixels: int = 40_000_000  # a 48-megapixel phone photo is refused; 40 MP ~ 120 MB RGB
    decode_workers: int = 2
    # On CPU, passes of 32 images were slower per image than passes of 1 to 8 for both
    # backends in every run (docs/serving.md): a small cap keeps activations in cache.
    max_batch: int = 4


# ---- Responses (also the OpenAPI schema) -------------------------------------------------------


class ClassProbability(BaseModel):
    name: str
    probability: float


class Prediction(BaseModel):
    file: str  # the upload's file name, as sent
    classes: list[ClassProbability]  # most likely first


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class Health(BaseModel):
    status: str
    forward_passes: int  # how many times the model ran ...
    images: int  # ... on how many images: images / forward_passes is the mean batch


class ModelDescription(ModelCard):
    """GET /model: the model card, and where the model came from."""
    file: str
    format: str  # pytorch or onnx
    checkpoint_md5: str  # of the train stage's checkpoint (for an ONNX file: the one exported)
    training_commit: str | None  # None: no commit's dvc.lock records this checkpoint
    test_metrics: dict[str, Any] | None  # None: metrics/evaluate.json is not this model's


# ---- Micro-batching -----------------------------------------------------------------------------


class Batcher:
    """Runs the model in one thread; requests waiting while it runs share the next pass."""

    def __init__(self, classifier: Classifier, max_batch: int) -> None:
        self.classifier = classifier
        self.max_batch = max_batch
        self.forward_passes = 0
        self.images = 0
        self._queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def probabilities(self, images: torch.Tensor) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((images, future))
        return await future

    async def run(self) -> None:
        """The batching loop, until cancelled: each pass takes the requests waiting, in order,
        while their images fit in max_batch (a larger request goes alone)."""
        held: tuple[torch.Tensor, asyncio.Future] | None = None
        while True:
            jobs = [held or await self._queue.get()]
            held, size = None, len(jobs[0][0])
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if size + len(job[0]) > self.max_batch:
                    held = job  # first in the next pass
                    break
                jobs.append(job)
                size += len(job[0])
            await self._run_pass(jobs)

    async def _run_pass(self, jobs: list[tuple[torch.Tensor, asyncio.Future]]) -> None:
        batch = torch.cat([images for images, _ in jobs])
        try:
            probabilities = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.classifier.probabilities, batch)
        except Exception as error:  # the model failed: every waiting request learns why
            for _, future in jobs:
                if not future.done():
                    future.set_exception(error)
            return
        self.forward_passes += 1
        self.images += len(batch)
        start = 0
        for images, future in jobs:
            if not future.done():  # a client that went away cancelled its future
                future.set_result(probabilities[start:start + len(images)])
            start += len(images)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---- Request size limit -------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413 before it fills memory
    or disk: at once when Content-Length says so (curl's `Expect: 100-continue` then never sends
    it), else as soon as the streamed body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, got: str) -> str:
        return f"request body: at most {self.max_bytes} bytes (got {got})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, {"detail": self._too_large(f"{declared} bytes")})
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._too_large(f"more, stopped at {received} bytes"))
            return message

        await self.app(scope, counting_receive, send)


async def _send_json(send: Send, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    # No `Connection: close`: uvicorn then discards the rest of the body and the client reads
    # this answer (closing with unread data would reset the connection under its feet).
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---- The application ----------------------------------------------------------------------------


def describe_model(classifier: Classifier, path: Path) -> ModelDescription:
    return ModelDescription(
        **dict(classifier.card), file=str(path), format=classifier.format,
        checkpoint_md5=classifier.checkpoint_md5,
        training_commit=provenance.training_commit(classifier.checkpoint_md5),
        test_metrics=provenance.evaluation_metrics(classifier.checkpoint_md5))


def create_app(classifier: Classifier, description: ModelDescription, limits: Limits) -> FastAPI:
    transform = classifier.card.preprocessing.eval_transform()
    classes = classifier.card.classes
    decoders = anyio.CapacityLimiter(limits.decode_workers)
    batcher: Batcher | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal batcher
        batcher = Batcher(classifier, limits.max_batch)  # its queue needs the running loop
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.close()

    app = FastAPI(title="imgclf", lifespan=lifespan,
                  description=f"Image classifier: {description.arch}, {len(classes)} classes.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)

    def prepare(data: bytes, name: str) -> torch.Tensor:
        try:
            return transform(decode_image(data, max_pixels=limits.max_pixels))
        except ImageError as error:  # its message says what is wrong and what is allowed
            raise HTTPException(422, f"{name}: {error}") from None
        except MemoryError:
            raise HTTPException(422, f"{name}: out of memory while decoding") from None

    @app.post("/predict", response_model=PredictResponse, responses={
        413: {"description": "request body or number of files over the limit"},
        422: {"description": "a file that is not a usable image (the detail says why)"}})
    async def predict(
            files: Annotated[list[UploadFile], File(description="one or more images")],
            top_k_: Annotated[int, Query(alias="top_k", ge=1, description="classes per image "
                                         "(at most the number of classes)")] = 5,
    ) -> PredictResponse:
        if len(files) > limits.max_files:
            raise HTTPException(413, f"files: at most {limits.max_files} images per request "
                                     f"(got {len(files)})")
        names = [upload.filename or f"files[{index}]" for index, upload in enumerate(files)]
        contents = [await upload.read() for upload in files]
        tensors = [await anyio.to_thread.run_sync(prepare, data, name, limiter=decoders)
                   for data, name in zip(contents, names)]
        probabilities = await batcher.probabilities(torch.stack(tensors))
        k = min(top_k_, len(classes))
        return PredictResponse(predictions=[
            Prediction(file=name, classes=[ClassProbability(name=label, probability=value)
                                           for label, value in top_k(row, classes, k)])
            for name, row in zip(names, probabilities)])

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", forward_passes=batcher.forward_passes, images=batcher.images)

    @app.get("/model", response_model=ModelDescription)
    async def model() -> ModelDescription:
        return description

    return app


# ---- Command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="python -m imgclf serve",
                                     description="Serve the model over HTTP.")
    parser.add_argument("--model", type=Path, default=MODEL_PATH,
                        help=f"a train-stage checkpoint or an .onnx export (default: {MODEL_PATH})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="(default: 8000)")
    parser.add_argument("--max-upload-bytes", type=positive_int,
                        default=defaults.max_upload_bytes,
                        help=f"largest request body (default: {defaults.max_upload_bytes})")
    parser.add_argument("--max-files", type=positive_int, default=defaults.max_files,
                        help=f"images per request (default: {defaults.max_files})")
    parser.add_argument("--max-pixels", type=positive_int, default=defaults.max_pixels,
                        help=f"pixels per image (default: {defaults.max_pixels})")
    parser.add_argument("--max-batch", type=positive_int, default=defaults.max_batch,
                        help="images per forward pass when requests queue up; 1 turns "
                             f"micro-batching off (default: {defaults.max_batch})")
    parser.add_argument("--decode-workers", type=positive_int, default=defaults.decode_workers,
                        help=f"threads decoding images (default: {defaults.decode_workers})")
    parser.add_argument("--max-connections", type=positive_int, default=64,
                        help="open connections; more get 503 (default: 64)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for the model (default: torch's, all cores)")
    return parser


def main(argv: list[str]) -> int:
    import uvicorn

    args = _parser().parse_args(argv)
    limits = Limits(max_upload_bytes=args.max_upload_bytes, max_files=args.max_files,
                    max_pixels=args.max_pixels, decode_workers=args.decode_workers,
                    max_batch=args.max_batch)
    try:
        classifier = load_classifier(args.model, args.threads)
    except ImgclfError as error:
        print(f"imgclf serve: error: {error}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(f"imgclf serve: warning: --host {args.host} lets other machines call this "
              "service, which has no authentication and no TLS (see docs/security.md)",
              file=sys.stderr)
    app = create_app(classifier, describe_model(classifier, args.model), limits)
    print(f"imgclf serve: {args.model} ({classifier.card.arch}, "
          f"{len(classifier.card.classes)} classes) on http://{args.host}:{args.port} "
          f"(API documentation at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=args.max_connections,
                timeout_keep_alive=5, log_level="warning")
    return 0


def is_loopback(host: str) -> bool:
    """Whether a listening address reaches this machine only (the review page uses it too)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

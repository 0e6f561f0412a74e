"""`python -m imgclf review [--port 8001]`: decide about the audit's suspects in a browser.

It reads data/audit/suspects.csv (the audit stage's ranking) and data/clean/classes.csv, serves a
page on 127.0.0.1 (static/: HTML, script and style, no third-party code), and writes each
decision to data/curation.csv at once. Then `dvc repro` rebuilds the split with them.

Every request is treated as hostile, even on this machine, since any web page the reviewer
visits can send requests to 127.0.0.1:
- only the Host names 127.0.0.1:PORT and localhost:PORT are answered, so that a page whose own
  domain resolves to 127.0.0.1 (DNS rebinding) cannot read the page and its token;
- a change needs the session's token (a random value in the page, new at each start) in the
  X-Review-Token header, and a browser's Origin, when it sends one, must be this page's: another
  site's form or script can neither read the token nor send the header without a CORS
  permission that is never given;
- a picture is served only by its content id, looked up in suspects.csv: no part of a request
  becomes a path;
- responses forbid framing (clickjacking), embedding by other sites and any script or style
  that is not the page's own (Content-Security-Policy).
"""

from __future__ import annotations

import argparse
import hmac
import html
import secrets
import sys
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgclf.core.classes import read_class_list
from imgclf.core.errors import ImgclfError
from imgclf.core.paths import CLEAN_CLASSES, CLEAN_DIR, SUSPECTS
from imgclf.curation.decisions import CURATION_FILE, Decision
from imgclf.curation.suspects import Suspect
from imgclf.review.session import Change, NothingToUndo, ReviewSession, UnknownImage
from imgclf.review.suspects import read_suspects
from imgclf.serving.app import is_loopback

STATIC = Path(__file__).with_name("static")
ASSETS = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
TOKEN_HEADER = "x-review-token"
DEFAULT_PORT = 8001  # beside `imgclf serve`'s 8000, so that both can run
# A batch of decisions is a few kilobytes; this bounds what a request can make the server hold.
MAX_BODY_BYTES = 1 << 20
SAFE_METHODS = frozenset({"GET", "HEAD"})
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"referrer-policy", b"no-referrer"),
]


# ---- Requests -----------------------------------------------------------------------------------


class ChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    image: str = Field(max_length=20)
    decision: Literal["reject", "relabel", "keep"] | None  # null removes the decision
    target: str = Field("", alias="class", max_length=255)
    note: str = Field("", max_length=200)

    @field_validator("note")
    @classmethod
    def one_line(cls, note: str) -> str:
        if any(ord(char) < 32 or ord(char) == 127 for char in note):
            raise ValueError("a note is one line of text, without control characters")
        return note


class ChangesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    changes: list[ChangeIn] = Field(min_length=1, max_length=10_000)


# ---- The guard in front of every request --------------------------------------------------------


class Guard:
    """ASGI middleware: answer only this page's Host names; a change needs the token, this
    page's Origin (when the browser sends one) and a body of known, bounded size; every
    response carries SECURITY_HEADERS."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str], token: str) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = frozenset(f"http://{host}" for host in hosts)
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal:
            await JSONResponse({"detail": refusal[1]}, refusal[0])(scope, receive, _secured(send))
            return
        await self.app(scope, receive, _secured(send))

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, reason) for a request that must not reach the application."""
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"]}
        host = headers.get("host", "")
        if host not in self.hosts:
            return 421, (f"Host {host!r} is not this page's; open it as one of "
                         f"{', '.join(sorted(self.hosts))}")
        if scope["method"] in SAFE_METHODS:
            return None
        if not hmac.compare_digest(headers.get(TOKEN_HEADER, "").encode(), self.token):
            return 403, ("a change needs this session's token in the X-Review-Token header; "
                         "reload the page (the token is new each time the review starts)")
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return 403, f"Origin {origin!r} is not this page's"
        length = headers.get("content-length", "")
        if not length.isdigit():
            return 411, "a change needs a Content-Length"
        if int(length) > MAX_BODY_BYTES:
            return 413, f"request body: at most {MAX_BODY_BYTES} bytes (got {length})"
        return None


def _secured(send: Send) -> Send:
    async def with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
        await send(message)
    return with_headers


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host headers this page answers: the loopback names, and the address it listens on."""
    bound = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    return frozenset(f"{name}:{port}" for name in ("127.0.0.1", "localhost", bound))


# ---- The application ----------------------------------------------------------------------------


def create_app(session: ReviewSession, token: str, hosts: frozenset[str]) -> FastAPI:
    # No OpenAPI pages: they would load scripts from a CDN that the page's policy refuses.
    app = FastAPI(title="imgclf review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, hosts=hosts, token=token)
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace(
        "{{token}}", html.escape(token))

    @app.exception_handler(ImgclfError)
    async def refused(request: Request, error: ImgclfError) -> JSONResponse:
        status = 404 if isinstance(error, UnknownImage) else (
            409 if isinstance(error, NothingToUndo) else 422)
        return JSONResponse({"detail": str(error)}, status)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    @app.get("/assets/{name}")
    def asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, "no such file")
        return Response((STATIC / name).read_bytes(), media_type=ASSETS[name],
                        headers={"cache-control": "no-store"})

    @app.get("/images/{image}")
    def image(image: str) -> FileResponse:
        path = CLEAN_DIR / session.suspect(image).file
        if not path.is_file():
            raise HTTPException(404, f"{path} is missing: run `dvc pull` or `dvc repro clean`, "
                                     "then `dvc repro audit`")
        # A content id names these bytes for good, so the browser may keep them.
        return FileResponse(path, media_type="image/jpeg",
                            headers={"cache-control": "private, max-age=86400"})

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return {"classes": session.classes, "suspects": [_suspect(s) for s in session.suspects],
                **_decisions(session)}

    @app.post("/api/decisions")
    def decide(body: ChangesIn) -> dict[str, Any]:
        session.apply([Change(c.image, c.decision, c.target, c.note) for c in body.changes])
        return _decisions(session)

    @app.post("/api/undo")
    def undo() -> dict[str, Any]:
        session.undo()
        return _decisions(session)

    return app


def _suspect(suspect: Suspect) -> dict[str, Any]:
    return {"image": suspect.image, "file": suspect.file, "class": suspect.cls,
            "suggested": suspect.suggested, "issue": suspect.issue, "score": suspect.score,
            "cluster": suspect.cluster}


def _decision(decision: Decision) -> dict[str, str]:
    return {"decision": decision.decision, "class": decision.target, "note": decision.note}


def _decisions(session: ReviewSession) -> dict[str, Any]:
    """The decisions about the suspects' pictures, and how many the file holds in all."""
    decisions = session.decisions()
    known = {suspect.image for suspect in session.suspects}
    return {"decisions": {image: _decision(d) for image, d in decisions.items() if image in known},
            "total": len(decisions), "file": str(session.decisions_file),
            "can_undo": session.can_undo}


# ---- Command line -------------------------------------------------------------------------------


def open_session() -> ReviewSession:
    """The suspects, the classes and the decisions of the repository in the working directory."""
    classes = [spec.name for spec in read_class_list(CLEAN_CLASSES)]
    return ReviewSession(read_suspects(SUSPECTS, classes), classes, CURATION_FILE)


def _port(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port from 1 to 65535 (got {text!r})")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imgclf review",
        description="Review the audit's suspects in a browser; decisions go to "
                    f"{CURATION_FILE}. Run it in the repository, after `dvc repro audit`.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="a loopback address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"(default: {DEFAULT_PORT})")
    return parser


def main(argv: list[str]) -> int:
    import uvicorn

    args = _parser().parse_args(argv)
    if not is_loopback(args.host):
        # The page writes into the repository and its guard answers loopback names only.
        print(f"imgclf review: error: --host {args.host}: only a loopback address (127.0.0.1, "
              "::1, localhost); to review from another machine, forward the port: "
              f"ssh -L {args.port}:127.0.0.1:{args.port} THIS_MACHINE", file=sys.stderr)
        return 2
    try:
        session = open_session()
    except ImgclfError as error:
        print(f"imgclf review: error: {error}", file=sys.stderr)
        return 2
    app = create_app(session, secrets.token_urlsafe(32), allowed_hosts(args.host, args.port))
    flagged = sum(suspect.issue != "ok" for suspect in session.suspects)
    print(f"imgclf review: {len(session.suspects)} pictures, {flagged} suspects, "
          f"{len(session.classes)} classes: open http://127.0.0.1:{args.port}/ (Ctrl+C to stop). "
          f"Decisions go to {CURATION_FILE}; then run `dvc repro`.", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, timeout_keep_alive=5, log_level="warning")
    return 0

"""`medsyn vtt serve`: the raters' web page and its JSON API over one study folder.

Every URL carries a secret token. A rater's token reaches only that rater's own order of images and answers;
the admin token reaches the per-rater progress counts. Nothing a rater can load (page, script, JSON, image
bytes, headers) carries the answer key or where an image came from: the handlers never read those columns.

Endpoints (all responses ``Cache-Control: no-store``; a wrong or missing token is a fixed 403 and touches
nothing):

- ``GET /r/{token}``: the rater page, the same static HTML for every rater (the script reads the token from
  the address bar).
- ``GET /api/r/{token}/next``: the first unanswered image of the rater's order (marked as shown now), or done.
- ``GET /api/r/{token}/image/{id}``: the PNG of an image already handed out to that rater.
- ``POST /api/r/{token}/answer``: one answer for the rater's current image. Only the current image is
  accepted (no skipping ahead, no going back): 409 for an answered image or one not handed out yet.
- ``GET /admin/{token}``, ``GET /api/admin/{token}/progress``: answered/total per rater, no answers.

Handlers are plain ``def``: sqlite blocks, so FastAPI runs them in its thread pool, and `StudyStore` opens a
connection per call (WAL), which makes concurrent raters safe.
"""
from __future__ import annotations

import contextlib
import errno
import json
import socket
import sqlite3
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from medsyn.errors import ConfigError
from medsyn.vtt.store import Rater, StudyStore

CONFIDENCE_LEVELS = 5
MAX_ANSWER_BYTES = 4096  # an answer body is about 100 bytes; nothing larger is read into memory
STATIC_FILES = {  # the only files served without a token: identical for everyone, no study data in them
    "rater.js": "text/javascript; charset=utf-8",
    "rater.css": "text/css; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",  # tokens are in the URLs: never send them to another site
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",  # nothing of a study (pages, answers, images) belongs in a shared cache
}
# One fixed body for every refusal, so a refusal tells nothing about which part of the request was wrong.
INVALID_PAGE = (b'<!doctype html><html lang="en"><meta charset="utf-8"><title>Link not valid</title>'
                b"<p>This link is not valid.</p></html>")
INVALID_JSON = b'{"error":"this link is not valid"}'


class AnswerIn(BaseModel):
    """The answer body: strict types, so "true" or 1.0 is refused instead of being guessed at."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    image: StrictStr
    synthetic: StrictBool
    class_: Optional[StrictInt] = Field(None, alias="class")
    confidence: Optional[StrictInt] = Field(None, ge=1, le=CONFIDENCE_LEVELS)


class SecurityHeaders:
    """Pure ASGI middleware adding `SECURITY_HEADERS` to every response (errors included)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Refused(Exception):
    """A wrong token, or a request outside what the token reaches: answered with the fixed 403."""


def _static(name: str) -> bytes:
    return resources.files("medsyn.vtt").joinpath("static", name).read_bytes()


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@contextlib.asynccontextmanager
async def _keep_open(store: StudyStore):
    """Hold one idle connection to the database while the server runs.

    `StudyStore` opens a connection per call. When the last connection to a WAL database closes, SQLite
    checkpoints the log into the database and deletes it, which costs extra fsyncs on every request of a
    lone rater (next: 23 ms instead of 9 ms here). An idle connection keeps the log; SQLite still
    checkpoints it every 1000 pages, and a killed server loses nothing (the log is the durable part).
    """
    keeper = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    try:
        keeper.execute("SELECT COUNT(*) FROM meta").fetchone()  # maps the shared memory; holds no lock after
        yield
    finally:
        keeper.close()


def build_app(study_folder: str | Path) -> FastAPI:
    """The study's web app. Raises `DataError` when the folder is not a reader study."""
    store = StudyStore(study_folder)
    settings = store.settings()
    # Only these two settings ever leave the server; the rest (sources, generators) is provenance.
    classes: list[str] = [str(name) for name in settings.get("class_names", [])]
    ask_class = bool(settings.get("ask_class", False))
    # Writes queue here rather than in SQLite: a thread waiting for SQLite's write lock polls it with sleeps
    # of up to 100 ms, which made the slowest answers of 20 raters at once take most of a second.
    writes = threading.Lock()
    pages = {"rater": _static("rater.html"), "admin": _static("admin.html")}
    assets = {name: (_static(name), media) for name, media in STATIC_FILES.items()}

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None,  # no schema or docs pages to browse
                  lifespan=lambda app: _keep_open(store))
    app.state.store = store
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(Refused)
    def refused(request: Request, exc: Refused) -> Response:
        if request.url.path.startswith("/api/"):
            return Response(INVALID_JSON, status_code=403, media_type="application/json")
        return Response(INVALID_PAGE, status_code=403, media_type="text/html; charset=utf-8")

    @app.exception_handler(404)
    def not_found(request: Request, exc: Exception) -> Response:
        # An unknown address (e.g. /r/ without a token) is refused like a wrong token: without a token the
        # server has nothing to show, and the answer does not reveal which addresses exist.
        return refused(request, Refused())

    def rater_of(token: str) -> Rater:
        rater = store.rater_for(token)
        if rater is None:
            raise Refused()
        return rater

    def admin_of(token: str) -> None:
        if not store.is_admin(token):
            raise Refused()

    async def answer_body(request: Request) -> AnswerIn:
        # Read here, after the token check (dependencies run in order), so a request with a wrong token is
        # refused with 403 whatever its body; FastAPI's own body parsing would run before any dependency.
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise HTTPException(413, f"an answer is a small JSON object (at most {MAX_ANSWER_BYTES} bytes)")
        try:
            return AnswerIn.model_validate(json.loads(body))
        except (ValueError, ValidationError) as err:
            raise HTTPException(422, _describe_invalid(err)) from None

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json_error(exc.status_code, str(exc.detail))  # 422 of a bad answer body, 405 of a wrong method

    @app.get("/r/{token}")
    def rater_page(token: str) -> Response:
        rater_of(token)
        return Response(pages["rater"], media_type="text/html; charset=utf-8")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in assets:
            raise Refused()
        body, media = assets[name]
        return Response(body, media_type=media)

    @app.get("/api/r/{token}/next")
    def next_image(token: str) -> dict[str, Any]:
        rater = rater_of(token)
        with writes:
            shown = store.next_for(rater)
        if shown is None:
            return {"done": True, "total": store.answered_count(rater)}  # done: every image answered
        return {"image": shown.image_id, "number": shown.position + 1, "total": shown.total,
                "ask_class": ask_class, "classes": classes}

    @app.get("/api/r/{token}/image/{image_id}")
    def image(token: str, image_id: str) -> Response:
        rater = rater_of(token)
        state = store.handed_out(rater, image_id)
        if state is None or not state[0]:  # not this rater's image, or not handed out yet: no prefetching
            raise Refused()
        return Response(store.image_file(image_id).read_bytes(), media_type="image/png")

    @app.post("/api/r/{token}/answer")
    def answer(rater: Rater = Depends(rater_of), body: AnswerIn = Depends(answer_body)) -> Response:
        if ask_class and body.class_ is None:
            return _json_error(422, f"class is required: an index from 0 to {len(classes) - 1}")
        if not ask_class and body.class_ is not None:
            return _json_error(422, "this study does not ask the class: send class null")
        if body.class_ is not None and not 0 <= body.class_ < len(classes):
            return _json_error(422, f"class must be an index from 0 to {len(classes) - 1}")
        state = store.handed_out(rater, body.image)
        if state is None:
            raise Refused()
        if state[1]:
            return _json_error(409, "already answered; answers cannot be changed")
        if not state[0]:
            return _json_error(409, "not the current image; ask /next for it")
        with writes:
            saved = store.record_answer(rater, body.image, body.synthetic, body.class_, body.confidence)
        if not saved:
            return _json_error(409, "already answered; answers cannot be changed")  # a concurrent duplicate
        return JSONResponse({"saved": True})

    @app.get("/admin/{token}")
    def admin_page(token: str) -> Response:
        admin_of(token)
        return Response(pages["admin"], media_type="text/html; charset=utf-8")

    @app.get("/api/admin/{token}/progress")
    def progress(token: str) -> dict[str, Any]:
        admin_of(token)
        return {"raters": store.progress()}

    return app


def _describe_invalid(err: Exception) -> str:
    """One line naming the first bad field, for the 422 body."""
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return f"{where}: {first['msg']}"
    return "the body must be a JSON object"


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, or a one-line error (port in use, no such address)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise ConfigError(f"--host {host}: not an address of this machine") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop may rebind
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use (another server?); choose another with --port") from None
        if err.errno == errno.EACCES:
            raise ConfigError(f"port {port} needs administrator rights; choose one above 1023 with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    return sock


def serve_study(study: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the study until Ctrl-C or SIGTERM. Raises `DataError` or `ConfigError` (one line) before listening."""
    import uvicorn

    from medsyn.ui import console

    app = build_app(study)
    store: StudyStore = app.state.store
    sock = _bind(host, port)
    port = sock.getsockname()[1]  # --port 0 picks a free port: print the one taken
    shown_host = f"[{host}]" if ":" in host else host
    base = f"http://{shown_host}:{port}"
    raters = store.progress()
    answered = sum(r["answered"] for r in raters)
    counts = (f"{len(raters)} rater{'' if len(raters) == 1 else 's'} invited, "
              f"{answered} answer{'' if answered == 1 else 's'} so far")
    console.print(f"serving reader study {study} at {base} ({counts}); Ctrl-C stops it", highlight=False,
                  soft_wrap=True)
    invite = f"medsyn vtt invite {study} --raters NAME --base-url {base}"
    console.print(f"rater links ({base}/r/TOKEN) and the admin's progress link are printed once, by `medsyn vtt "
                  f"invite`" + (f"; to add raters: {invite}" if raters else f"; invite raters with: {invite}"),
                  highlight=False, soft_wrap=True)
    # No access log: every request line holds a rater's secret token.
    config = uvicorn.Config(app, access_log=False, log_level="warning", server_header=False,
                            timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the captured Ctrl-C or SIGTERM
        pass
    finally:
        sock.close()
    console.print(f"stopped; every answer acknowledged to a rater is saved in {store.path}",
                  highlight=False, soft_wrap=True)

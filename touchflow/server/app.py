"""The web application: one FastAPI app built from an engine and settings (kept in ``app.state``, no globals).

Routers per concern: ``webhooks`` (providers and mail clients, their own authentication),
``auth`` (login, logout), ``console`` (the pages), ``api`` (``/api/v1``, its schema at
``/openapi.json``, described at ``/docs`` without any CDN), static files of the console.

What every route shares lives here: the request-size limit (refused while the body streams in,
before a handler sees it) and the background sealing of the chains the server writes (consents,
the access log), every few seconds and once more when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine

from crm.ledger.audit import seal
from touchflow.server import api, auth, console, inbound, tracking, webhooks
from touchflow.server.console.view import HERE, render
from touchflow.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
SEAL_EVERY = 5.0
SEALED_HERE = ("consents", "access_log")


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413, by its Content-Length or while it streams.

    ``larger`` gives some paths their own limit (an inbound email carrying its raw MIME).
    """

    def __init__(self, app, limit: int = MAX_BODY, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.larger = larger or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.larger.get(scope.get("path", ""), self.default)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(send, limit)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = f"request body over {limit} bytes".encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _seal_quietly(engine: Engine) -> None:
    try:
        seal(engine, tables=SEALED_HERE)
    except Exception:  # the next round retries; a request never fails for a seal
        log.exception("sealing %s failed", ", ".join(SEALED_HERE))


def create_app(engine: Engine, settings: Settings, *, seal_every: float = SEAL_EVERY) -> FastAPI:
    """The app with the webhook routes; the chains it writes are sealed every ``seal_every`` seconds and at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def sealing() -> None:
            while True:
                await asyncio.sleep(seal_every)
                await asyncio.to_thread(_seal_quietly, engine)

        task = asyncio.create_task(sealing())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(_seal_quietly, engine)
            await hooks.close_bot()

    app = FastAPI(title="touchflow API", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.engine, app.state.settings = engine, settings
    hooks = webhooks.router(engine, settings)
    app.include_router(hooks)
    app.include_router(inbound.router(engine, settings))
    app.include_router(tracking.router(engine, settings))
    app.include_router(auth.router(engine, settings))
    app.include_router(console.router(engine, settings))
    app.include_router(api.router(engine, settings))

    @app.get("/docs", include_in_schema=False)
    def api_docs(request: Request) -> Response:
        return render(request, "api_docs.html", auth.current(request), schema=app.openapi())

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_exception_handler(auth.LoginRequired, auth.login_redirect)
    app.add_exception_handler(HTTPException, _error_page)
    app.add_middleware(BodyLimit, limit=MAX_BODY, larger={"/inbound/email": inbound.MAX_EMAIL_BODY})
    return app


async def _error_page(request: Request, exc: HTTPException) -> Response:
    """Errors as JSON for the API and for webhooks' callers, as a page for the console."""
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    viewer = auth.current(request)
    return render(request, "error.html", viewer, status=exc.status_code, message=exc.detail,
                  status_code=exc.status_code)

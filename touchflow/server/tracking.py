"""Opens and clicks: the email's pixel and its tracked links (``channels.tracking`` makes them).

    GET /t/o/{token}.gif   records an open; always the 1×1 GIF, never cached (a bad token records nothing)
    GET /t/c/{token}       records a click, then 302 to the link's target; a bad token gets 400 / 403 and no redirect

No login, like the webhooks: a mail client holds no session. The token is the authentication: it
is signed (HMAC), so only links touchflow wrote lead anywhere, and only where the message itself
linked (the target is inside the signed token: no open redirect). The redirect happens even when
recording fails (the database busy): the person gets to the page; the click is then lost.
"""

from __future__ import annotations

import base64
import html
import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from channels.tracking import ForgedToken, TrackingTokenError, tracker_for
from crm.keys import configured_secret, signing_key
from crm.ledger.engagement import record
from touchflow.settings import Settings

log = logging.getLogger(__name__)

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")  # 1×1 transparent
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache",
            "Expires": "0"}
PAGE = """<!doctype html><html lang="ru"><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto"><h1>{title}</h1><p>{body}</p></body></html>"""


def _quietly(engine: Engine, touch_id: int, kind: str, **values) -> None:
    """Record, never failing the request: a lost open or click is better than a broken pixel or link."""
    try:
        record(engine, touch_id, kind, **values)
    except Exception:  # noqa: BLE001 - the person still gets the image or the page
        log.exception("recording a %s of touch %s failed", kind, touch_id)


def router(engine: Engine, settings: Settings) -> APIRouter:
    """The tracking routes (an engine and settings in, no globals); not in the API's OpenAPI schema."""
    routes = APIRouter(include_in_schema=False)
    tracker = tracker_for(signing_key(engine, configured_secret(settings)), settings.public_url)

    @routes.get("/t/o/{token}.gif")
    async def opened(token: str, request: Request) -> Response:
        try:
            touch_id = tracker.verify_open(token)
        except TrackingTokenError:
            touch_id = None
        if touch_id is not None:
            await run_in_threadpool(_quietly, engine, touch_id, "opened",
                                    user_agent=request.headers.get("user-agent"))
        return Response(GIF, media_type="image/gif", headers=NO_CACHE)

    @routes.get("/t/c/{token}")
    async def clicked(token: str, request: Request) -> Response:
        try:
            click = tracker.verify_click(token)
        except TrackingTokenError as exc:
            return HTMLResponse(PAGE.format(title="Ссылка недействительна", body=html.escape(
                "Эта ссылка повреждена или изменена. Откройте её из письма ещё раз.")),
                status_code=403 if isinstance(exc, ForgedToken) else 400, headers=NO_CACHE)
        await run_in_threadpool(_quietly, engine, click.touch_id, "clicked", url=click.url,
                                user_agent=request.headers.get("user-agent"))
        return RedirectResponse(click.url, status_code=302, headers=NO_CACHE)

    return routes

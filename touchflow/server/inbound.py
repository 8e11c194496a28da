"""Replies by email through a mail provider's inbound webhook: ``POST /inbound/email``.

The body is the provider's inbound-parse JSON (``channels.inbound.email.from_json``: from, to,
subject, text, html, headers, or the raw MIME in ``raw``). It is authenticated before anything is
read: ``X-Touchflow-Timestamp`` and ``X-Touchflow-Signature: sha256=<hex>``, an HMAC-SHA256 of
``"<timestamp>." + body`` with ``TOUCHFLOW_INBOUND_EMAIL_SECRET`` (``channels.inbound.signature``),
compared in constant time, at most five minutes old. A forged, unsigned or stale request gets 403
and changes nothing; with no secret configured every request gets 403.

The email is stored before the answer (``ingest_email``), so a 200 means it is kept; a retry of
the same email (same Message-ID) stores nothing new and gets 200 again, so the provider stops.
Like the other webhooks: no console session, no CSRF token, not in the API's schema.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine

from channels.inbound.email import InboundEmailError, from_json
from channels.inbound.ingest import ingest_email
from channels.inbound.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify
from touchflow.secrets import secret
from touchflow.settings import Settings

MAX_EMAIL_BODY = 10 * 1024 * 1024  # a reply with the raw MIME of an attachment; the app's limit for this route


def router(engine: Engine, settings: Settings) -> APIRouter:
    """The inbound email route (an engine and settings in, no globals)."""
    routes = APIRouter(include_in_schema=False)
    email_secret = secret(settings.inbound_email_secret, "TOUCHFLOW_INBOUND_EMAIL_SECRET")

    @routes.post("/inbound/email")
    async def inbound_email(request: Request) -> Response:
        """A reply by email: verified, parsed, stored once on the person and linked to the touch it answers."""
        body = await request.body()
        if not email_secret:
            return PlainTextResponse("inbound email is not configured (TOUCHFLOW_INBOUND_EMAIL_SECRET)",
                                     status_code=403)
        try:
            verify(email_secret, body, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER))
        except SignatureError as exc:
            return PlainTextResponse(f"invalid signature: {exc}", status_code=403)
        try:
            parsed = from_json(json.loads(body))
        except ValueError as exc:  # not JSON, or JSON that is not an email (InboundEmailError)
            reason = str(exc) if isinstance(exc, InboundEmailError) else f"the body is not JSON: {exc}"
            return PlainTextResponse(reason, status_code=400)
        result = await run_in_threadpool(ingest_email, engine, parsed, None, settings)
        answer = {"ok": True, "touch_id": result.touch_id, "new": result.new, "kind": result.kind,
                  "in_reply_to": result.answered, "linked_by": result.linked_by}
        if result.bounce is not None:
            answer.update(outcome=result.bounce.outcome, severity=result.bounce.severity,
                          status=result.bounce.status)
        return JSONResponse(answer)

    return routes

"""The outside world's requests: one-click unsubscribe, Twilio status callbacks and inbound SMS, Telegram webhook.

Every request from outside is authenticated before anything changes: unsubscribe tokens are
HMAC-signed (``channels.unsubscribe``), Twilio requests carry ``X-Twilio-Signature``
(``RequestValidator``: with and without the port), Telegram webhook calls carry
``X-Telegram-Bot-Api-Secret-Token`` (compared in constant time). Forged requests get 403 and
change nothing. A revocation is committed before the response, so the next send decision of any
running campaign sees it.

These routes keep their own authentication: no console session, no CSRF token (a provider or a
mail client cannot hold one), and they are the only routes without a login.
"""

from __future__ import annotations

import hmac
import html
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator

from channels.bot_spec import load_spec
from channels.registry import ChannelConfigError, build_channel
from channels.telegram_bot import handle_update
from channels.unsubscribe import TokenError, address_hash, verify_token
from crm.db import write_tx
from crm.keys import configured_secret, signing_key
from crm.ledger import consents
from crm.ledger.audit import seal
from crm.ledger.inbound import Inbound, record_inbound
from crm.ledger.moves import move
from crm.models import ContactPoint, Touch
from touchflow.secrets import secret
from touchflow.settings import Settings

log = logging.getLogger(__name__)
contacts = ContactPoint.__table__
touches = Touch.__table__

# Twilio's default opt-out and opt-in keywords (Advanced Opt-Out defaults)
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "СТОП"}
START_WORDS = {"START", "YES", "UNSTOP"}
TWILIO_STATUS = {"queued": "sent", "accepted": "sent", "sending": "sent", "sent": "sent", "delivered": "delivered",
                 "read": "delivered", "undelivered": "failed", "failed": "failed", "initiated": "sent",
                 "ringing": "sent", "in-progress": "sent", "answered": "sent", "completed": "delivered",
                 "busy": "failed", "no-answer": "failed", "canceled": "failed"}

PAGE = """<!doctype html><html lang="ru"><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto"><h1>{title}</h1>{body}</body></html>"""


def _record(engine: Engine, **entry) -> int:
    """A person's word, committed and sealed before the response.

    Committed: the next send decision of any running campaign sees it. Sealed: deleting it later
    breaks the consent chain (``compliance verify``), with no window in between.
    """
    with write_tx(engine) as conn:
        added = consents.record(conn, **entry)
    if added:
        seal(engine, tables=("consents",))
    return added


def _inbound_sms(engine: Engine, form: dict[str, Any]) -> None:
    """Store an inbound SMS and, for a STOP or START word, the person's word, in one transaction.

    One transaction: a Twilio retry (same MessageSid) finds the message stored and adds nothing, and
    never finds a message stored without its opt-out. A STOP is sealed before the response.
    """
    body, phone = form.get("Body") or "", form.get("From") or ""
    word = body.strip().upper()
    media = str(form.get("NumMedia") or "0")  # an MMS: its pictures stay at Twilio
    added = 0
    with write_tx(engine) as conn:
        _, new = record_inbound(conn, Inbound(channel="sms", address=phone, body=body,
                                              provider_message_id=form.get("MessageSid") or None,
                                              detail=None if media == "0" else f"{media[:10]} media attached"))
        if new and (word in STOP_WORDS or word in START_WORDS):
            added = consents.record(conn, channel="sms", purpose="marketing", granted=word in START_WORDS,
                                    source="sms_keyword", wording=f"the customer texted {word}",
                                    addresses=[("phone", phone)])
    if added:
        seal(engine, tables=("consents",))


def router(engine: Engine, settings: Settings) -> APIRouter:
    """The webhook routes (an engine and settings in, no globals); none of them is in the API's OpenAPI schema."""
    routes = APIRouter(include_in_schema=False)
    key = signing_key(engine, configured_secret(settings))
    twilio_token = secret(settings.twilio_auth_token, "TOUCHFLOW_TWILIO_AUTH_TOKEN")
    telegram_secret = secret(settings.telegram_webhook_secret, "TOUCHFLOW_TELEGRAM_WEBHOOK_SECRET")
    bot_spec = load_spec(settings=settings)  # a broken bot file stops the server at start, with the file and field
    channels: list = []

    def bot_channel():
        """The channel answers go through (built once); None when Telegram is not configured to send."""
        if not channels:
            try:
                channels.append(build_channel("telegram", settings))
            except ChannelConfigError as exc:
                log.warning("the bot stores messages but cannot answer them: %s", exc)
                channels.append(None)
        return channels[0]

    async def close_bot() -> None:
        """Release the answers' channel (its HTTP session); the app's lifespan calls it at shutdown."""
        if channels and channels[0] is not None:
            await channels[0].close()

    routes.close_bot = close_bot

    def claim_of(token: str):
        try:
            return verify_token(key, token)
        except TokenError as exc:
            return exc

    @routes.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> Response:
        """Mail scanners fetch links: a GET only shows the confirmation button and changes nothing."""
        claim = claim_of(token)
        if isinstance(claim, TokenError):
            return HTMLResponse(PAGE.format(title="Ссылка недействительна", body=f"<p>{html.escape(str(claim))}</p>"),
                                status_code=403)
        body = (f'<p>Отписаться от рекламных писем?</p><form method="post" action="/unsubscribe/{html.escape(token)}">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Отписаться</button></form>')
        return HTMLResponse(PAGE.format(title="Отписка от рассылки", body=body))

    @routes.post("/unsubscribe/{token}")
    async def unsubscribe(token: str, request: Request) -> Response:
        """RFC 8058 one-click: revoke the marketing consent for email at once."""
        claim = claim_of(token)
        if isinstance(claim, TokenError):
            return PlainTextResponse(str(claim), status_code=403)
        form = await request.form()
        if form.get("List-Unsubscribe") != "One-Click":
            return PlainTextResponse("expected List-Unsubscribe=One-Click", status_code=400)
        with engine.connect() as conn:
            points = conn.execute(select(contacts.c.value).where(contacts.c.customer_id == claim.customer_id,
                                                                 contacts.c.kind == "email")).scalars().all()
        address = next((v for v in points if address_hash(v) == claim.address_hash), None)
        if address is None:
            return PlainTextResponse("this link does not belong to a known address", status_code=403)
        _record(engine, channel=claim.channel, purpose="marketing", granted=False, source="one_click_unsubscribe",
                wording="List-Unsubscribe=One-Click (RFC 8058)", customer_ids=[claim.customer_id],
                addresses=[("email", address)])
        return HTMLResponse(PAGE.format(title="Вы отписались", body="<p>Рекламных писем больше не будет.</p>"))

    async def twilio_params(request: Request) -> dict[str, Any] | None:
        form = dict(await request.form())
        signature = request.headers.get("X-Twilio-Signature", "")
        url = settings.public_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        if not twilio_token or not signature or not RequestValidator(twilio_token).validate(url, form, signature):
            return None
        return form

    @routes.post("/twilio/status")
    async def twilio_status(request: Request) -> Response:
        """Message and call status callbacks: statuses only move forward; a duplicate changes nothing."""
        form = await twilio_params(request)
        if form is None:
            return PlainTextResponse("invalid Twilio signature", status_code=403)
        sid = form.get("MessageSid") or form.get("CallSid") or ""
        raw = (form.get("MessageStatus") or form.get("CallStatus") or "").lower()
        status = TWILIO_STATUS.get(raw)
        with engine.connect() as conn:
            touch = conn.execute(select(touches.c.id, touches.c.customer_id, touches.c.channel, touches.c.address)
                                 .where(touches.c.provider_message_id == sid)).first()
        if touch is None or status is None:
            return JSONResponse({"ok": True, "matched": False})
        error = form.get("ErrorCode")
        move(engine, [{"touch_id": touch.id, "status": status, "error_code": error,
                       "detail": f"twilio {raw}" + (f" error {error}" if error else "")}])
        if error == "21610":
            _record(engine, channel=touch.channel, purpose="marketing", granted=False, source="twilio_21610",
                    wording="the recipient replied STOP at Twilio", customer_ids=[touch.customer_id],
                    addresses=[("phone", touch.address)] if touch.address else [])
        return JSONResponse({"ok": True, "matched": True, "status": status})

    @routes.post("/twilio/inbound")
    async def twilio_inbound(request: Request) -> Response:
        """Inbound SMS: every message an inbound touch (once per MessageSid); STOP / START also a consent entry."""
        form = await twilio_params(request)
        if form is None:
            return PlainTextResponse("invalid Twilio signature", status_code=403)
        phone = form.get("From") or ""
        if phone:
            await run_in_threadpool(_inbound_sms, engine, form)
        return Response('<?xml version="1.0" encoding="UTF-8"?><Response/>', media_type="application/xml")

    @routes.post("/telegram/webhook")
    async def telegram_webhook(request: Request) -> Response:
        """Bot updates through ``channels.telegram_bot.handle_update``: stored, bound, opted out, answered."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not telegram_secret or not hmac.compare_digest(given.encode(), telegram_secret.encode()):
            return PlainTextResponse("invalid secret token", status_code=403)
        try:
            update_data = await request.json()
        except ValueError:
            return PlainTextResponse("the body is not JSON", status_code=400)
        if not isinstance(update_data, dict):
            return PlainTextResponse("an update is a JSON object", status_code=400)
        outcome = await handle_update(engine, bot_channel(), bot_spec, update_data)
        return JSONResponse(outcome.as_json())

    return routes

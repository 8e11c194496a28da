"""``touchflow serve``: one-click unsubscribe, Twilio status callbacks and inbound STOP, Telegram webhook.

Every request from outside is authenticated before anything changes: unsubscribe tokens are
HMAC-signed (``channels.unsubscribe``), Twilio requests carry ``X-Twilio-Signature``
(``RequestValidator``: with and without the port), Telegram webhook calls carry
``X-Telegram-Bot-Api-Secret-Token`` (compared in constant time). Forged requests get 403 and
change nothing. A revocation is committed before the response, so the next send decision of any
running campaign sees it.
"""

from __future__ import annotations

import hmac
import html
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from twilio.request_validator import RequestValidator

from channels.telegram_links import LinkError, bind_chat
from channels.unsubscribe import TokenError, address_hash, signing_key, verify_token
from crm.db import write_tx
from crm.history import move
from crm.models import Consent, ContactPoint, ContactStatus, Touch, utcnow
from touchflow.secrets import secret
from touchflow.settings import Settings

consents = Consent.__table__
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


def _revoke(conn, customer_ids: list[int], channel: str, purpose: str, source: str, wording: str,
            granted: bool = False) -> int:
    now = utcnow()
    for customer_id in customer_ids:
        conn.execute(insert(consents).values(customer_id=customer_id, channel=channel, purpose=purpose,
                                             granted=granted, at=now, source=source, wording=wording,
                                             recorded_at=now))
    return len(customer_ids)


def create_app(engine: Engine, settings: Settings) -> FastAPI:
    """The web application (an engine and settings in, no globals)."""
    app = FastAPI(title="touchflow", docs_url=None, redoc_url=None)
    key = signing_key(engine, settings.secret_key.get_secret_value() if settings.secret_key else None)
    twilio_token = secret(settings.twilio_auth_token, "TOUCHFLOW_TWILIO_AUTH_TOKEN")
    telegram_secret = secret(settings.telegram_webhook_secret, "TOUCHFLOW_TELEGRAM_WEBHOOK_SECRET")

    def claim_of(token: str):
        try:
            return verify_token(key, token)
        except TokenError as exc:
            return exc

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
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

    @app.post("/unsubscribe/{token}")
    async def unsubscribe(token: str, request: Request) -> Response:
        """RFC 8058 one-click: revoke the marketing consent for email at once."""
        claim = claim_of(token)
        if isinstance(claim, TokenError):
            return PlainTextResponse(str(claim), status_code=403)
        form = await request.form()
        if form.get("List-Unsubscribe") != "One-Click":
            return PlainTextResponse("expected List-Unsubscribe=One-Click", status_code=400)
        with write_tx(engine) as conn:
            points = conn.execute(select(contacts.c.value).where(contacts.c.customer_id == claim.customer_id,
                                                                 contacts.c.kind == "email")).scalars().all()
            if not any(address_hash(v) == claim.address_hash for v in points):
                return PlainTextResponse("this link does not belong to a known address", status_code=403)
            _revoke(conn, [claim.customer_id], claim.channel, "marketing", "one_click_unsubscribe",
                    "List-Unsubscribe=One-Click (RFC 8058)")
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

    @app.post("/twilio/status")
    async def twilio_status(request: Request) -> Response:
        """Message and call status callbacks: statuses only move forward; a duplicate changes nothing."""
        form = await twilio_params(request)
        if form is None:
            return PlainTextResponse("invalid Twilio signature", status_code=403)
        sid = form.get("MessageSid") or form.get("CallSid") or ""
        raw = (form.get("MessageStatus") or form.get("CallStatus") or "").lower()
        status = TWILIO_STATUS.get(raw)
        with engine.connect() as conn:
            touch = conn.execute(select(touches.c.id, touches.c.customer_id, touches.c.channel)
                                 .where(touches.c.provider_message_id == sid)).first()
        if touch is None or status is None:
            return JSONResponse({"ok": True, "matched": False})
        error = form.get("ErrorCode")
        move(engine, [{"touch_id": touch.id, "status": status, "error_code": error,
                       "detail": f"twilio {raw}" + (f" error {error}" if error else "")}])
        if error == "21610":
            with write_tx(engine) as conn:
                _revoke(conn, [touch.customer_id], touch.channel, "marketing", "twilio_21610",
                        "the recipient replied STOP at Twilio")
        return JSONResponse({"ok": True, "matched": True, "status": status})

    @app.post("/twilio/inbound")
    async def twilio_inbound(request: Request) -> Response:
        """Inbound SMS: STOP words record an opt-out, START words a new consent, for every record of that phone."""
        form = await twilio_params(request)
        if form is None:
            return PlainTextResponse("invalid Twilio signature", status_code=403)
        word = (form.get("Body") or "").strip().upper()
        phone = form.get("From") or ""
        if word in STOP_WORDS or word in START_WORDS:
            granted = word in START_WORDS
            with write_tx(engine) as conn:
                owners = conn.execute(select(contacts.c.customer_id).where(contacts.c.kind == "phone",
                                                                           contacts.c.value == phone)).scalars().all()
                _revoke(conn, sorted(set(owners)), "sms", "marketing", "sms_keyword",
                        f"the customer texted {word}", granted=granted)
        return Response('<?xml version="1.0" encoding="UTF-8"?><Response/>', media_type="application/xml")

    @app.post("/telegram/webhook")
    async def telegram_webhook(request: Request) -> Response:
        """Bot updates: /start <token> binds the chat, /stop opts out, a block marks the chat blocked."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not telegram_secret or not hmac.compare_digest(given.encode(), telegram_secret.encode()):
            return PlainTextResponse("invalid secret token", status_code=403)
        update_data = await request.json()
        message = update_data.get("message") or {}
        text = (message.get("text") or "").strip()
        chat = str((message.get("chat") or {}).get("id", ""))
        member = update_data.get("my_chat_member") or {}
        if member:
            chat = str(member.get("chat", {}).get("id", ""))
            if member.get("new_chat_member", {}).get("status") == "kicked":
                with write_tx(engine) as conn:
                    conn.execute(update(contacts).where(contacts.c.kind == "telegram", contacts.c.value == chat)
                                 .values(status=ContactStatus.blocked.value, status_reason="the user blocked the bot",
                                         updated_at=utcnow()))
                return JSONResponse({"ok": True, "action": "blocked"})
        if text.startswith("/start ") and chat:
            try:
                binding = bind_chat(engine, text.split(maxsplit=1)[1], chat)
            except LinkError as exc:
                return JSONResponse({"ok": True, "action": "refused", "reason": str(exc)})
            return JSONResponse({"ok": True, "action": "bound", "customer": binding.customer_external_id})
        if text == "/stop" and chat:
            with write_tx(engine) as conn:
                owners = conn.execute(select(contacts.c.customer_id).where(contacts.c.kind == "telegram",
                                                                           contacts.c.value == chat)).scalars().all()
                _revoke(conn, sorted(set(owners)), "telegram", "marketing", "telegram_stop", "/stop in the bot")
            return JSONResponse({"ok": True, "action": "opted_out"})
        return JSONResponse({"ok": True, "action": "ignored"})

    return app

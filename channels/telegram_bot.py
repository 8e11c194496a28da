"""The Telegram bot: every update goes through ``handle_update``, from the webhook and from getUpdates alike.

What it does with a message (``message`` updates; a ``my_chat_member`` "kicked" marks the chat blocked):

* It is stored once as an inbound touch (``crm.ledger.inbound``; provider id ``<chat>:<message id>``,
  so a redelivered update is a duplicate and does nothing more), linked to the touch it answers:
  the message of ours it replies to (Telegram's ``reply_to_message``), else the latest touch sent
  to the chat. Stored: every message of a chat bound to a customer, and every ``/start`` and
  ``/stop``. A stranger's other messages are neither stored nor answered.
* ``/start <token>`` binds the chat (``channels.telegram_links``) and is answered ``linked``, or
  ``link_refused`` when the token is unknown, used or expired; a stranger's bare ``/start`` gets
  the ``invitation`` to link. Nothing else is ever sent to a stranger.
* ``/stop`` revokes marketing and service on Telegram for the person (every record holding the
  chat) and is not answered: no confirmation, since the bot never writes to someone who opted out.
* Other text is matched against the bot file (``channels.bot_spec``): a FAQ answer, the order
  intent (a call task for the customer's rep through ``crm.ledger.calls.request_call``, or a
  note in the history when they have no rep) or the fallback.

An answer is never sent to a person who opted out of Telegram, nor to a blocked or suppressed
chat (``crm.ledger.replies.may_answer``); it is claimed as an outgoing touch (purpose
``service``, campaign ``bot``, ``in_reply_to`` the message) in the same transaction that stores
the message, before it is sent, so a redelivery or a crash never produces a second answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from channels.base import Channel, Message
from channels.bot_spec import BotSpec, Intent, render
from channels.errors import ChannelError, DeliveryUnknown, RecipientBlocked
from channels.sending import send_with_retry
from channels.telegram_links import Binding, LinkError, bind_chat
from crm.db import write_tx
from crm.ledger import consents
from crm.ledger.audit import seal
from crm.ledger.calls import request_call
from crm.ledger.contacts import mark_address
from crm.ledger.inbound import Inbound, record_inbound
from crm.ledger.replies import answer_key, claim_answer, inbound_touch, may_answer, settle
from crm.models import CallTask, ContactPoint, ContactStatus, Customer, Manager, Touch

log = logging.getLogger(__name__)
touches = Touch.__table__
contacts = ContactPoint.__table__
customers = Customer.__table__
managers = Manager.__table__
tasks = CallTask.__table__
CAMPAIGN = "bot"


@dataclass(frozen=True)
class Incoming:
    """One private message: the chat, Telegram's message id, its text and the message it replies to."""

    chat: str
    message_id: int
    text: str
    reply_to: int | None = None
    at: datetime | None = None


@dataclass
class Outcome:
    """What handling an update did (the webhook's JSON answer, the listener's log line)."""

    action: str  # bound, refused, opted_out, blocked, answered, stored, duplicate, ignored
    inbound_id: int | None = None
    answer_id: int | None = None
    intent: str | None = None
    task_id: int | None = None
    reason: str | None = None  # why there is no answer, or why a link was refused
    customer: str | None = None  # the external id a /start bound
    sent: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, **{k: v for k, v in asdict(self).items() if v not in (None, False)}}


@dataclass
class _Plan:
    """What the database part decided: the outcome, and the answer to send when one was claimed."""

    outcome: Outcome
    chat: str | None = None
    body: str | None = None
    sealed_consents: bool = False


def incoming(data: dict[str, Any]) -> Incoming | None:
    """The private text message in an update (the Bot API's JSON), or None for anything else."""
    message = data.get("message")
    if not isinstance(message, dict):
        return None
    chat = (message.get("chat") or {}).get("id")
    message_id = message.get("message_id")
    if chat is None or not isinstance(message_id, int):
        return None
    replied = message.get("reply_to_message") or {}
    stamp = message.get("date")
    at = datetime.fromtimestamp(stamp, timezone.utc) if isinstance(stamp, int) and stamp > 0 else None
    return Incoming(str(chat), message_id, (message.get("text") or message.get("caption") or "").strip(),
                    replied.get("message_id") if isinstance(replied.get("message_id"), int) else None, at)


def command(text: str) -> tuple[str, str | None]:
    """("start", token or None), ("stop", None) or ("text", None); ``/start@bot`` counts as ``/start``."""
    parts = text.split(maxsplit=1)
    head = parts[0].split("@", 1)[0].lower() if parts else ""
    if head == "/start":
        return "start", parts[1].strip() if len(parts) == 2 else None
    if head == "/stop":
        return "stop", None
    return "text", None


async def handle_update(engine: Engine, channel: Channel | None, spec: BotSpec, data: dict[str, Any]) -> Outcome:
    """Handle one update (see the module docstring); ``channel`` None stores and answers nothing."""
    member = data.get("my_chat_member")
    if isinstance(member, dict):
        return await asyncio.to_thread(_member, engine, member)
    message = incoming(data)
    if message is None:
        return Outcome("ignored")
    plan = await asyncio.to_thread(decide, engine, spec, message, channel is not None)
    if plan.sealed_consents:
        await asyncio.to_thread(seal, engine, tables=("consents",))
    if plan.body is not None and channel is not None:
        await deliver(engine, channel, plan)
    return plan.outcome


def _member(engine: Engine, member: dict[str, Any]) -> Outcome:
    """The user blocked the bot: the chat is marked blocked on every record holding it."""
    chat = str((member.get("chat") or {}).get("id", ""))
    if chat and (member.get("new_chat_member") or {}).get("status") == "kicked":
        with write_tx(engine) as conn:
            mark_address(conn, "telegram", chat, ContactStatus.blocked.value, "the user blocked the bot")
        return Outcome("blocked")
    return Outcome("ignored")


def decide(engine: Engine, spec: BotSpec, message: Incoming, can_answer: bool = True) -> _Plan:
    """Bind, store, opt out, take the order and claim the answer (the database part of ``handle_update``).

    The message, the opt-out, the order's call task and the answer's claim are one transaction:
    a redelivery finds the message stored and does nothing, and a crash leaves all or none.
    """
    provider_id = f"{message.chat}:{message.message_id}"
    with engine.connect() as conn:
        if conn.execute(select(touches.c.id).where(touches.c.claim_key == f"in:telegram:{provider_id}")).scalar():
            return _Plan(Outcome("duplicate"))
    verb, token = command(message.text)
    binding, refusal = _bind(engine, token, message.chat) if verb == "start" and token else (None, None)
    intent = spec.match(message.text) if verb == "text" and message.text else None
    with write_tx(engine) as conn:
        holder = _holder(conn, message.chat)
        if holder is None and verb == "text":
            return _Plan(Outcome("ignored", reason="stranger"))
        order_note = intent is not None and intent.kind == "order" and not _takes_call(spec, holder)
        detail = (f"bot: {intent.kind} {intent.id}" + (" (a note: the customer has no rep)" if order_note else "")
                  if intent else f"bot: {verb}" + (" bound" if binding else f" refused: {refusal}" if refusal else ""))
        said = "/start ‹token›" if token else message.text  # a one-time token is no business of the history
        inbound_id, new = record_inbound(conn, Inbound("telegram", message.chat, said, provider_id,
                                                       message.at, _replied(conn, message), detail[:500]))
        if not new:
            return _Plan(Outcome("duplicate", inbound_id))
        action = "bound" if binding else "refused" if refusal else "opted_out" if verb == "stop" else "stored"
        outcome = Outcome(action, inbound_id, intent=intent.id if intent else None, reason=refusal,
                          customer=binding.customer_external_id if binding else None)
        if verb == "stop":
            return _opt_out(conn, message.chat, outcome)
        why = may_answer(conn, holder.id, "telegram", message.chat) if holder is not None else None
        why = why or (None if can_answer else "no bot channel configured")
        outcome.reason = why or ("nothing to answer (no text)" if verb == "text" and not message.text else None)
        if outcome.reason is not None:
            return _Plan(outcome)
        body, template, note = _answer(conn, spec, holder, verb, refusal, intent, inbound_id, message)
        outcome.task_id = note.get("task")
        outcome.answer_id = claim_answer(conn, inbound_touch(conn, inbound_id), body=body, campaign=CAMPAIGN,
                                         template=template, detail=note.get("detail"))
        return _Plan(outcome, message.chat, body if outcome.answer_id is not None else None)


def _bind(engine: Engine, token: str, chat: str) -> tuple[Binding | None, str | None]:
    """(the binding, None) or (None, why the token was refused)."""
    try:
        return bind_chat(engine, token, chat), None
    except LinkError as exc:
        return None, str(exc)


def _opt_out(conn: Connection, chat: str, outcome: Outcome) -> _Plan:
    """``/stop``: marketing and service revoked on Telegram for every record holding the chat; no answer."""
    added = sum(consents.record(conn, channel="telegram", purpose=purpose, granted=False, source="telegram_stop",
                                wording="/stop in the bot", addresses=[("telegram", chat)])
                for purpose in ("marketing", "service"))
    outcome.reason = "opted_out"
    return _Plan(outcome, sealed_consents=added > 0)


def _holder(conn: Connection, chat: str) -> Any:
    """The customer record holding the chat (the newest, when several do), with its name and rep, or None."""
    return conn.execute(select(customers.c.id, customers.c.name, customers.c.manager_id)
                        .join(contacts, contacts.c.customer_id == customers.c.id)
                        .where(contacts.c.kind == "telegram", contacts.c.value == chat)
                        .order_by(customers.c.id.desc()).limit(1)).first()


def _replied(conn: Connection, message: Incoming) -> int | None:
    """Our touch the message replies to: the Telegram channel stores the sent message's id as the provider id."""
    if message.reply_to is None:
        return None
    return conn.execute(select(touches.c.id).where(touches.c.channel == "telegram", touches.c.address == message.chat,
                                                   touches.c.direction == "out",
                                                   touches.c.provider_message_id == str(message.reply_to))
                        .order_by(touches.c.id.desc()).limit(1)).scalar()


def _takes_call(spec: BotSpec, holder: Any) -> bool:
    """An order becomes a call task when the customer has a rep, or when the file says so for everyone."""
    return holder is not None and (holder.manager_id is not None or spec.without_rep == "call_task")


def _answer(conn: Connection, spec: BotSpec, holder: Any, verb: str, refusal: str | None, intent: Intent | None,
            inbound_id: int, message: Incoming) -> tuple[str, str, dict[str, Any]]:
    """(body, template name, {task, detail}) of the answer."""
    name = (holder.name or "") if holder is not None else ""
    if verb == "start":
        if refusal:
            return render(spec.link_refused, reason=refusal), "bot:link_refused", {}
        if holder is None:
            return render(spec.invitation), "bot:invitation", {}
        return render(spec.linked, name=name), "bot:linked", {}
    if intent.kind != "order":
        return render(intent.answer, name=name, text=message.text), f"bot:{intent.kind}:{intent.id}", {}
    if not _takes_call(spec, holder):
        return (render(spec.note_answer, name=name, text=message.text), "bot:order:note",
                {"detail": "order left as a note in the history: the customer has no rep"})
    due = date.today() + timedelta(days=spec.due_in_days)
    task_id, created = request_call(conn, customer_id=holder.id, touch_id=inbound_id,
                                    script=f"Заказ в Telegram: «{message.text[:1000]}»",
                                    note=f"Telegram order: {message.text}", due_on=due, campaign=CAMPAIGN)
    rep = conn.execute(select(managers.c.name).join(tasks, tasks.c.manager_id == managers.c.id)
                       .where(tasks.c.id == task_id)).scalar()
    if rep is None:  # no active rep at all: the task waits unassigned, the customer is told it is noted
        return (render(spec.note_answer, name=name, text=message.text), "bot:order:note",
                {"task": task_id, "detail": f"order: call task {task_id}, no active rep to assign"})
    when = {0: "сегодня", 1: "завтра"}.get(spec.due_in_days, f"{due:%d.%m.%Y}")
    detail = f"order: call task {task_id}" + ("" if created else " (added to the person's open task)")
    return (render(spec.order.answer, name=name, rep=rep, due=when, task=task_id, text=message.text),
            "bot:order:call_task", {"task": task_id, "detail": detail})


async def deliver(engine: Engine, channel: Channel, plan: _Plan) -> None:
    """Send the claimed answer and settle its touch: sent (with Telegram's message id), unknown or failed."""
    outcome = plan.outcome
    message = Message(channel="telegram", to=plan.chat, text=plan.body, reference=answer_key(outcome.inbound_id))
    try:
        delivery = await send_with_retry(channel, message, attempts=2, base_delay=0.2)
    except ChannelError as exc:
        status = "unknown" if isinstance(exc, DeliveryUnknown) else "failed"
        await asyncio.to_thread(settle, engine, outcome.answer_id, status=status, error_code=exc.code,
                                error_message=str(exc))
        if isinstance(exc, RecipientBlocked):
            await asyncio.to_thread(_member, engine, {"chat": {"id": plan.chat},
                                                      "new_chat_member": {"status": "kicked"}})
        outcome.action, outcome.reason = "stored", f"the answer was not sent: {exc}"
        log.warning("bot answer %s to chat %s not sent: %s", outcome.answer_id, plan.chat, exc)
        return
    await asyncio.to_thread(settle, engine, outcome.answer_id, status="sent", provider_message_id=delivery.provider_id)
    outcome.sent = True
    if outcome.action == "stored":
        outcome.action = "answered"

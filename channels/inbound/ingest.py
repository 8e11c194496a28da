"""An incoming email, classified and stored: the one place every inbound email goes through.

The webhook (``POST /inbound/email``) and the mailbox poll (``touchflow inbound poll-imap``) both
call ``ingest_email``, so each source stays a thin reader. A delivery status notification goes to
the bounce handler (``channels.inbound.bounces.handle_bounce``: it fails the touch it reports on
and never becomes a reply); every other email is a reply (an automatic one is noted as such).

A reply is linked to the touch it answers by the Message-ID it names (In-Reply-To, then
References newest first) matching that touch's ``provider_message_id``, which is the Message-ID
our SMTP and file transports wrote; our Message-IDs also carry the touch (``<hex.touch.N@domain>``),
which is trusted only when touch N went to the writer's address. Otherwise ``record_inbound``
falls back to the latest email sent to that address.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from channels.inbound.bounces import BounceResult, handle_bounce
from channels.inbound.email import ParsedEmail
from crm.db import write_tx
from crm.importing.normalize import normalize_email
from crm.ledger.inbound import Inbound, record_inbound
from crm.models import Touch
from touchflow.settings import Settings

touches = Touch.__table__

MAX_ID = 180  # longer ids are stored as their digest: the claim key and the column hold 200 characters
_OUR_ID = re.compile(r"^<[0-9a-f]{32}\.touch\.(\d+)@")


@dataclass(frozen=True)
class Ingested:
    """What became of one incoming email."""

    kind: str  # reply, auto_reply, bounce
    touch_id: int | None  # the reply's inbound touch; for a bounce, the touch it reports on (None: unmatched)
    new: bool  # False: the same message was stored before (a webhook retry, a poll after a crash)
    answered: int | None  # the touch it answers
    linked_by: str  # message-id (its In-Reply-To / References), address (the latest email to it), verp, none
    bounce: BounceResult | None = None  # what the bounce handler did (recorded, duplicate, forged, unmatched, …)


def ingest_email(engine: Engine, parsed: ParsedEmail, envelope_to: str | None = None,
                 settings: Settings | None = None) -> Ingested:
    """Classify ``parsed`` and store it, once: a bounce through the bounce handler, anything else as an inbound
    email touch. The transaction commits before returning. ``envelope_to``: the RCPT TO, when the route knows it."""
    if parsed.raw is not None:
        bounce = handle_bounce(engine, parsed.raw, envelope_to, settings=settings)
        if bounce is not None:
            return Ingested(kind="bounce", touch_id=bounce.touch_id, new=bounce.outcome == "recorded",
                            answered=None, linked_by=bounce.matched_by or "none", bounce=bounce)
    kind = "auto_reply" if _automatic(parsed) else "reply"
    address = _address(parsed.sender)
    detail = f"{'auto-reply; ' if kind == 'auto_reply' else ''}subject: {parsed.subject}"[:2000]
    with write_tx(engine) as conn:
        answered = answered_touch(conn, parsed, address)
        touch_id, new = record_inbound(conn, Inbound(
            channel="email", address=address, body=parsed.reply or parsed.text, provider_message_id=provider_id(parsed),
            in_reply_to=answered, detail=detail))
        linked = conn.execute(select(touches.c.in_reply_to).where(touches.c.id == touch_id)).scalar()
    how = "message-id" if answered is not None and linked == answered else "address" if linked is not None else "none"
    return Ingested(kind=kind, touch_id=touch_id, new=new, answered=linked, linked_by=how)


def provider_id(parsed: ParsedEmail) -> str:
    """The id an email is kept once by: its Message-ID (a digest of it when too long), else a digest of the message."""
    ident = parsed.fingerprint
    return ident if len(ident) <= MAX_ID else "sha256:" + hashlib.sha256(ident.encode()).hexdigest()


def answered_touch(conn: Connection, parsed: ParsedEmail, address: str) -> int | None:
    """The outgoing email touch this email names as the one it answers, or None (then the address decides)."""
    ids = list(parsed.answers)
    if not ids:
        return None
    candidates = ids + [ident.strip("<>") for ident in ids]
    rows = conn.execute(select(touches.c.id, touches.c.provider_message_id).where(
        touches.c.provider_message_id.in_(candidates), touches.c.channel == "email",
        touches.c.direction == "out")).all()
    found = {row.provider_message_id: row.id for row in rows}
    for ident in ids:
        touch = found.get(ident) or found.get(ident.strip("<>"))
        if touch is not None:
            return touch
    for ident in ids:  # a touch whose provider id was not kept, named by our own Message-ID
        match = _OUR_ID.match(ident)
        if match:
            touch = conn.execute(select(touches.c.id).where(
                touches.c.id == int(match.group(1)), touches.c.channel == "email", touches.c.direction == "out",
                touches.c.address == address)).scalar()
            if touch is not None:
                return touch
    return None


def _address(sender: str) -> str:
    """The sender as contact points hold addresses (normalised), or as given when it does not normalise."""
    try:
        return normalize_email(sender)
    except ValueError:
        return sender.strip().lower()


def _automatic(parsed: ParsedEmail) -> bool:
    """An out-of-office or other machine reply (RFC 3834 Auto-Submitted, the common vendor headers)."""
    submitted = (parsed.header("Auto-Submitted") or "no").strip().lower()
    return submitted != "no" or parsed.header("X-Autoreply") is not None or \
        (parsed.header("Precedence") or "").strip().lower() == "auto_reply"

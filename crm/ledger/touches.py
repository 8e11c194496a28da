"""Writing touches: a row per contact attempt or decision not to contact, always with its first event.

Every touch is written with a ``touch_events`` row holding the state it was written in (claimed,
deferred, skipped with its reason, sent for a document, delivered for a call outcome), so a
touch's current state is always the fold of its events; ``crm.ledger.audit`` checks exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from crm.bulk import bulk_insert, bulk_insert_tuples, new_ids
from crm.keys import HISTORY, stored_key_in
from crm.ledger.policy import Decision
from crm.models import Touch, TouchEvent

touches = Touch.__table__
events = TouchEvent.__table__

TOUCH_COLUMNS = ("claim_key", "person_key", "customer_id", "campaign", "run_id", "offer", "purpose", "channel",
                 "contact_point_id", "address", "address_digest", "status", "reason", "detail", "template",
                 "template_hash", "body", "body_hash", "consent_id", "manager_id", "created_at", "updated_at",
                 "due_at", "sent_at", "offer_valid_until", "direction", "in_reply_to", "cost",
                 "provider_message_id")  # a touch written already handed over carries the provider's id
EVENT_COLUMNS = ("touch_id", "status", "at", "detail", "reason", "error_code", "error_message",
                 "provider_message_id")
FIRST_EVENT = ("status", "detail", "reason", "error_code", "error_message", "provider_message_id")
WRITTEN_SENT = ("sent", "delivered", "failed")  # written already handed over (a document, a call's outcome)


def body_hash(text: str | None) -> str | None:
    """SHA-256 of a rendered message (kept even when the text itself is not)."""
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def address_digest(key: bytes, address: str | None) -> str | None:
    """A keyed hash of the address: chained with the touch and kept after an erasure strips the address.

    The key is the installation's ``history`` key, kept in the database and never rotated, so
    every digest stays checkable; an erased address cannot be read back from it without the key.
    """
    return None if address is None else hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


def touch_row(decision: Decision, *, run_id: str | None, campaign: str | None, offer: str | None,
              purpose: str, status: str, now: datetime, template: str | None = None,
              template_hash: str | None = None, body: str | None = None, keep_body: bool = True,
              claim_key: str | None = None, manager_id: int | None = None,
              offer_valid_until: date | None = None, cost: Decimal | None = None) -> dict[str, Any]:
    """A ``touches`` row for a decision (a touch, a deferral or a decision not to contact).

    ``offer_valid_until`` is the date the message promised the offer until (the run's, evaluated on its day);
    ``cost`` the message's price (``channels.pricing``), kept only on a touch that is claimed or deferred.
    """
    return {"claim_key": claim_key, "person_key": str(decision.person_id), "customer_id": decision.customer_id,
            "campaign": campaign, "run_id": run_id, "offer": offer, "purpose": purpose, "channel": decision.channel,
            "contact_point_id": decision.contact_point_id, "address": decision.address,
            "address_digest": None, "status": status, "reason": decision.reason,
            "detail": decision.detail, "template": template, "template_hash": template_hash,
            "body": body if keep_body else None, "body_hash": body_hash(body), "consent_id": decision.consent_id,
            "manager_id": manager_id, "created_at": now, "updated_at": now, "due_at": decision.due_at,
            "sent_at": None, "offer_valid_until": offer_valid_until, "direction": "out", "in_reply_to": None,
            "cost": cost if status in ("claimed", "deferred") else None}


def first_events(ids: list[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first event of each new touch: the state it was written in."""
    return [{"touch_id": touch_id, "at": row["created_at"], **{name: row.get(name) for name in FIRST_EVENT}}
            for touch_id, row in zip(ids, rows)]


def insert_touches(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert touches (rows holding ``TOUCH_COLUMNS``) with their first events; return their ids in order."""
    if not rows:
        return []
    key = history_key(conn)
    for row in rows:
        if row["address"] is not None and row["address_digest"] is None:
            row["address_digest"] = address_digest(key, row["address"])
        row["sent_at"] = row["created_at"] if row["status"] in WRITTEN_SENT else None
        row["direction"] = row.get("direction") or "out"
    ids = new_ids(conn, touches, len(rows))
    bulk_insert_tuples(conn, touches, ("id", *TOUCH_COLUMNS),
                       [(touch_id, *[row.get(name) for name in TOUCH_COLUMNS]) for touch_id, row in zip(ids, rows)])
    bulk_insert(conn, events, EVENT_COLUMNS, first_events(ids, rows))
    return ids


def record_decisions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write decisions not to contact (status ``skipped``, with their reasons)."""
    insert_touches(conn, rows)


def record_touch(conn: Connection, row: dict[str, Any]) -> int:
    """Write one touch (a document, a call's outcome) with its first event; return its id."""
    return insert_touches(conn, [{name: row.get(name) for name in TOUCH_COLUMNS}])[0]


def history_key(conn: Connection) -> bytes:
    """The key of the address digests."""
    return stored_key_in(conn, HISTORY).encode()


def strip_personal(conn: Connection, customer_id: int) -> int:
    """Erase what the history holds about a person's words and addresses (the digests stay); return the rows."""
    stripped = conn.execute(update(touches).where(touches.c.customer_id == customer_id).values(
        address=None, body=None, detail=None, error_message=None)).rowcount or 0
    conn.execute(update(events).where(events.c.touch_id.in_(select(touches.c.id).where(
        touches.c.customer_id == customer_id))).values(detail=None, error_message=None))
    return stripped

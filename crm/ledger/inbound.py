"""What people write back: replies and questions stored as inbound touches on the person.

An inbound touch is a ``touches`` row with ``direction`` ``in`` and status ``received``, written with
its first event like every touch (so the audit fold and the chains cover it). It is linked to the
outgoing touch it answers (``in_reply_to``) when one can be found: the provider's own reference
(an email's In-Reply-To, a VERP return path) or else the latest touch sent to the same address on
the same channel. A provider that delivers the same message twice (webhook retries, an IMAP poll
after a crash) writes it once: the claim key is ``in:<channel>:<provider message id>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from crm.models import CHANNEL_CONTACT_KIND, ContactPoint, Customer, Touch, utcnow
from crm.ledger.touches import TOUCH_COLUMNS, body_hash, insert_touches

touches = Touch.__table__
contacts = ContactPoint.__table__
customers = Customer.__table__

ANSWERABLE = ("sending", "sent", "delivered", "unknown")  # an outgoing touch a reply can answer


@dataclass(frozen=True)
class Inbound:
    """One message from outside: who wrote (address), on which channel, what, and the provider's id."""

    channel: str
    address: str
    body: str
    provider_message_id: str | None = None
    received_at: datetime | None = None
    in_reply_to: int | None = None  # the answered touch, when the provider says which
    detail: str | None = None


def answered_touch(conn: Connection, channel: str, address: str, before: datetime | None = None) -> Any:
    """The latest outgoing touch handed to ``address`` on ``channel`` (before ``before``): the one a reply answers."""
    query = (select(touches.c.id, touches.c.customer_id, touches.c.person_key, touches.c.campaign)
             .where(touches.c.channel == channel, touches.c.address == address, touches.c.direction == "out",
                    touches.c.status.in_(ANSWERABLE)).order_by(touches.c.id.desc()).limit(1))
    if before is not None:
        query = query.where(touches.c.created_at <= before)
    return conn.execute(query).first()


def _writer(conn: Connection, channel: str, address: str) -> Any:
    """The record holding the address (the newest, when several do), or None for a stranger."""
    kind = CHANNEL_CONTACT_KIND[channel].value if channel in CHANNEL_CONTACT_KIND else channel
    return conn.execute(select(customers.c.id, customers.c.person_id)
                        .join(contacts, contacts.c.customer_id == customers.c.id)
                        .where(contacts.c.kind == kind, contacts.c.value == address)
                        .order_by(customers.c.id.desc()).limit(1)).first()


def record_inbound(conn: Connection, message: Inbound) -> tuple[int, bool]:
    """Write an inbound touch for ``message``; return (its id, whether it is new).

    A message already stored (same channel and provider id) is not written again: its id is returned.
    """
    at = message.received_at or utcnow()
    key = f"in:{message.channel}:{message.provider_message_id}" if message.provider_message_id else None
    if key is not None:
        found = conn.execute(select(touches.c.id).where(touches.c.claim_key == key)).scalar()
        if found is not None:
            return found, False
    answered = None
    if message.in_reply_to is not None:
        answered = conn.execute(select(touches.c.id, touches.c.customer_id, touches.c.person_key,
                                       touches.c.campaign).where(touches.c.id == message.in_reply_to)).first()
    answered = answered or answered_touch(conn, message.channel, message.address, at)
    writer = _writer(conn, message.channel, message.address)
    customer_id = answered.customer_id if answered is not None else (writer.id if writer else None)
    person_key = answered.person_key if answered is not None else (
        str(writer.person_id or writer.id) if writer else None)
    row = {name: None for name in TOUCH_COLUMNS}
    row.update(claim_key=key, person_key=person_key, customer_id=customer_id,
               campaign=answered.campaign if answered is not None else None, purpose="service",
               channel=message.channel, address=message.address, status="received", detail=message.detail,
               body=message.body, created_at=at, updated_at=at, direction="in",
               in_reply_to=answered.id if answered is not None else None, body_hash=body_hash(message.body),
               provider_message_id=message.provider_message_id)
    try:
        with conn.begin_nested():
            touch_id = insert_touches(conn, [row])[0]
    except IntegrityError:  # the same message, stored by a concurrent delivery of it
        return conn.execute(select(touches.c.id).where(touches.c.claim_key == key)).scalar_one(), False
    return touch_id, True

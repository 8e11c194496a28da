"""Answers to what people write (the Telegram bot's): each one an outgoing touch, claimed once per inbound message.

An answer is claimed before it is sent, under the claim key ``answer:<inbound touch id>``
(unique in ``touches``): a provider that redelivers a message, or two processes handling it at
once, produce one answer at most. The claim is written ``sending``, linked to the message it
answers (``in_reply_to``), with purpose ``service``; ``settle`` moves it on with what the
provider said. Whether a person may be answered at all is ``may_answer``: never after an
opt-out of the channel (either purpose, the channel's or ``all``'s latest entry of the person),
never to a blocked, invalid or suppressed address.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from crm.ledger.claims import load_candidates
from crm.ledger.contacts import suppressed
from crm.ledger.moves import move
from crm.ledger.policy import consent_for
from crm.ledger.touches import TOUCH_COLUMNS, body_hash, insert_touches
from crm.models import CHANNEL_CONTACT_KIND, Touch, utcnow

touches = Touch.__table__


def answer_key(inbound_id: int) -> str:
    """The claim key of the answer to one inbound touch."""
    return f"answer:{inbound_id}"


def may_answer(conn: Connection, customer_id: int, channel: str, address: str) -> str | None:
    """None when the person may be answered at ``address`` on ``channel``; else why not (opted_out, blocked, ...)."""
    candidates = load_candidates(conn, [customer_id])
    if not candidates:
        return "unknown_customer"
    candidate = candidates[0]
    for purpose in ("service", "marketing"):
        consent = consent_for(candidate, channel, purpose)
        if consent is not None and not consent.granted:
            return "opted_out"
    kind = CHANNEL_CONTACT_KIND[channel].value if channel in CHANNEL_CONTACT_KIND else channel
    status = next((c.status for c in candidate.contacts if c.kind == kind and c.value == address), None)
    if status is None:
        return "unreachable"
    if status != "active":
        return status
    if suppressed(conn, [(kind, address)]):
        return "suppressed"
    return None


def claim_answer(conn: Connection, inbound: Any, *, body: str, campaign: str, template: str,
                 detail: str | None = None) -> int | None:
    """Claim the answer to ``inbound`` (its touch row); return the new touch id, or None when it was claimed before."""
    key = answer_key(inbound.id)
    if conn.execute(select(touches.c.id).where(touches.c.claim_key == key)).scalar() is not None:
        return None
    now = utcnow()
    row = {name: None for name in TOUCH_COLUMNS}
    row.update(claim_key=key, person_key=inbound.person_key, customer_id=inbound.customer_id, campaign=campaign,
               purpose="service", channel=inbound.channel, contact_point_id=None, address=inbound.address,
               status="sending", detail=detail, template=template, body=body, body_hash=body_hash(body),
               created_at=now, updated_at=now, direction="out", in_reply_to=inbound.id)
    try:
        with conn.begin_nested():
            return insert_touches(conn, [row])[0]
    except IntegrityError:  # a concurrent handling of the same message claimed it first
        return None


def inbound_touch(conn: Connection, touch_id: int) -> Any:
    """The inbound touch row an answer is claimed for."""
    return conn.execute(select(touches.c.id, touches.c.person_key, touches.c.customer_id, touches.c.channel,
                               touches.c.address).where(touches.c.id == touch_id)).one()


def settle(engine: Engine, touch_id: int, *, status: str, provider_message_id: str | None = None,
           error_code: str | None = None, error_message: str | None = None) -> None:
    """Move a claimed answer on with what the provider said (sent, unknown or failed)."""
    move(engine, [{"touch_id": touch_id, "status": status, "provider_message_id": provider_message_id,
                   "error_code": error_code, "error_message": (error_message or "")[:500] or None,
                   "detail": None}])

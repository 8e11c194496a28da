"""Subject access and erasure: everything held about a customer, and removing it for good.

Erasing keeps what is not personal (purchase amounts and dates, consent dates, touch statistics)
and a salted hash of every address in ``suppressions``: an address imported again later arrives
blocked, so the person is never contacted again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from crm.cards import customer_card
from crm.db import write_tx
from crm.ledger import engagement
from crm.ledger.contacts import suppress
from crm.ledger.touches import strip_personal
from crm.models import CallTask, ContactPoint, Customer, Erasure, Touch, utcnow
from touchflow.errors import NotFound

customers = Customer.__table__
contacts = ContactPoint.__table__
touches = Touch.__table__
tasks = CallTask.__table__
erasures = Erasure.__table__


class PrivacyError(NotFound):
    """The customer is unknown."""


def export(engine: Engine, external_id: str) -> dict[str, Any]:
    """Everything held about one customer record (a subject access request)."""
    card = customer_card(engine, external_id)
    if card is None:
        raise PrivacyError(f"no customer with external id {external_id!r}")
    with engine.connect() as conn:
        cid = card["customer"]["id"]
        card["touches"] = [dict(r._mapping) for r in conn.execute(select(touches).where(touches.c.customer_id == cid)
                                                                  .order_by(touches.c.id))]
        card["engagements"] = engagement.of_touches(conn, [t["id"] for t in card["touches"]])
        card["call_tasks"] = [dict(r._mapping) for r in conn.execute(select(tasks).where(tasks.c.customer_id == cid))]
    return card


def erase(engine: Engine, external_id: str, reason: str = "erasure request") -> dict[str, int]:
    """Remove personal data of a customer record; suppress its addresses everywhere; keep non-personal statistics."""
    now = utcnow()
    with write_tx(engine) as conn:
        row = conn.execute(select(customers.c.id).where(customers.c.external_id == external_id)).first()
        if row is None:
            raise PrivacyError(f"no customer with external id {external_id!r}")
        cid = row.id
        points = conn.execute(select(contacts.c.id, contacts.c.kind, contacts.c.value)
                              .where(contacts.c.customer_id == cid)).all()
        for point in points:
            digest = suppress(conn, point.kind, point.value, reason)  # every record holding it is blocked too
            conn.execute(update(contacts).where(contacts.c.id == point.id).values(
                raw="", value=f"erased:{digest[:16]}", status_reason=f"erased: {reason}", updated_at=now))
        conn.execute(update(customers).where(customers.c.id == cid).values(
            external_id=f"erased:{hashlib.sha256(external_id.encode()).hexdigest()[:24]}", name="[erased]",
            first_name=None, birthday=None, gender=None, region=None, city=None, timezone=None, attributes={},
            updated_at=now))
        erased_touches = strip_personal(conn, cid)
        engagement.forget_urls(conn, cid)
        conn.execute(update(tasks).where(tasks.c.customer_id == cid).values(phone=None, script="[erased]", note=None))
        conn.execute(insert(erasures).values(customer_id=cid, reason=reason[:200], at=now))
    return {"contact_points": len(points), "touches": erased_touches}

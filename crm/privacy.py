"""Subject access and erasure: everything held about a customer, and removing it for good.

Erasing keeps what is not personal (purchase amounts and dates, consent dates, touch statistics)
and a salted hash of every address in ``suppressions``: an address imported again later arrives
blocked, so the person is never contacted again.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from crm.cards import customer_card
from crm.db import in_chunks, write_tx
from crm.models import (
    CallTask,
    ContactPoint,
    ContactStatus,
    Customer,
    InstanceKey,
    Suppression,
    Touch,
    utcnow,
)

customers = Customer.__table__
contacts = ContactPoint.__table__
touches = Touch.__table__
tasks = CallTask.__table__
suppressions = Suppression.__table__
keys = InstanceKey.__table__
SALT_NAME = "suppression_salt"


class PrivacyError(ValueError):
    """The customer is unknown."""


def salt(conn: Connection) -> str:
    """The installation's suppression salt (created on first use)."""
    value = conn.execute(select(keys.c.value).where(keys.c.name == SALT_NAME)).scalar()
    if value is None:
        value = secrets.token_hex(16)
        conn.execute(insert(keys).values(name=SALT_NAME, value=value, created_at=utcnow()))
    return value


def address_digest(salt_value: str, kind: str, value: str) -> str:
    """The salted hash kept for a suppressed address."""
    return hashlib.sha256(f"{salt_value}:{kind}:{value}".encode()).hexdigest()


def suppressed(conn: Connection, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (kind, normalised value) pairs are suppressed."""
    if not pairs or conn.execute(select(suppressions.c.id).limit(1)).first() is None:
        return set()
    salt_value = conn.execute(select(keys.c.value).where(keys.c.name == SALT_NAME)).scalar()
    if salt_value is None:
        return set()
    digests = {address_digest(salt_value, kind, value): (kind, value) for kind, value in pairs}
    found = set()
    for chunk in in_chunks(list(digests)):
        found.update(conn.execute(select(suppressions.c.hash).where(suppressions.c.hash.in_(chunk))).scalars())
    return {digests[d] for d in found}


def export(engine: Engine, external_id: str) -> dict[str, Any]:
    """Everything held about one customer record (a subject access request)."""
    card = customer_card(engine, external_id)
    if card is None:
        raise PrivacyError(f"no customer with external id {external_id!r}")
    with engine.connect() as conn:
        cid = card["customer"]["id"]
        card["touches"] = [dict(r._mapping) for r in conn.execute(select(touches).where(touches.c.customer_id == cid)
                                                                  .order_by(touches.c.id))]
        card["call_tasks"] = [dict(r._mapping) for r in conn.execute(select(tasks).where(tasks.c.customer_id == cid))]
    return card


def erase(engine: Engine, external_id: str, reason: str = "erasure request") -> dict[str, int]:
    """Remove personal data of a customer record; suppress its addresses; keep non-personal statistics."""
    now = utcnow()
    with write_tx(engine) as conn:
        row = conn.execute(select(customers.c.id).where(customers.c.external_id == external_id)).first()
        if row is None:
            raise PrivacyError(f"no customer with external id {external_id!r}")
        cid = row.id
        salt_value = salt(conn)
        points = conn.execute(select(contacts.c.id, contacts.c.kind, contacts.c.value)
                              .where(contacts.c.customer_id == cid)).all()
        for point in points:
            digest = address_digest(salt_value, point.kind, point.value)
            try:
                with conn.begin_nested():
                    conn.execute(insert(suppressions).values(hash=digest, kind=point.kind, reason=reason,
                                                             created_at=now))
            except IntegrityError:
                pass  # already suppressed
            conn.execute(update(contacts).where(contacts.c.id == point.id).values(
                raw="", value=f"erased:{digest[:16]}", status=ContactStatus.blocked.value,
                status_reason=f"erased: {reason}", updated_at=now))
        conn.execute(update(customers).where(customers.c.id == cid).values(
            external_id=f"erased:{hashlib.sha256(external_id.encode()).hexdigest()[:24]}", name="[erased]",
            first_name=None, birthday=None, region=None, timezone=None, attributes={}, updated_at=now))
        erased_touches = conn.execute(update(touches).where(touches.c.customer_id == cid).values(
            address=None, body=None, detail=None, error_message=None)).rowcount
        conn.execute(update(tasks).where(tasks.c.customer_id == cid).values(phone=None, script="[erased]", note=None))
    return {"contact_points": len(points), "touches": erased_touches or 0}

"""Contact points as the ledger sees them: whether an address may be used, for every record that holds it.

An address belongs to a person, not to one record: a bounce, a block or an erasure marks the
address on every record holding it, and ``records_sharing`` finds everyone an opt-out speaks for
(the records holding the address, and every record of their persons). Erased addresses are kept
only as salted hashes (``suppressions``): imported again, they arrive blocked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from crm.db import in_chunks, one_of
from crm.keys import SUPPRESSION_SALT, stored_key_in
from crm.models import ContactKind, ContactPoint, ContactStatus, Customer, InstanceKey, Suppression, utcnow

contacts = ContactPoint.__table__
customers = Customer.__table__
suppressions = Suppression.__table__
keys = InstanceKey.__table__


def records_sharing(conn: Connection, *, customer_ids: Iterable[int] = (),
                    addresses: Iterable[tuple[str, str]] = ()) -> list[int]:
    """Every record an opt-out speaks for: those holding one of ``addresses`` or given, and all records of their persons."""
    found = set(customer_ids)
    for kind, value in addresses:
        found.update(conn.execute(select(contacts.c.customer_id).where(contacts.c.kind == kind,
                                                                       contacts.c.value == value)).scalars())
    persons: set[int] = set()
    for chunk in in_chunks(sorted(found)):
        persons.update(p or c for c, p in conn.execute(select(customers.c.id, customers.c.person_id)
                                                       .where(one_of(conn, customers.c.id, chunk))))
    for chunk in in_chunks(sorted(persons)):
        found.update(conn.execute(select(customers.c.id).where(one_of(conn, customers.c.person_id, chunk))).scalars())
    return sorted(found)


def address_of(conn: Connection, contact_point_id: int) -> tuple[str, str] | None:
    """(kind, value) of a contact point."""
    row = conn.execute(select(contacts.c.kind, contacts.c.value).where(contacts.c.id == contact_point_id)).first()
    return (row.kind, row.value) if row else None


def mark(conn: Connection, changes: list[dict[str, Any]]) -> None:
    """Status moves of contact points: ``{b_id, status, status_reason, updated_at}`` each."""
    if changes:
        conn.execute(update(contacts).where(contacts.c.id == bindparam("b_id"))
                     .values(status=bindparam("status"), status_reason=bindparam("status_reason"),
                             updated_at=bindparam("updated_at")), changes)


def mark_address(conn: Connection, kind: str, value: str, status: str, reason: str) -> int:
    """Set the status of an address on every record holding it (superseded copies stay superseded)."""
    return conn.execute(update(contacts).where(contacts.c.kind == kind, contacts.c.value == value,
                                               contacts.c.status != ContactStatus.superseded.value)
                        .values(status=status, status_reason=reason[:500], updated_at=utcnow())).rowcount or 0


def bind(conn: Connection, customer_id: int, kind: str, value: str, now: datetime) -> bool:
    """Make ``value`` an active contact point of the customer (a Telegram chat bound by /start); True when new."""
    existing = conn.execute(select(contacts.c.id, contacts.c.status).where(
        contacts.c.customer_id == customer_id, contacts.c.kind == kind, contacts.c.value == value)).first()
    status = ContactStatus.blocked.value if (kind, value) in suppressed(conn, [(kind, value)]) else \
        ContactStatus.active.value
    if existing is None:
        conn.execute(insert(contacts).values(customer_id=customer_id, kind=kind, raw=value, value=value,
                                             status=status, created_at=now, updated_at=now))
        return True
    if existing.status != status:
        mark(conn, [{"b_id": existing.id, "status": status, "updated_at": now,
                     "status_reason": "re-linked with /start" if status == "active" else "suppressed"}])
    return False


def address_digest(salt: str, kind: str, value: str) -> str:
    """The salted hash kept for a suppressed address."""
    return hashlib.sha256(f"{salt}:{kind}:{value}".encode()).hexdigest()


def suppress(conn: Connection, kind: str, value: str, reason: str) -> str:
    """Never contact this address again: keep its salted hash, block it on every record; return the hash."""
    digest = address_digest(stored_key_in(conn, SUPPRESSION_SALT), kind, value)
    try:
        with conn.begin_nested():
            conn.execute(insert(suppressions).values(hash=digest, kind=kind, reason=reason[:200], created_at=utcnow()))
    except IntegrityError:
        pass  # already suppressed
    mark_address(conn, kind, value, ContactStatus.blocked.value, f"suppressed: {reason}")
    return digest


def suppressed(conn: Connection, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (kind, normalised value) pairs are suppressed."""
    if not pairs or conn.execute(select(suppressions.c.id).limit(1)).first() is None:
        return set()
    salt = conn.execute(select(keys.c.value).where(keys.c.name == SUPPRESSION_SALT)).scalar()
    if salt is None:
        return set()
    digests = {address_digest(salt, kind, value): (kind, value) for kind, value in pairs}
    found = set()
    for chunk in in_chunks(list(digests)):
        found.update(conn.execute(select(suppressions.c.hash).where(suppressions.c.hash.in_(chunk))).scalars())
    return {digests[d] for d in found}


KINDS = tuple(kind.value for kind in ContactKind)

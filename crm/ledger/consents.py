"""The consent ledger: grants and revocations, appended and never edited; an opt-out speaks for the person.

``record`` applies a person's word (one-click unsubscribe, STOP, /stop, "do not call me", a
provider's opt-out) to every record holding the address and every record of their persons, and
adds nothing where that record's latest entry already says the same (a replayed request leaves
the ledger as it was). Decisions read consent per person too (``claims.load_candidates``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from crm.bulk import bulk_insert
from crm.db import in_chunks, one_of
from crm.ledger.contacts import records_sharing
from crm.models import Consent, Customer, utcnow

consents = Consent.__table__
customers = Customer.__table__
COLUMNS = ("customer_id", "channel", "purpose", "granted", "at", "source", "wording", "recorded_at")


def append(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Append ledger entries as given (an import: each row holds ``COLUMNS``)."""
    bulk_insert(conn, consents, COLUMNS, rows)


def record(conn: Connection, *, channel: str, purpose: str, granted: bool, source: str, wording: str | None,
           customer_ids: Iterable[int] = (), addresses: Iterable[tuple[str, str]] = (),
           at: datetime | None = None) -> int:
    """A person's grant or revocation for ``channel`` / ``purpose``; return the entries added.

    Covers the given records, the records holding ``addresses`` and every record of their
    persons; a record whose latest entry already says the same gets none.
    """
    ids = records_sharing(conn, customer_ids=customer_ids, addresses=addresses)
    if not ids:
        return 0
    if conn.dialect.name == "postgresql":  # concurrent replays of one request add one entry, not two
        for chunk in in_chunks(ids):
            conn.execute(select(customers.c.id).where(one_of(conn, customers.c.id, chunk)).with_for_update()).all()
    latest = _latest(conn, ids, channel, purpose)
    now = utcnow()
    rows = [{"customer_id": cid, "channel": channel, "purpose": purpose, "granted": granted, "at": at or now,
             "source": source[:200], "wording": wording, "recorded_at": now}
            for cid in ids if latest.get(cid) is not granted]
    append(conn, rows)
    return len(rows)


def _latest(conn: Connection, ids: list[int], channel: str, purpose: str) -> dict[int, bool]:
    """Each record's latest entry for exactly this channel and purpose."""
    latest: dict[int, tuple[Any, int, bool]] = {}
    for chunk in in_chunks(ids):
        for row in conn.execute(select(consents.c.customer_id, consents.c.at, consents.c.id, consents.c.granted)
                                .where(one_of(conn, consents.c.customer_id, chunk), consents.c.channel == channel,
                                       consents.c.purpose == purpose)):
            if row.customer_id not in latest or (row.at, row.id) > latest[row.customer_id][:2]:
                latest[row.customer_id] = (row.at, row.id, row.granted)
    return {cid: entry[2] for cid, entry in latest.items()}

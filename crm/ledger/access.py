"""The access log: every view of a person's data, every export and every erasure, by whom, from where.

Written here and nowhere else, appended and never edited, and chained like the rest of the
history (``audit.CHAINS["access_log"]``): ``compliance verify`` finds a row edited or deleted
after its seal. The web server seals it every few seconds and when it stops.

A row names the customer record and the person by internal ids, never by name, address or
external id: erasing a customer must leave nothing personal behind, and a chained row cannot be
stripped later. ``detail`` holds what was asked (filters' names, counts), never what was seen.

The view is recorded before the data is handed over (the caller records, then reads): a response
that left the server always has its row, even when the database fails just after.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from crm.db import write_tx
from crm.models import AccessLog, Customer, utcnow

log = AccessLog.__table__
customers = Customer.__table__

ACTIONS = ("customers", "card", "history", "timeline", "consents", "export", "erasure")
COLUMNS = ("id", "at", "user_id", "username", "role", "action", "customer_id", "person_id", "client", "method",
           "route", "detail")


def record(engine: Engine, *, user_id: int | None, username: str, role: str, action: str, client: str,
           method: str, route: str, customer_id: int | None = None, detail: str | None = None,
           at: datetime | None = None) -> int:
    """Append one row (committed on return); the person is looked up from the customer record. Return its id."""
    if action not in ACTIONS:
        raise ValueError(f"unknown access-log action {action!r}; one of: {', '.join(ACTIONS)}")
    with write_tx(engine) as conn:
        person = None
        if customer_id is not None:
            person = conn.execute(select(func.coalesce(customers.c.person_id, customers.c.id))
                                  .where(customers.c.id == customer_id)).scalar()
        return conn.execute(insert(log).values(
            at=at or utcnow(), user_id=user_id, username=username[:64], role=role[:16], action=action,
            customer_id=customer_id, person_id=person, client=(client or "")[:64], method=method[:8],
            route=route[:200], detail=detail[:500] if detail else None).returning(log.c.id)).scalar_one()


def record_by_external_id(engine: Engine, external_id: str, *, action: str, username: str, role: str,
                          client: str, method: str, route: str, detail: str | None = None) -> int | None:
    """Append a row for the record with ``external_id`` (the command line names customers so); None if unknown."""
    with engine.connect() as conn:
        customer_id = conn.execute(select(customers.c.id).where(customers.c.external_id == external_id)).scalar()
    if customer_id is None:
        return None
    return record(engine, user_id=None, username=username, role=role, action=action, client=client, method=method,
                  route=route, customer_id=customer_id, detail=detail)


def entries(engine: Engine, *, after: int | None = None, limit: int = 100, username: str | None = None,
            customer_id: int | None = None, person_id: int | None = None, action: str | None = None,
            since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    """Rows in id order after ``after`` (keyset paging), filtered; at most ``limit``."""
    query = select(*(log.c[c] for c in COLUMNS)).order_by(log.c.id).limit(limit)
    filters = {log.c.username: username, log.c.customer_id: customer_id, log.c.person_id: person_id,
               log.c.action: action}
    query = query.where(*(column == value for column, value in filters.items() if value is not None))
    if after is not None:
        query = query.where(log.c.id > after)
    if since is not None:
        query = query.where(log.c.at >= since)
    if until is not None:
        query = query.where(log.c.at <= until)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV (a header, instants in ISO 8601 UTC), for a spreadsheet or an auditor."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c].isoformat() if isinstance(row[c], datetime) else row[c]
                         for c in COLUMNS])
    return out.getvalue()

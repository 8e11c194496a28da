"""Journey states: each person's place in a journey — the only writer of ``journey_states``.

A person enters once (unique journey and person); a runner leases the states that are due
(a conditional update: another runner's live lease is left alone), moves each one and hands the
lease back in the same statement, only if it still holds it. A runner that died leaves leases that
expire, and the next runner takes them over; the step it may have sent is recognised by its touch's
claim key (``journey:<name>:<step>:<person>:<attempt>``), so it is never sent twice.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.engine import Engine

from crm.db import in_chunks, one_of, write_tx
from crm.models import JourneyState, utcnow

states = JourneyState.__table__
MOVED = ("step", "status", "due_at", "step_at", "attempts", "last_touch_id", "left_reason")


def enrol(engine: Engine, journey: str, people: list[tuple[int, int]], *, first_step: str, now: datetime,
          holdout: set[int] = frozenset()) -> list[dict[str, Any]]:
    """Enter the persons of ``people`` ((customer, person) pairs) not yet in the journey; return the new states.

    A person in ``holdout`` enters as the journey's control group (never contacted). Two runners
    enrolling at once: the unique (journey, person) keeps one state each.
    """
    fresh: dict[int, int] = {}
    for customer_id, person in people:
        fresh.setdefault(person, customer_id)
    with write_tx(engine) as conn:
        for chunk in in_chunks(sorted(fresh)):
            for person in conn.execute(select(states.c.person_id).where(
                    states.c.journey == journey, one_of(conn, states.c.person_id, chunk))).scalars():
                fresh.pop(person, None)
        rows = [{"journey": journey, "person_id": person, "customer_id": customer_id, "step": first_step,
                 "status": "holdout" if person in holdout else "active", "due_at": now, "entered_at": now,
                 "step_at": now, "attempts": 0, "updated_at": now,
                 "left_reason": "holdout" if person in holdout else None}
                for person, customer_id in sorted(fresh.items())]
        if rows:
            conn.execute(_insert_new(conn), rows)
    return rows


def _insert_new(conn):
    """An insert that leaves a person already entered (by another runner meanwhile) alone."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(states).on_conflict_do_nothing(constraint="uq_journey_states_journey_person")
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(states).on_conflict_do_nothing(index_elements=["journey", "person_id"])


def lease(engine: Engine, journey: str, *, now: datetime, owner: str, limit: int = 1000,
          seconds: float = 300) -> list[dict[str, Any]]:
    """Lease up to ``limit`` active states due by ``now`` to ``owner`` for ``seconds``; return them."""
    free = or_(states.c.lease_until.is_(None), states.c.lease_until < now)
    due = and_(states.c.journey == journey, states.c.status == "active", states.c.due_at <= now, free)
    until = now + timedelta(seconds=seconds)
    with write_tx(engine) as conn:
        ids = list(conn.execute(select(states.c.id).where(due).order_by(states.c.due_at, states.c.id)
                                .limit(limit)).scalars())
        if not ids:
            return []
        # the condition again: on PostgreSQL another runner may have leased some of them since the select
        conn.execute(update(states).where(states.c.id.in_(ids), due).values(lease_owner=owner, lease_until=until))
        return [dict(row._mapping) for row in conn.execute(
            select(states).where(states.c.id.in_(ids), states.c.lease_owner == owner, states.c.lease_until == until)
            .order_by(states.c.id))]


def move(engine: Engine, owner: str, changes: list[dict[str, Any]], *, now: datetime) -> int:
    """Apply ``changes`` (``id`` and any of ``MOVED``) to states ``owner`` still leases, handing the leases back.

    A state whose lease another runner took over (this one stalled past it) is left alone. Returns
    how many moved.
    """
    moved = 0
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for change in changes:
        groups.setdefault(tuple(sorted(k for k in change if k in MOVED)), []).append(change)
    with write_tx(engine) as conn:
        for keys, rows in groups.items():
            statement = (update(states).where(states.c.id == bindparam("_id"), states.c.lease_owner == owner)
                         .values(**{k: bindparam(f"_{k}") for k in keys}, lease_owner=None, lease_until=None,
                                 updated_at=now))
            result = conn.execute(statement, [{"_id": r["id"], **{f"_{k}": r[k] for k in keys}} for r in rows])
            moved += result.rowcount or 0
    return moved


def status(engine: Engine, journey: str, *, now: datetime | None = None) -> dict[str, Any]:
    """How many people are at each step (and how many of them are due), done, in the holdout, and why people left."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = conn.execute(select(states.c.status, states.c.step, states.c.left_reason,
                                   func.count().label("n"),
                                   func.sum(case((states.c.due_at <= now, 1), else_=0)).label("due"))
                            .where(states.c.journey == journey)
                            .group_by(states.c.status, states.c.step, states.c.left_reason)).all()
    at_step: dict[str, dict[str, int]] = {}
    left: Counter = Counter()
    totals: Counter = Counter()
    for row in rows:
        totals[row.status] += row.n
        if row.status == "active":
            entry = at_step.setdefault(row.step, {"people": 0, "due": 0})
            entry["people"] += row.n
            entry["due"] += int(row.due or 0)
        elif row.status == "left":
            left[row.left_reason or "unknown"] += row.n
    return {"journey": journey, "entered": sum(totals.values()), "active": totals["active"], "done": totals["done"],
            "holdout": totals["holdout"], "left": totals["left"], "at_step": at_step, "left_because": dict(left)}

"""Status moves of touches: forward only, each one an event, and the caller told which moves happened.

    deferred → claimed → sending → unknown → sent → delivered
                                          ↘ failed / skipped (final)

A move that would go backwards (a replayed or late report, a run that lost its claim to the
reaper) does not happen, and ``move`` leaves it out of what it returns: a run hands a touch to a
provider only when its move to ``sending`` happened. ``unknown`` (handed over, no answer) may
still become ``sent``, ``delivered`` or ``failed`` when a definite answer arrives.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.engine import Connection, Engine

from crm.bulk import bulk_insert
from crm.db import in_chunks, one_of, write_tx
from crm.ledger.touches import EVENT_COLUMNS
from crm.models import ContactLock, Touch, TouchEvent, utcnow

touches = Touch.__table__
events = TouchEvent.__table__
locks = ContactLock.__table__

ORDER = {"deferred": 0, "claimed": 1, "sending": 2, "unknown": 3, "sent": 4, "delivered": 5, "failed": 5,
         "skipped": 5}
FINAL = ("delivered", "failed", "skipped")
RELEASING = ("failed", "skipped")  # not delivered for sure: the person's locks are freed
KEPT = ("provider_message_id", "error_code", "error_message", "reason", "detail", "sent_at", "delivered_at")
_TEXT_KEPT = KEPT[:5]


def allowed(old: str | None, new: str) -> bool:
    """Whether a touch in status ``old`` may move to ``new``."""
    return old is not None and old not in FINAL and ORDER.get(old, 9) < ORDER[new]


def move(engine: Engine, moves: list[dict[str, Any]], *, at: datetime | None = None) -> set[int]:
    """Apply status moves ``{touch_id, status, detail?, provider_message_id?, error_code?, error_message?, reason?}``.

    Returns the ids of the touches that moved. Every move that happens is also an event carrying
    what it set. A few statements per call, whatever the number of moves.
    """
    if not moves:
        return set()
    with write_tx(engine) as conn:
        return move_in(conn, moves, at=at or utcnow())


def move_in(conn: Connection, moves: list[dict[str, Any]], *, at: datetime) -> set[int]:
    """``move`` inside a write transaction the caller holds."""
    current: dict[int, str] = {}
    for chunk in in_chunks([m["touch_id"] for m in moves]):
        query = select(touches.c.id, touches.c.status).where(one_of(conn, touches.c.id, chunk))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        current.update(dict(conn.execute(query).all()))
    updates, new_events, released = [], [], []
    for item in moves:
        touch_id, status = item["touch_id"], item["status"]
        if not allowed(current.get(touch_id), status):
            continue
        current[touch_id] = status
        row = {"b_id": touch_id, "status": status, "updated_at": at,
               "sent_at": at if status == "sent" else None, "delivered_at": at if status == "delivered" else None}
        row.update({key: item.get(key) for key in _TEXT_KEPT})
        updates.append(row)
        new_events.append({"touch_id": touch_id, "status": status, "at": at,
                           **{key: item.get(key) for key in EVENT_COLUMNS[3:]}})
        if status in RELEASING:
            released.append(touch_id)
    if updates:
        _update(conn, updates)
        bulk_insert(conn, events, EVENT_COLUMNS, new_events)
    for chunk in in_chunks(released):
        conn.execute(delete(locks).where(one_of(conn, locks.c.touch_id, chunk), locks.c.scope != "call"))
    return {row["b_id"] for row in updates}


def _update(conn: Connection, updates: list[dict[str, Any]]) -> None:
    """Write the moves: values a move leaves out keep what the touch had (COALESCE)."""
    if conn.dialect.name == "postgresql" and len(updates) > 1:
        _update_from_arrays(conn, updates)
        return
    if conn.dialect.name == "sqlite":
        _update_rows(conn, updates)
        return
    keep = {name: func.coalesce(bindparam(name, type_=touches.c[name].type), touches.c[name]) for name in KEPT}
    conn.execute(update(touches).where(touches.c.id == bindparam("b_id"))
                 .values(status=bindparam("status"), updated_at=bindparam("updated_at", type_=touches.c.updated_at.type),
                         **keep), updates)


_MOVE_ROW = ("UPDATE touches SET status = ?, updated_at = ?, "
             + ", ".join(f"{name} = COALESCE(?, {name})" for name in KEPT) + " WHERE id = ?")


def _update_rows(conn: Connection, updates: list[dict[str, Any]]) -> None:
    """The moves as one executemany of plain tuples (SQLite): the instants converted once per value (a move's rows
    share one), not once per row and column as Core would; the same stored values (the columns' own converters)."""
    convert = touches.c.updated_at.type._cached_bind_processor(conn.dialect) or (lambda value: value)
    stored: dict[Any, Any] = {None: None}

    def instant(value: Any) -> Any:
        if value not in stored:
            stored[value] = convert(value)
        return stored[value]

    conn.exec_driver_sql(_MOVE_ROW, [(row["status"], instant(row["updated_at"]),
                                      *[row[name] for name in _TEXT_KEPT], instant(row["sent_at"]),
                                      instant(row["delivered_at"]), row["b_id"]) for row in updates])


_MOVE_FROM_ARRAYS = text(
    "UPDATE touches AS t SET status = v.status, updated_at = v.updated_at, "
    + ", ".join(f"{name} = COALESCE(v.{name}, t.{name})" for name in KEPT)
    + " FROM unnest(CAST(:ids AS integer[]), CAST(:status AS text[]), CAST(:updated_at AS timestamp[]), "
    + ", ".join(f"CAST(:{name} AS text[])" for name in _TEXT_KEPT)
    + ", CAST(:sent_at AS timestamp[]), CAST(:delivered_at AS timestamp[])) "
    + f"AS v(id, status, updated_at, {', '.join(_TEXT_KEPT)}, sent_at, delivered_at) WHERE t.id = v.id")


def _update_from_arrays(conn: Connection, updates: list[dict[str, Any]]) -> None:
    """The moves as one UPDATE over arrays (PostgreSQL): one statement for the server, not one per row."""
    stamp = touches.c.updated_at.type.process_bind_param  # naive UTC, as every instant is stored
    params: dict[str, list[Any]] = {"ids": [row["b_id"] for row in updates],
                                    "status": [row["status"] for row in updates]}
    for name in ("updated_at", "sent_at", "delivered_at"):
        params[name] = [stamp(row[name], conn.dialect) for row in updates]
    for name in _TEXT_KEPT:
        params[name] = [None if row[name] is None else str(row[name]) for row in updates]
    conn.execute(_MOVE_FROM_ARRAYS, params)

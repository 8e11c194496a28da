"""Each touch's mutable state checked against its (chained) events, its body against body_hash, its address
against address_digest.

A touch's status, reason, error fields, provider id, sent_at and delivered_at change with its status
moves, so no chain covers them: they must equal the fold of the touch's events (``_fold``). Touches
up to the ``MARKER`` instance key were written before events carried the move fields (migration
0008) and are not checked; ``_marker`` reads that key and checks it is plausible.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime, func, select, type_coerce
from sqlalchemy.engine import Connection

from crm.ledger.audit.report import Verification
from crm.ledger.touches import WRITTEN_SENT
from crm.models import Erasure, Touch, TouchEvent

touches = Touch.__table__
events = TouchEvent.__table__
erasures = Erasure.__table__

MARKER = "history_v2_after_touch"  # instance key: touches up to this id have events without the move fields
STATE = ("status", "reason", "error_code", "provider_message_id", "sent_at", "delivered_at")


def _marker(conn: Connection, value: str | None, report: Verification) -> int:
    """The newest touch written before events carried the move fields (migration 0008); checked for plausibility."""
    if value is None:
        report.problem("history keys", f"the instance key {MARKER!r} (written by migration 0008) is missing: it was "
                       "deleted; every touch's state is checked against its events")
        return 0
    try:
        marker = int(value)
    except ValueError:
        report.problem("history keys", f"the instance key {MARKER!r} holds {value!r}, not a touch id: it was edited")
        return 0
    later = conn.execute(select(func.min(touches.c.id)).where(touches.c.id <= marker,
                                                               touches.c.address_digest.is_not(None))).scalar()
    if later is not None:  # touches before migration 0008 have no digest: the marker was moved up
        report.problem("history keys", f"the instance key {MARKER!r} ({marker}) was raised: touch {later}, written "
                       "after migration 0008, lies below it; touches after it are checked")
        return later - 1
    return marker


def _fold(rows: list[Any]) -> tuple[Any, ...]:
    """A touch's state as its events write it (``STATE`` order), the way ``touches`` and ``moves`` do.

    The first event is the state the touch was written in (a touch written already sent, delivered
    or failed, a document or a call's outcome, is written with sent_at = its creation); each later
    event is a move: it sets what it carries and leaves the rest (COALESCE), ``sent_at`` and
    ``delivered_at`` being the instants of the ``sent`` and ``delivered`` moves.
    """
    first = rows[0]
    status, reason, code, message_id = first.status, first.reason, first.error_code, first.provider_message_id
    sent_at, delivered_at = (_naive(first.at) if first.status in WRITTEN_SENT else None), None
    for row in rows[1:]:
        status = row.status
        reason = reason if row.reason is None else row.reason
        code = code if row.error_code is None else row.error_code
        message_id = message_id if row.provider_message_id is None else row.provider_message_id
        if row.status == "sent":
            sent_at = _naive(row.at)
        elif row.status == "delivered":
            delivered_at = _naive(row.at)
    return status, reason, code, message_id, sent_at, delivered_at


def _naive(value: Any) -> Any:
    """An instant as naive UTC: moves on SQLite store sent_at / delivered_at as text with "+00:00", read back aware."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _show(value: Any) -> str:
    return f"{value.isoformat()}+00:00" if isinstance(value, datetime) else repr(value)


def _stored_instant(column: Any) -> Any:
    """An instant column read as the naive UTC it is stored as (no conversion to aware and back)."""
    return type_coerce(column, DateTime()).label(column.name)


_TOUCH_COLUMNS = [touches.c.id, touches.c.customer_id, *[touches.c[n] for n in STATE[:4]],
                 _stored_instant(touches.c.sent_at), _stored_instant(touches.c.delivered_at), touches.c.address,
                 touches.c.address_digest, touches.c.body, touches.c.body_hash]
_EVENT_COLUMNS = [events.c.touch_id, events.c.status, _stored_instant(events.c.at), events.c.reason,
                 events.c.error_code, events.c.provider_message_id]


def _verify_state(conn: Connection, marker: int, history_key: str | None, report: Verification) -> None:
    """Every touch after ``marker``: its state equals the fold of its events; body and address match their hashes.

    Streams touches in id order beside their events in (touch_id, id) order (the index
    ``ix_touch_events_touch_id``), a page of touches at a time.
    """
    erased = set(conn.execute(select(erasures.c.customer_id).distinct()).scalars())
    key = history_key.encode() if history_key else None
    after, checked = marker, 0
    while True:
        page = conn.execute(select(*_TOUCH_COLUMNS).where(touches.c.id > after)
                            .order_by(touches.c.id).limit(5000)).all()
        if not page:
            break
        grouped = _events_by_touch(conn, after, page[-1].id)
        for touch in page:
            _check_touch(touch, grouped.pop(touch.id, None), erased, key, report)
        for touch_id, rows in grouped.items():
            _orphan_events(touch_id, len(rows), report)
        checked += len(page)
        after = page[-1].id
    for touch_id, count in conn.execute(select(events.c.touch_id, func.count()).where(events.c.touch_id > after)
                                        .group_by(events.c.touch_id).order_by(events.c.touch_id)):
        _orphan_events(touch_id, count, report)
    report.checked["touch state"] = checked


def _events_by_touch(conn: Connection, after: int, upto: int) -> dict[int, list]:
    """The events of touches ``after`` < id <= ``upto``, grouped by touch, each touch's in id order."""
    grouped: dict[int, list] = defaultdict(list)
    for row in conn.execute(select(*_EVENT_COLUMNS)
                            .where(events.c.touch_id > after, events.c.touch_id <= upto)
                            .order_by(events.c.touch_id, events.c.id)):
        grouped[row.touch_id].append(row)
    return grouped


def _orphan_events(touch_id: int, count: int, report: Verification) -> None:
    report.problem("touch events", f"touch_events: {count} events of touch {touch_id}, which is missing: the "
                                   "touch was deleted")


def _check_touch(touch: Any, rows: list[Any] | None, erased: set[int], key: bytes | None,
                 report: Verification) -> None:
    """One touch against its events, its body_hash and its address_digest."""
    if not rows:
        report.problem("touch state", f"touch {touch.id} has no events: its first event was deleted")
    else:
        folded = _fold(rows)
        actual = (touch.status, touch.reason, touch.error_code, touch.provider_message_id, _naive(touch.sent_at),
                  _naive(touch.delivered_at))
        if actual != folded:
            changed = "; ".join(f"{name} is {_show(a)} but its events say {_show(e)}"
                                for name, a, e in zip(STATE, actual, folded) if a != e)
            report.problem("touch state", f"touch {touch.id}: {changed} (the touch or its events were edited, or "
                                          "an event was deleted)")
    if touch.body is not None and hashlib.sha256(touch.body.encode()).hexdigest() != touch.body_hash:
        report.problem("touch text", f"touch {touch.id}: its message text does not match its body_hash: the text "
                                     "was edited")
    if touch.address is not None:
        if touch.address_digest is None or key is None or not hmac.compare_digest(
                hmac.new(key, touch.address.encode(), hashlib.sha256).hexdigest().encode(),
                touch.address_digest.encode()):
            report.problem("touch address", f"touch {touch.id}: its address does not match its address_digest: the "
                           "address was edited" + ("" if key else " (or the instance key 'history' was deleted)"))
    elif touch.address_digest is not None and touch.customer_id not in erased:
        report.problem("touch address", f"touch {touch.id}: its address was removed, but customer "
                                        f"{touch.customer_id} has no erasure recorded")

"""Aggregates of the history for dashboards: touches per day and channel, reasons for not contacting.

Read-only. Days are UTC calendar days, counted by the database (one row per day and channel).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from crm.models import Touch

touches = Touch.__table__
DECIDED = ("skipped", "deferred")


def _since(days: int, today: date) -> datetime:
    return datetime.combine(today - timedelta(days=days - 1), time(), tzinfo=timezone.utc)


def touches_per_day(engine: Engine, *, days: int = 30, today: date | None = None
                    ) -> tuple[list[str], dict[str, list[int]]]:
    """(the days, {channel: touches made per day}) over the last ``days`` days; decisions not counted."""
    today = today or datetime.now(timezone.utc).date()
    day = func.date(touches.c.created_at)
    query = (select(day, touches.c.channel, func.count())
             .where(touches.c.created_at >= _since(days, today), touches.c.status.notin_(DECIDED),
                    touches.c.channel.isnot(None))
             .group_by(day, touches.c.channel))
    labels = [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    index = {label: i for i, label in enumerate(labels)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    with engine.connect() as conn:
        for on, channel, count in conn.execute(query):
            if str(on)[:10] in index:
                series[channel][index[str(on)[:10]]] += count
    return labels, dict(sorted(series.items()))


def not_contacted(engine: Engine, *, days: int = 30, today: date | None = None) -> dict[str, int]:
    """{reason: decisions not to contact} over the last ``days`` days."""
    today = today or datetime.now(timezone.utc).date()
    query = (select(touches.c.reason, func.count())
             .where(touches.c.created_at >= _since(days, today), touches.c.status.in_(DECIDED))
             .group_by(touches.c.reason))
    with engine.connect() as conn:
        return {reason or "unknown": count for reason, count in conn.execute(query)}

"""Precompute what segments ask of purchase history: per-customer statistics, RFM, predicted needs.

``refresh(engine)`` rebuilds everything; ``refresh(engine, customer_ids)`` only those customers'
statistics and predictions (RFM quintiles are always recomputed over the whole base, since a
quintile is relative to everyone). Importing purchases or events calls the incremental form.

Predicted needs follow article 000:

* replenishment, per customer and category / product: purchases on the same day are summed; for
  each consecutive pair the units used per day are ``quantity / days until the next purchase``;
  their average is the customer's daily use; the run-out date is
  ``last purchase date + last quantity / average daily use``. Fewer than two purchase days give no
  date and a note saying so.
* service intervals, per customer and event kind: the interval is the customer's attribute
  ``<kind>_interval_days`` when present, else the median of their own intervals; due on
  ``last visit + interval``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, literal, select, update
from sqlalchemy.engine import Connection, Engine

from crm.bulk import bulk_insert
from crm.db import in_chunks, write_tx
from crm.models import (
    Customer,
    CustomerStats,
    Prediction,
    Purchase,
    ServiceEvent,
    utcnow,
)
from segments.compile import _RFM_GRID
from segments.sqlfuncs import epoch_day

customers = Customer.__table__
stats = CustomerStats.__table__
predictions = Prediction.__table__
purchases = Purchase.__table__
events = ServiceEvent.__table__
PAGE = 20000
PREDICTION_COLUMNS = ("customer_id", "basis", "key", "observations", "last_on", "last_quantity", "avg_daily_use",
                      "interval_days", "interval_source", "due_on", "note", "refreshed_at")


def refresh(engine: Engine, customer_ids: Iterable[int] | None = None,
            scopes: tuple[str, ...] | None = None) -> dict[str, int]:
    """Recompute statistics, RFM and predictions (for ``customer_ids`` only, when given).

    ``scopes``: what replenishment is predicted per (default TOUCHFLOW_REPLENISHMENT_SCOPES).
    """
    ids = None if customer_ids is None else sorted(set(customer_ids))
    scopes = scopes or replenishment_scopes()
    with write_tx(engine) as conn:
        counts = {"customers_with_purchases": _refresh_stats(conn, ids)}
        _refresh_rfm(conn)
        counts["replenishment"] = _refresh_replenishment(conn, ids, scopes)
        counts["service"] = _refresh_service(conn, ids)
    return counts


def _scope(column: Any, ids: list[int] | None) -> list[Any]:
    return [] if ids is None else [column.in_(ids)]


def _refresh_stats(conn: Connection, ids: list[int] | None) -> int:
    batches = [None] if ids is None else list(in_chunks(ids))
    total = 0
    for batch in batches:
        conn.execute(delete(stats).where(*_scope(stats.c.customer_id, batch)))
        first, last = func.min(purchases.c.purchased_on), func.max(purchases.c.purchased_on)
        days = func.count(purchases.c.purchased_on.distinct())
        amount = func.sum(purchases.c.amount)
        query = (
            select(purchases.c.customer_id, func.count(), days, func.coalesce(amount, 0),
                   func.coalesce(amount, 0) / func.count(), first, last, epoch_day(first), epoch_day(last),
                   case((days > 1, (epoch_day(last) - epoch_day(first)) * 1.0 / (days - 1)), else_=None),
                   literal(utcnow(), type_=stats.c.refreshed_at.type))
            .where(*_scope(purchases.c.customer_id, batch))
            .group_by(purchases.c.customer_id)
        )
        conn.execute(insert(stats).from_select(
            ["customer_id", "purchase_count", "purchase_days", "total_amount", "avg_check", "first_purchase_on",
             "last_purchase_on", "first_day", "last_day", "aipt_days", "refreshed_at"], query))
        total += conn.execute(select(func.count()).select_from(stats)
                              .where(*_scope(stats.c.customer_id, batch))).scalar_one()
    return total


def _refresh_rfm(conn: Connection) -> None:
    """Score recency, frequency and monetary value in quintiles (5 = best) and name the RFM group."""
    ranked = select(
        stats.c.customer_id.label("cid"),
        func.ntile(5).over(order_by=(stats.c.last_day, stats.c.customer_id)).label("r"),
        func.ntile(5).over(order_by=(stats.c.purchase_count, stats.c.customer_id)).label("f"),
        func.ntile(5).over(order_by=(stats.c.total_amount, stats.c.customer_id)).label("m"),
    ).subquery()
    conn.execute(update(stats).where(stats.c.customer_id == ranked.c.cid)
                 .values(rfm_r=ranked.c.r, rfm_f=ranked.c.f, rfm_m=ranked.c.m))
    whens = [(and_(stats.c.rfm_r == r, stats.c.rfm_f == f), name)
             for name, cells in _RFM_GRID.items() for r, f in cells]
    conn.execute(update(stats).values(rfm_group=case(*whens, else_=None)))


def _pages(conn: Connection, ids: list[int] | None) -> Iterator[Any]:
    """Yield WHERE-able filters on customer_id covering ``ids`` (or everyone) a page at a time."""
    if ids is not None:
        for batch in in_chunks(ids):
            yield lambda column, batch=batch: column.in_(batch)
        return
    low, high = conn.execute(select(func.min(customers.c.id), func.max(customers.c.id))).one()
    if low is None:
        return
    for start in range(low, high + 1, PAGE):
        yield lambda column, start=start: and_(column >= start, column < start + PAGE)


def _replenishment_rows(conn: Connection, ids: list[int] | None, scope: str) -> Iterator[dict[str, Any]]:
    """Per (customer, item) with two or more purchase days: the average daily use, computed in SQL."""
    column = purchases.c[scope]
    for page in _pages(conn, ids):
        daily = (select(purchases.c.customer_id.label("cid"), column.label("item"),
                        purchases.c.purchased_on.label("day"), func.sum(purchases.c.quantity).label("quantity"))
                 .where(column.is_not(None), page(purchases.c.customer_id))
                 .group_by(purchases.c.customer_id, column, purchases.c.purchased_on).subquery())
        window = {"partition_by": (daily.c.cid, daily.c.item)}
        seq = select(daily, func.lead(daily.c.day).over(order_by=daily.c.day, **window).label("next_day")).subquery()
        use = case((seq.c.next_day.is_not(None),
                    seq.c.quantity * 1.0 / (epoch_day(seq.c.next_day) - epoch_day(seq.c.day))), else_=None)
        query = (select(seq.c.cid, seq.c.item, func.count(), func.avg(use), func.max(seq.c.day),
                        func.max(case((seq.c.next_day.is_(None), seq.c.quantity), else_=None)))
                 .group_by(seq.c.cid, seq.c.item).having(func.count() >= 2))
        for customer_id, item, days, average, last_on, last_quantity in conn.execute(query).all():
            yield _replenishment_row(customer_id, f"{scope}:{item}", days, float(average), last_on,
                                     float(last_quantity))


def replenishment(customer_id: int, key: str, series: list[tuple[date, float]]) -> dict[str, Any]:
    """Predict the run-out date from (date, quantity) purchase days in date order (article 000).

    The same arithmetic as the SQL of the refresh, for one customer: used to explain a prediction
    and to check the worked example.
    """
    last_on, last_quantity = series[-1]
    if len(series) < 2:
        row = _replenishment_row(customer_id, key, len(series), None, last_on, last_quantity)
        row["note"] = "needs at least two purchases on different days to estimate the daily use"
        return row
    uses = [quantity / (series[i + 1][0] - day).days for i, (day, quantity) in enumerate(series[:-1])]
    return _replenishment_row(customer_id, key, len(series), sum(uses) / len(uses), last_on, last_quantity)


def _replenishment_row(customer_id: int, key: str, days: int, average: float | None, last_on: date,
                       last_quantity: float) -> dict[str, Any]:
    row = {"customer_id": customer_id, "basis": "replenishment", "key": key, "observations": days,
           "last_on": last_on, "last_quantity": last_quantity, "avg_daily_use": average, "interval_days": None,
           "interval_source": None, "due_on": None, "note": None, "refreshed_at": utcnow()}
    if average is None:
        return row
    if average <= 0:
        row["note"] = "the purchases show no use"
        return row
    row["interval_days"] = last_quantity / average
    # whole days the stock lasts (floor; the epsilon keeps 59.9999999 from losing a day)
    row["due_on"] = last_on + timedelta(days=math.floor(last_quantity / average + 1e-9))
    return row


def replenishment_scopes() -> tuple[str, ...]:
    """The configured replenishment scopes, checked."""
    from touchflow.settings import get_settings

    scopes = tuple(s.strip() for s in get_settings().replenishment_scopes.split(",") if s.strip())
    if not scopes or any(s not in ("category", "product") for s in scopes):
        raise ValueError(f"TOUCHFLOW_REPLENISHMENT_SCOPES={','.join(scopes)!r}: use category, product or both")
    return scopes


def _refresh_replenishment(conn: Connection, ids: list[int] | None, scopes: tuple[str, ...]) -> int:
    return _replace_predictions(conn, ids, "replenishment", (
        row for scope in scopes for row in _replenishment_rows(conn, ids, scope)))


def _service_rows(conn: Connection, ids: list[int] | None) -> Iterator[dict[str, Any]]:
    for page in _pages(conn, ids):
        query = (select(events.c.customer_id, events.c.kind, events.c.occurred_on, customers.c.attributes)
                 .join(customers, customers.c.id == events.c.customer_id)
                 .where(page(events.c.customer_id))
                 .order_by(events.c.customer_id, events.c.kind, events.c.occurred_on))
        yield from _service_page(conn.execute(query).all())


def _service_page(rows: list[Any]) -> Iterator[dict[str, Any]]:
    current: tuple[int, str] | None = None
    days: list[date] = []
    attributes: dict[str, Any] = {}
    for customer_id, kind, day, attrs in rows:
        if (customer_id, kind) != current:
            if current is not None:
                yield service_interval(current[0], current[1], days, attributes)
            current, days, attributes = (customer_id, kind), [], attrs or {}
        if not days or days[-1] != day:
            days.append(day)
    if current is not None:
        yield service_interval(current[0], current[1], days, attributes)


def service_interval(customer_id: int, kind: str, days: list[date], attributes: dict[str, Any]) -> dict[str, Any]:
    """Predict the next visit: the customer's ``<kind>_interval_days`` attribute, else their median interval."""
    row = {"customer_id": customer_id, "basis": "service", "key": kind, "observations": len(days),
           "last_on": days[-1], "last_quantity": None, "avg_daily_use": None, "interval_days": None,
           "interval_source": None, "due_on": None, "note": None, "refreshed_at": utcnow()}
    configured = attributes.get(f"{kind}_interval_days")
    if isinstance(configured, (int, float)) and not isinstance(configured, bool) and configured > 0:
        row["interval_days"], row["interval_source"] = float(configured), "attribute"
    elif len(days) >= 2:
        row["interval_days"] = float(statistics.median((b - a).days for a, b in zip(days, days[1:])))
        row["interval_source"] = "median"
    else:
        row["note"] = f"one visit and no {kind}_interval_days attribute: give the interval in the rule"
        return row
    row["due_on"] = days[-1] + timedelta(days=round(row["interval_days"]))
    return row


def _refresh_service(conn: Connection, ids: list[int] | None) -> int:
    return _replace_predictions(conn, ids, "service", _service_rows(conn, ids))


def _replace_predictions(conn: Connection, ids: list[int] | None, basis: str, rows: Iterable[dict[str, Any]]) -> int:
    for batch in [None] if ids is None else in_chunks(ids):
        conn.execute(delete(predictions).where(predictions.c.basis == basis,
                                               *_scope(predictions.c.customer_id, batch)))
    pending: list[dict[str, Any]] = []
    total = 0
    for row in rows:
        pending.append(row)
        if len(pending) >= 10000:
            bulk_insert(conn, predictions, PREDICTION_COLUMNS, pending)
            total += len(pending)
            pending = []
    bulk_insert(conn, predictions, PREDICTION_COLUMNS, pending)
    return total + len(pending)


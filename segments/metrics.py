"""Customer metrics of article 001, per segment and sliced by region, manager, category or month.

Customer-level slices (none, region, manager) report: customers, buyers, purchases, revenue,
average check (MV = revenue / purchases), purchase frequency (purchases per buyer), AIPT (average
inter-purchase time, days), ALD (average lifetime duration: last − first purchase, days), historical
CLV (revenue per buyer), recency (days since the last purchase), SW (average ``wallet_size``
attribute) and ShW (spend in the 365 days before the end of the period / wallet size, for customers
with a wallet size). Purchase-level slices (category, month) report buyers, purchases, revenue, MV
and frequency. With a budget: acquisition rate (buyers / customers) and cost per acquisition
(budget / buyers).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from crm.models import Customer, Manager, Purchase
from segments.compile import segment_query
from segments.library import Segment
from segments.rules import Rule, SegmentError
from segments.sqlfuncs import attr_number, epoch_day, key_param, year_month

SLICES = ("region", "manager", "category", "month")
customers = Customer.__table__
purchases = Purchase.__table__
managers = Manager.__table__


def _ratio(a: Any, b: Any) -> float | None:
    return round(float(a) / float(b), 4) if a is not None and b else None


def compute(engine: Engine, *, rule: Rule | None = None, library: dict[str, Segment] | None = None,
            by: str | None = None, since: date | None = None, until: date | None = None,
            budget: float | None = None) -> dict[str, Any]:
    """Return {"rows": [...], "period": ..., "by": ...}: one row per slice (one row when ``by`` is None)."""
    if by is not None and by not in SLICES:
        raise SegmentError(f"unknown slice {by!r}; choose one of: {', '.join(SLICES)}")
    until = until or date.today()
    period = [purchases.c.purchased_on <= until]
    if since is not None:
        period.append(purchases.c.purchased_on >= since)
    members = segment_query(rule, until, library).subquery() if rule is not None else None
    if by in ("category", "month"):
        rows = _purchase_slices(engine, by, period, members)
    else:
        rows = _customer_slices(engine, by, period, members, until)
    for row in rows:
        row["average_check"] = _ratio(row["revenue"], row["purchases"])
        row["purchase_frequency"] = _ratio(row["purchases"], row["buyers"])
        if budget is not None and "customers" in row:
            row["acquisition_rate"] = _ratio(row["buyers"], row["customers"])
            row["cost_per_acquisition"] = _ratio(budget, row["buyers"])
    return {"by": by, "since": since, "until": until, "budget": budget, "rows": rows}


def _customer_slices(engine: Engine, by: str | None, period: list, members, until: date) -> list[dict[str, Any]]:
    last_year = until - timedelta(days=365)
    per_customer = (
        select(purchases.c.customer_id.label("cid"), func.count().label("n"),
               func.sum(purchases.c.amount).label("revenue"),
               func.count(purchases.c.purchased_on.distinct()).label("days"),
               epoch_day(func.min(purchases.c.purchased_on)).label("first_day"),
               epoch_day(func.max(purchases.c.purchased_on)).label("last_day"),
               func.sum(case((purchases.c.purchased_on > last_year, purchases.c.amount), else_=0)).label("year"))
        .where(*period).group_by(purchases.c.customer_id).subquery())
    today = (until - date(1970, 1, 1)).days
    wallet = attr_number(customers.c.attributes, key_param("wallet_size"))
    dimension = {"region": customers.c.region, "manager": managers.c.code, None: None}[by]
    aipt = case((per_customer.c.days > 1, (per_customer.c.last_day - per_customer.c.first_day) * 1.0
                 / (per_customer.c.days - 1)), else_=None)
    columns = [
        func.count(customers.c.id), func.count(per_customer.c.cid), func.coalesce(func.sum(per_customer.c.n), 0),
        func.coalesce(func.sum(per_customer.c.revenue), 0), func.avg(aipt),
        func.avg(per_customer.c.last_day - per_customer.c.first_day), func.avg(today - per_customer.c.last_day),
        func.avg(wallet), func.sum(case((wallet.is_not(None), func.coalesce(per_customer.c.year, 0)), else_=None)),
        func.sum(case((wallet.is_not(None), wallet), else_=None)),
    ]
    query = select(*([dimension.label("slice")] if dimension is not None else []), *columns).select_from(
        customers.outerjoin(per_customer, per_customer.c.cid == customers.c.id)
        .outerjoin(managers, managers.c.id == customers.c.manager_id))
    if members is not None:
        query = query.where(customers.c.id.in_(select(members.c.id)))
    if dimension is not None:
        query = query.group_by(dimension).order_by(dimension)
    rows = []
    with engine.connect() as conn:
        for row in conn.execute(query):
            values = list(row)
            label = values.pop(0) if dimension is not None else "all"
            n_customers, buyers, count, revenue, aipt_avg, ald, recency, sw, spend, wallets = values
            rows.append({
                "slice": label, "customers": n_customers, "buyers": buyers, "purchases": int(count),
                "revenue": round(float(revenue), 2), "aipt_days": _round(aipt_avg), "ald_days": _round(ald),
                "clv": _ratio(revenue, buyers), "recency_days": _round(recency), "size_of_wallet": _round(sw),
                "share_of_wallet": _ratio(spend, wallets),
            })
    return rows


def _purchase_slices(engine: Engine, by: str, period: list, members) -> list[dict[str, Any]]:
    dimension = purchases.c.category if by == "category" else year_month(purchases.c.purchased_on)
    query = (select(dimension.label("slice"), func.count(purchases.c.customer_id.distinct()), func.count(),
                    func.coalesce(func.sum(purchases.c.amount), 0))
             .where(and_(*period)).group_by(dimension).order_by(dimension))
    if members is not None:
        query = query.where(purchases.c.customer_id.in_(select(members.c.id)))
    with engine.connect() as conn:
        return [{"slice": label, "buyers": buyers, "purchases": count, "revenue": round(float(revenue), 2)}
                for label, buyers, count, revenue in conn.execute(query)]


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)

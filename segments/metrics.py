"""Customer metrics of article 001, per segment and sliced by region, manager, customer, category, product or month.

Customer-level slices (none, region, manager, customer) report: customers, buyers, purchases,
revenue, average check (MV = revenue / purchases), purchase frequency (purchases per buyer), AIPT in
the article's form (a customer who bought four times in a month: 0.25 month, 7.5 days; pooled over
the slice's buyers: the days each was observed, from ``since`` or their first purchase to ``until``,
over their purchase days; ``aipt`` in 30-day months, ``aipt_days`` in days), the mean gap between
a repeat buyer's purchase days (``purchase_gap_days``), ALD (average lifetime duration: from the
first contract to the last where the customer has contract or deal events — service events whose
kind contains ``contract`` or ``deal`` — else from the first to the last purchase, days), historical
CLV (revenue per buyer), recency (days since the last purchase), SW (average ``wallet_size``
attribute) and ShW (spend in the 365 days before the end of the period / wallet size, for customers
with a wallet size). Purchase-level slices (category, product, month) report buyers, purchases,
revenue, MV and frequency.

With a budget: acquisition rate (buyers / customers) and cost per lead (the article's: the budget
over the buyers). The budget is prorated across slices — each slice's share in proportion to its
customers (purchase slices: its buyers), in kopecks, summing to the budget — not charged in full
to each; ``cost_per_acquisition`` is the same figure under its former name.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from crm.models import Customer, Manager, Purchase, ServiceEvent
from segments.compile import segment_query
from segments.library import Segment
from segments.rules import Rule, SegmentError
from segments.sqlfuncs import attr_number, epoch_day, key_param, year_month

SLICES = ("region", "manager", "customer", "category", "product", "month")
PURCHASE_SLICES = ("category", "product", "month")
MONTH_DAYS = 30  # the article's month: 0.25 month = 7.5 days
customers = Customer.__table__
purchases = Purchase.__table__
managers = Manager.__table__
events = ServiceEvent.__table__


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
    if by in PURCHASE_SLICES:
        rows = _purchase_slices(engine, by, period, members)
    else:
        rows = _customer_slices(engine, by, period, members, until, since)
    for row in rows:
        row["average_check"] = _ratio(row["revenue"], row["purchases"])
        row["purchase_frequency"] = _ratio(row["purchases"], row["buyers"])
    if budget is not None:
        weights = [row.get("customers", row["buyers"]) for row in rows]
        for row, share in zip(rows, prorate(budget, weights)):
            if "customers" in row:
                row["acquisition_rate"] = _ratio(row["buyers"], row["customers"])
            row["budget_share"] = share
            row["cost_per_lead"] = row["cost_per_acquisition"] = _ratio(share, row["buyers"])
    return {"by": by, "since": since, "until": until, "budget": budget, "rows": rows}


def prorate(budget: float, weights: list[int]) -> list[float | None]:
    """The budget split in proportion to ``weights``, in kopecks, the shares summing to the budget exactly.

    Largest remainder: each share is rounded down to the kopeck and the kopecks left go to the
    largest remainders, so no rounding makes the slices cost more (or less) than the budget.
    """
    total = sum(weights)
    if not total:
        return [None] * len(weights)
    cents = round(budget * 100)
    exact = [cents * w / total for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)[:cents - sum(shares)]:
        shares[i] += 1
    return [share / 100 for share in shares]


def _contracts():
    """Per customer, the first and last day of their contract or deal events (ALD where contracts are known)."""
    kind = func.lower(events.c.kind)
    return (select(events.c.customer_id.label("cid"), epoch_day(func.min(events.c.occurred_on)).label("first_day"),
                   epoch_day(func.max(events.c.occurred_on)).label("last_day"))
            .where(kind.contains("contract") | kind.contains("deal")).group_by(events.c.customer_id).subquery())


def _customer_slices(engine: Engine, by: str | None, period: list, members, until: date,
                     since: date | None) -> list[dict[str, Any]]:
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
    dimension = {"region": customers.c.region, "manager": managers.c.code, "customer": customers.c.external_id,
                 None: None}[by]
    gap = case((per_customer.c.days > 1, (per_customer.c.last_day - per_customer.c.first_day) * 1.0
                / (per_customer.c.days - 1)), else_=None)
    start = per_customer.c.first_day if since is None else (since - date(1970, 1, 1)).days
    contracts = _contracts()
    lifetime = func.coalesce(contracts.c.last_day - contracts.c.first_day,
                             per_customer.c.last_day - per_customer.c.first_day)
    columns = [
        func.count(customers.c.id), func.count(per_customer.c.cid), func.coalesce(func.sum(per_customer.c.n), 0),
        func.coalesce(func.sum(per_customer.c.revenue), 0), func.avg(gap),
        func.avg(lifetime), func.avg(today - per_customer.c.last_day),
        func.avg(wallet), func.sum(case((wallet.is_not(None), func.coalesce(per_customer.c.year, 0)), else_=None)),
        func.sum(case((wallet.is_not(None), wallet), else_=None)),
        func.sum(case((per_customer.c.cid.is_not(None), today - start + 1), else_=None)), func.sum(per_customer.c.days),
    ]
    query = select(*([dimension.label("slice")] if dimension is not None else []), *columns).select_from(
        customers.outerjoin(per_customer, per_customer.c.cid == customers.c.id)
        .outerjoin(contracts, contracts.c.cid == customers.c.id)
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
            n_customers, buyers, count, revenue, gap_avg, ald, recency, sw, spend, wallets, observed, days = values
            aipt = _ratio(observed, days)
            rows.append({
                "slice": label, "customers": n_customers, "buyers": buyers, "purchases": int(count),
                "revenue": round(float(revenue), 2), "aipt": None if aipt is None else round(aipt / MONTH_DAYS, 4),
                "aipt_days": _round(aipt), "purchase_gap_days": _round(gap_avg), "ald_days": _round(ald),
                "clv": _ratio(revenue, buyers), "recency_days": _round(recency), "size_of_wallet": _round(sw),
                "share_of_wallet": _ratio(spend, wallets),
            })
    return rows


def _purchase_slices(engine: Engine, by: str, period: list, members) -> list[dict[str, Any]]:
    dimension = {"category": purchases.c.category, "product": purchases.c.product,
                 "month": year_month(purchases.c.purchased_on)}[by]
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

"""Compile checked segment rules into one SQLAlchemy query over customers, every value bound.

Purchase aggregates, RFM, lapsed and predicted needs read the precomputed ``customer_stats`` and
``predictions`` tables (``segments.stats`` refreshes them); conditions on raw purchases and events
become ``customers.id IN (SELECT customer_id …)`` subqueries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)

from crm.models import (
    CHANNEL_CONTACT_KIND,
    Consent,
    ContactPoint,
    ContactStatus,
    Customer,
    CustomerStats,
    Manager,
    Prediction,
    Purchase,
    ServiceEvent,
)
from segments.library import Segment
from segments.rules import Condition, Rule, SegmentError
from segments.sqlfuncs import (
    attr_number,
    attr_present,
    attr_text,
    key_param,
    month_day,
    text_contains,
)

customers = Customer.__table__
stats = CustomerStats.__table__
predictions = Prediction.__table__
purchases = Purchase.__table__
events = ServiceEvent.__table__
contacts = ContactPoint.__table__
consents = Consent.__table__
managers = Manager.__table__

EPOCH = date(1970, 1, 1)

# RFM groups by recency score (rows) and frequency score (columns), the common 5×5 grid.
_RFM_GRID = {
    "champions": [(5, 5), (5, 4), (4, 5)],
    "loyal": [(4, 4), (3, 5), (3, 4), (4, 3)],
    "potential_loyalists": [(5, 3), (5, 2), (4, 2), (3, 3)],
    "new_customers": [(5, 1)],
    "promising": [(4, 1)],
    "need_attention": [(3, 2)],
    "about_to_sleep": [(3, 1)],
    "at_risk": [(2, 5), (2, 4), (1, 3), (2, 3)],
    "cannot_lose": [(1, 5), (1, 4)],
    "hibernating": [(2, 2), (2, 1), (1, 2)],
    "lost": [(1, 1)],
}


def rfm_group(r: int, f: int) -> str:
    """Name the RFM group of a recency score and a frequency score (1..5 each)."""
    for name, cells in _RFM_GRID.items():
        if (r, f) in cells:
            return name
    raise ValueError(f"rfm scores out of range: r={r} f={f}")


@dataclass
class Context:
    """What a compilation needs: the evaluation date and the segment library."""

    as_of: date
    library: dict[str, Segment] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)

    @property
    def today(self) -> int:
        """The evaluation date as a day number (days since 1970-01-01)."""
        return (self.as_of - EPOCH).days


def segment_query(rule: Rule, as_of: date, library: dict[str, Segment] | None = None) -> Select:
    """Return ``SELECT customers.id … WHERE <rule>`` for ``rule`` evaluated on ``as_of``."""
    return select(customers.c.id).where(compile_rule(rule, Context(as_of, library or {})))


def compile_rule(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    """Translate one rule into a boolean SQL expression over ``customers``."""
    return _COMPILERS[rule.kind](rule, ctx)


def _all(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    return and_(true(), *(compile_rule(child, ctx) for child in rule.children))


def _any(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    return or_(false(), *(compile_rule(child, ctx) for child in rule.children))


def _not(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    # NULL (a missing field or attribute) counts as "does not match", so NOT of it matches.
    return not_(func.coalesce(compile_rule(rule.children[0], ctx), false(), type_=Boolean()))


def _segment(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    name = rule.params["name"]
    if name not in ctx.library:
        raise SegmentError(f"{rule.where}: unknown segment {name!r}; known: {', '.join(sorted(ctx.library))}")
    if name in ctx.stack:
        raise SegmentError(f"{rule.where}: segments refer to each other in a loop: {' → '.join(ctx.stack + [name])}")
    inner = Context(ctx.as_of, ctx.library, ctx.stack + [name])
    return compile_rule(ctx.library[name].rule, inner)


def apply_condition(expr: Any, cond: Condition) -> ColumnElement[bool]:
    """Apply an operator to a SQL expression (NULL never matches, except ``exists: false``)."""
    op, value = cond.op, cond.value
    if op == "equals":
        return expr == value
    if op == "not_equals":
        return and_(expr.is_not(None), expr != value)
    if op == "in":
        return expr.in_(value)
    if op == "not_in":
        return and_(expr.is_not(None), expr.not_in(value))
    if op == "gt":
        return expr > value
    if op == "gte":
        return expr >= value
    if op == "lt":
        return expr < value
    if op == "lte":
        return expr <= value
    if op == "range":
        low, high = value
        parts = [expr.is_not(None)]
        if low is not None:
            parts.append(expr >= low)
        if high is not None:
            parts.append(expr <= high)
        return and_(*parts)
    if op == "contains":
        return text_contains(expr, value)
    if op == "exists":
        return expr.is_not(None) if value else expr.is_(None)
    raise SegmentError(f"unknown operator {op!r}")


def _field(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    name, cond = rule.params["name"], rule.params["condition"]
    if name == "manager":
        if cond.op in ("equals", "in"):  # an indexed IN instead of a lookup per customer
            return customers.c.manager_id.in_(select(managers.c.id).where(apply_condition(managers.c.code, cond)))
        code = select(managers.c.code).where(managers.c.id == customers.c.manager_id).scalar_subquery()
        return apply_condition(code, cond)
    return apply_condition(customers.c[name], cond)


def _attribute(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    name, cond = rule.params["name"], rule.params["condition"]
    column, key = customers.c.attributes, key_param(name)
    if cond.op == "exists":
        return apply_condition(attr_present(column, key), cond)
    sample = cond.value[0] if isinstance(cond.value, list) else cond.value
    if cond.op == "range":
        sample = next(v for v in cond.value if v is not None)
    if isinstance(sample, bool):
        kinds = "'true'" if sample else "'false'"
        raise SegmentError(f"{rule.where}: compare booleans as text ({kinds} is not supported); "
                           "import yes/no attributes as text")
    if isinstance(sample, (int, float)) and cond.op != "contains":
        return apply_condition(attr_number(column, key), cond)
    return apply_condition(attr_text(column, key), cond)


def _purchase_filter(params: dict[str, Any], ctx: Context) -> list[ColumnElement[bool]]:
    parts: list[ColumnElement[bool]] = []
    if "scope" in params:
        parts.append(purchases.c[params["scope"]] == params["value"])
    if "within_days" in params:
        parts.append(purchases.c.purchased_on > ctx.as_of - timedelta(days=params["within_days"]))
    parts.append(purchases.c.purchased_on <= ctx.as_of)
    return parts


def _purchased(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    return customers.c.id.in_(select(purchases.c.customer_id).where(*_purchase_filter(rule.params, ctx)))


_STAT_OF_METRIC = {"count": "purchase_count", "sum": "total_amount", "avg": "avg_check"}


def _purchases(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    if "scope" not in rule.params and "within_days" not in rule.params:
        # all-time aggregates are precomputed in customer_stats
        stat = Rule("stat", {"name": _STAT_OF_METRIC[rule.params["metric"]], "condition": rule.params["condition"]},
                    where=rule.where)
        matched = _stat(stat, ctx)
        if rule.params["metric"] == "count" and _matches_zero(rule.params["condition"]):
            return or_(matched, customers.c.id.not_in(select(stats.c.customer_id)))
        return matched
    metric = {"count": func.count(), "sum": func.sum(purchases.c.amount), "avg": func.avg(purchases.c.amount)}[
        rule.params["metric"]]
    cond: Condition = rule.params["condition"]
    grouped = (select(purchases.c.customer_id).where(*_purchase_filter(rule.params, ctx))
               .group_by(purchases.c.customer_id).having(apply_condition(metric, cond)))
    matched = customers.c.id.in_(grouped)
    if rule.params["metric"] == "count" and _matches_zero(cond):
        anyone = select(purchases.c.customer_id).where(*_purchase_filter(rule.params, ctx))
        return or_(matched, customers.c.id.not_in(anyone))
    return matched


def _matches_zero(cond: Condition) -> bool:
    value = cond.value
    return {"equals": lambda: value == 0, "lt": lambda: value > 0, "lte": lambda: value >= 0,
            "in": lambda: 0 in value, "range": lambda: (value[0] is None or value[0] <= 0)
            and (value[1] is None or value[1] >= 0), "not_equals": lambda: value != 0,
            "not_in": lambda: 0 not in value}.get(cond.op, lambda: False)()


def _stat_column(name: str, ctx: Context):
    if name == "recency_days":
        return ctx.today - stats.c.last_day
    if name == "lifetime_days":
        return stats.c.last_day - stats.c.first_day
    return stats.c[name]


def _stat(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    cond = rule.params["condition"]
    query = select(stats.c.customer_id).where(apply_condition(_stat_column(rule.params["name"], ctx), cond))
    if cond.op == "exists" and not cond.value:
        return customers.c.id.not_in(select(stats.c.customer_id).where(stats.c.purchase_count > 0))
    return customers.c.id.in_(query)


def _event(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    parts = [events.c.kind == rule.params["kind"], events.c.occurred_on <= ctx.as_of]
    if "within_days" in rule.params:
        parts.append(events.c.occurred_on > ctx.as_of - timedelta(days=rule.params["within_days"]))
    query = select(events.c.customer_id).where(*parts)
    if "condition" in rule.params:
        query = query.group_by(events.c.customer_id).having(apply_condition(func.count(), rule.params["condition"]))
    return customers.c.id.in_(query)


def _rfm(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    parts = []
    if "groups" in rule.params:
        parts.append(stats.c.rfm_group.in_(rule.params["groups"]))
    for letter in ("r", "f", "m"):
        if letter in rule.params:
            parts.append(stats.c[f"rfm_{letter}"].in_(rule.params[letter]))
    return customers.c.id.in_(select(stats.c.customer_id).where(*parts))


def birthday_days(as_of: date, days: int) -> list[str]:
    """The ``MM-DD`` strings from ``as_of`` to ``as_of + days``; 29 February joins 28 February in other years."""
    result = []
    for offset in range(min(days, 366) + 1):
        day = as_of + timedelta(days=offset)
        result.append(day.strftime("%m-%d"))
        if day.month == 2 and day.day == 28 and not _leap(day.year):
            result.append("02-29")
    return sorted(set(result))


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _birthday(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    return and_(customers.c.birthday.is_not(None),
                month_day(customers.c.birthday).in_(birthday_days(ctx.as_of, rule.params["days"])))


def _active_contact(kind: str):
    return select(contacts.c.customer_id).where(contacts.c.kind == kind,
                                                contacts.c.status == ContactStatus.active.value)


def _has_contact(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    target = rule.params["target"]
    kind = CHANNEL_CONTACT_KIND[target].value if target in CHANNEL_CONTACT_KIND else target
    return customers.c.id.in_(_active_contact(kind))


def consent_clause(customer_id: Any, channel: str, purpose: str, at: Any = None) -> ColumnElement[bool]:
    """True when the latest ledger entry for (channel or ``all``, purpose), as of ``at``, is a grant."""
    c1, c2 = consents.alias("c1"), consents.alias("c2")
    channels = [channel, "all"]
    grant = [c1.c.customer_id == customer_id, c1.c.channel.in_(channels), c1.c.purpose == purpose,
             c1.c.granted.is_(True)]
    later = [c2.c.customer_id == customer_id, c2.c.channel.in_(channels), c2.c.purpose == purpose,
             c2.c.granted.is_(False), c2.c.at >= c1.c.at]
    if at is not None:
        grant.append(c1.c.at <= at)
        later.append(c2.c.at <= at)
    revoked_since = exists(select(c2.c.id).where(*later).correlate_except(c2))
    return exists(select(c1.c.id).where(*grant, ~revoked_since).correlate_except(c1))


def _consent(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    return consent_clause(customers.c.id, rule.params["channel"], rule.params["purpose"])


def _due(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    """Customers whose need falls from ``lead_days`` ahead back to ``grace_days`` ago (None: any time ago)."""
    params = rule.params
    horizon = ctx.as_of + timedelta(days=params["lead_days"])
    grace = params.get("grace_days")
    oldest = None if grace is None else ctx.as_of - timedelta(days=grace)
    parts = [predictions.c.basis == params["need"], predictions.c.key == params["key"]]
    if "interval_days" in params:  # due on last_on + interval_days
        interval = timedelta(days=params["interval_days"])
        parts.append(predictions.c.last_on <= horizon - interval)
        if oldest is not None:
            parts.append(predictions.c.last_on >= oldest - interval)
    else:
        parts.append(predictions.c.due_on <= horizon)
        if oldest is not None:
            parts.append(predictions.c.due_on >= oldest)
    return customers.c.id.in_(select(predictions.c.customer_id).where(*parts))


def months_before(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier (the month's last day when it is shorter)."""
    month_index = day.year * 12 + day.month - 1 - months
    year, month = divmod(month_index, 12)
    month += 1
    for candidate in range(day.day, 0, -1):
        try:
            return date(year, month, candidate)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _since_last(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    params = rule.params
    high = months_before(ctx.as_of, params["months"])
    low = high - timedelta(days=params["window_days"])
    if params["scope"] == "event_kind":
        table, column, when = events, events.c.kind, events.c.occurred_on
    else:
        table, column, when = purchases, purchases.c[params["scope"]], purchases.c.purchased_on
    last = func.max(when)
    query = (select(table.c.customer_id).where(column == params["value"], when <= ctx.as_of)
             .group_by(table.c.customer_id).having(and_(last > low, last <= high)))
    return customers.c.id.in_(query)


def _lapsed(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    recency = ctx.today - stats.c.last_day
    query = select(stats.c.customer_id).where(
        stats.c.last_day.is_not(None), recency > rule.params["min_days"],
        or_(stats.c.aipt_days.is_(None), recency > stats.c.aipt_days * rule.params["k"]))
    return customers.c.id.in_(query)


def _cross_sell(rule: Rule, ctx: Context) -> ColumnElement[bool]:
    params = rule.params
    bought = {"category": params["bought"]}
    if "within_days" in params:
        bought["within_days"] = params["within_days"]
    has = select(purchases.c.customer_id).where(*_purchase_filter({"scope": "category", "value": params["bought"],
                                                                    **bought}, ctx))
    lacks = select(purchases.c.customer_id).where(purchases.c.category == params["not_bought"])
    return and_(customers.c.id.in_(has), customers.c.id.not_in(lacks))


_COMPILERS = {
    "all": _all, "any": _any, "not": _not, "segment": _segment, "field": _field, "attribute": _attribute,
    "purchased": _purchased, "purchases": _purchases, "stat": _stat, "event": _event, "rfm": _rfm,
    "birthday_within": _birthday, "has_contact": _has_contact, "consent": _consent, "due": _due,
    "since_last": _since_last, "lapsed": _lapsed, "cross_sell": _cross_sell,
}

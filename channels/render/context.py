"""Build template contexts from the customer base, a batch of customers at a time.

Each context holds what a message may say about the customer: ``customer`` (fields, attributes,
greeting name, gender, city, manager), ``purchases`` (count, total, average check, last purchase,
per category), ``events`` (per kind: count, first and last date), ``needs`` (predicted run-outs and
due visits, with days left), the campaign's ``offer``, ``company``, ``today`` and ``locale``. A
handful of queries per batch, whatever its size.

    customer.manager    the rep a message may name: {name, position, phone, email}; None when the
                        customer has no rep, the rep is inactive or is known only by a code
                        (``needs_name``): a customer never reads «Ваш менеджер: petrov»
    customer.owner      the customer's rep as the sales team knows them (call scripts): {code,
                        name (None when it needs one), position, active}, or None
    purchases.by_category.<c>
                        count, total, first_on, last_on; ``last_items`` (that category's lines on
                        its last day: product, quantity, amount); ``last_order`` (every product
                        the customer bought that day, any category: «когтеточку и домик»);
                        ``last_30_days`` {count, total, average_price} (the 30 days up to today)
    events.<kind>       count, first_on, last_on
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from channels.render.russian import gender_of
from crm.db import in_chunks, one_of
from crm.models import Customer, Manager, Prediction, Purchase, ServiceEvent

customers = Customer.__table__
managers = Manager.__table__
purchases = Purchase.__table__
events = ServiceEvent.__table__
predictions = Prediction.__table__


RECENT_DAYS = 30  # ``last_30_days``: the window «несколько раз в месяц» is counted over


def _num(value: Any) -> float | int:
    number = float(value or 0)
    return int(number) if number.is_integer() else round(number, 2)


_GENDER_CODES = {"f": "f", "female": "f", "ж": "f", "жен": "f", "m": "m", "male": "m", "м": "m", "муж": "m"}


def customer_gender(stored: Any, first_name: str | None, full_name: str | None) -> str | None:
    """"f", "m" or None: the ``customers.gender`` column when it says, else inferred from the name.

    Templates agree their verbs and adjectives with it (``g("пробовал", "пробовала")``); None (no
    column value, an ambiguous or unknown name) makes them use the polite plural.
    """
    code = _GENDER_CODES.get(str(stored).strip().lower()) if stored else None
    return code or gender_of(first_name or None, full_name=full_name or None)


def contexts_for(engine: Engine, customer_ids: Iterable[int], *, offer: dict[str, Any] | None = None,
                 as_of: date | None = None, company: str = "touchflow", locale: str = "ru_RU"
                 ) -> dict[int, dict[str, Any]]:
    """Template contexts for a batch of customers, keyed by customer id."""
    ids = list(dict.fromkeys(customer_ids))
    as_of = as_of or date.today()
    result: dict[int, dict[str, Any]] = {}
    with engine.connect() as conn:
        for chunk in in_chunks(ids):
            _fill(conn, chunk, result, offer or {}, as_of, company, locale)
    return result


def _reps(row: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(manager, owner) of a customer row joined with its rep: the rep a message may name (active and
    named, else None) and the rep as the sales team knows them."""
    if row.m_code is None:
        return None, None
    named = not row.m_needs_name
    owner = {"code": row.m_code, "name": row.m_name if named else None, "position": row.m_position,
             "active": bool(row.m_active)}
    if not (named and row.m_active and row.m_name):
        return None, owner
    return {"name": row.m_name, "position": row.m_position, "phone": row.m_phone, "email": row.m_email}, owner


def empty_purchases() -> dict[str, Any]:
    """The ``purchases`` of a customer who bought nothing (yet)."""
    return {"count": 0, "total": 0, "average_check": 0, "first_on": None, "last_on": None, "last": None,
            "categories": [], "by_category": {}}


def category_summary(count: int, total: Any, first_on: date | None, last_on: date | None, *,
                     last_items: list[dict[str, Any]] | None = None, last_order: list[str] | None = None,
                     recent_count: int = 0, recent_total: Any = 0) -> dict[str, Any]:
    """One entry of ``purchases.by_category`` (the same shape for the base, the sample and the linter)."""
    recent_total = _num(recent_total)
    return {"count": count, "total": _num(total), "first_on": first_on, "last_on": last_on,
            "last_items": list(last_items or []), "last_order": list(last_order or []),
            "last_30_days": {"count": recent_count, "total": recent_total,
                             "average_price": _num(recent_total / recent_count) if recent_count else 0}}


def _fill(conn, ids: list[int], result: dict, offer: dict, as_of: date, company: str, locale: str) -> None:
    rows = conn.execute(select(customers, managers.c.code.label("m_code"), managers.c.name.label("m_name"),
                               managers.c.phone.label("m_phone"), managers.c.email.label("m_email"),
                               managers.c.position.label("m_position"), managers.c.active.label("m_active"),
                               managers.c.needs_name.label("m_needs_name"))
                        .outerjoin(managers, managers.c.id == customers.c.manager_id)
                        .where(one_of(conn, customers.c.id, ids))).all()
    for row in rows:
        first = row.first_name or (row.name.split()[1] if len(row.name.split()) > 1 else row.name)
        gender = customer_gender(row._mapping.get("gender"), row.first_name, row.name)
        manager, owner = _reps(row)
        result[row.id] = {
            "customer": {
                "id": row.id, "external_id": row.external_id, "name": row.name, "first_name": row.first_name,
                "greeting_name": first or "клиент", "gender": gender, "birthday": row.birthday, "region": row.region,
                "city": row.city, "timezone": row.timezone, "preferred_channel": row.preferred_channel,
                "attributes": dict(row.attributes or {}), "manager": manager, "owner": owner,
            },
            "purchases": empty_purchases(),
            "events": {}, "needs": [], "offer": offer, "company": company, "today": as_of, "locale": locale,
            "unsubscribe_url": None,
        }
    recent = purchases.c.purchased_on > as_of - timedelta(days=RECENT_DAYS)
    mine = (one_of(conn, purchases.c.customer_id, ids), purchases.c.purchased_on <= as_of)
    per_category = (select(purchases.c.customer_id, purchases.c.category, func.count(), func.sum(purchases.c.amount),
                           func.min(purchases.c.purchased_on), func.max(purchases.c.purchased_on),
                           func.sum(case((recent, 1), else_=0)), func.sum(case((recent, purchases.c.amount), else_=0)))
                    .where(*mine).group_by(purchases.c.customer_id, purchases.c.category))
    for customer_id, category, count, total, first_on, last_on, recent_count, recent_total in conn.execute(per_category):
        summary = result[customer_id]["purchases"]
        summary["count"] += count
        summary["total"] = _num(summary["total"] + _num(total))
        summary["first_on"] = min(filter(None, (summary["first_on"], first_on)), default=None)
        summary["last_on"] = max(filter(None, (summary["last_on"], last_on)), default=None)
        if category:
            summary["categories"].append(category)
            summary["by_category"][category] = category_summary(count, total, first_on, last_on,
                                                                recent_count=int(recent_count or 0),
                                                                recent_total=recent_total or 0)
    # the lines of each category's last day (and of the last day overall): one query, not every purchase
    last_days = (select(purchases.c.customer_id, func.max(purchases.c.purchased_on).label("day"))
                 .where(*mine).group_by(purchases.c.customer_id, purchases.c.category).subquery())
    days = select(last_days.c.customer_id, last_days.c.day).distinct().subquery()
    lines = (select(purchases.c.customer_id, purchases.c.product, purchases.c.category, purchases.c.quantity,
                    purchases.c.amount, purchases.c.purchased_on)
             .join(days, and_(days.c.customer_id == purchases.c.customer_id, days.c.day == purchases.c.purchased_on))
             .order_by(purchases.c.customer_id, purchases.c.purchased_on, purchases.c.id))
    orders: dict[tuple[int, date], list[Any]] = {}
    for row in conn.execute(lines):
        orders.setdefault((row.customer_id, row.purchased_on), []).append(row)
        result[row.customer_id]["purchases"]["last"] = {
            "product": row.product, "category": row.category, "quantity": _num(row.quantity),
            "amount": _num(row.amount), "on": row.purchased_on}
    for customer_id, context in result.items():
        summary = context["purchases"]
        summary["categories"].sort()
        summary["average_check"] = _num(summary["total"] / summary["count"]) if summary["count"] else 0
        for category, entry in summary["by_category"].items():
            order = orders.get((customer_id, entry["last_on"]), [])
            entry["last_order"] = list(dict.fromkeys(line.product for line in order))
            entry["last_items"] = [{"product": line.product, "quantity": _num(line.quantity),
                                    "amount": _num(line.amount)} for line in order if line.category == category]
    visits = (select(events.c.customer_id, events.c.kind, func.count(), func.min(events.c.occurred_on),
                     func.max(events.c.occurred_on))
              .where(one_of(conn, events.c.customer_id, ids), events.c.occurred_on <= as_of)
              .group_by(events.c.customer_id, events.c.kind))
    for customer_id, kind, count, first_on, last_on in conn.execute(visits):
        result[customer_id]["events"][kind] = {"count": count, "first_on": first_on, "last_on": last_on}
    for p in conn.execute(select(predictions).where(one_of(conn, predictions.c.customer_id, ids))
                          .order_by(predictions.c.customer_id, predictions.c.due_on)):
        result[p.customer_id]["needs"].append({
            "basis": p.basis, "key": p.key, "item": p.key.split(":", 1)[-1], "due_on": p.due_on,
            "days_left": (p.due_on - as_of).days if p.due_on else None, "last_on": p.last_on,
            "avg_daily_use": p.avg_daily_use, "interval_days": p.interval_days})


def sample_context(offer: dict[str, Any] | None = None, as_of: date | None = None) -> dict[str, Any]:
    """A complete made-up context for checking templates on an empty base: a woman, with a rep, who buys
    business cards, bought a scratcher and a house for her cat two weeks ago, is an ISP subscriber
    (three contracts in five years, a month of digital TV, football streams) and comes for haircuts
    (``channels.render.lint`` varies it: a man, unknown gender, no rep, counts, passed dates …)."""
    as_of = as_of or date.today()

    def ago(days: int) -> date:
        return as_of - timedelta(days=days)

    cards = [{"product": "Визитки 1000 шт", "quantity": 1000, "amount": 1600}]
    cat = [{"product": "Когтеточка", "quantity": 1, "amount": 1290},
           {"product": "Домик для кошки", "quantity": 1, "amount": 3490}]
    stream = [{"product": "Трансляция матча", "quantity": 1, "amount": 55}]
    by_category = {
        "business_cards": category_summary(5, 8000, ago(400), ago(35), last_items=cards,
                                           last_order=["Визитки 1000 шт"]),
        "cat_goods": category_summary(2, 4780, ago(14), ago(14), last_items=cat,
                                      last_order=["Когтеточка", "Домик для кошки"]),
        "digital_tv": category_summary(1, 290, date(2025, 1, 10), date(2025, 1, 10),
                                       last_items=[{"product": "Цифровое ТВ", "quantity": 1, "amount": 290}],
                                       last_order=["Цифровое ТВ"]),
        "football_stream": category_summary(30, 1650, ago(600), ago(2), last_items=stream,
                                            last_order=["Трансляция матча"], recent_count=4, recent_total=220),
        "travel": category_summary(1, 85000, ago(122), ago(122),
                                   last_items=[{"product": "Тур в Турцию", "quantity": 1, "amount": 85000}],
                                   last_order=["Тур в Турцию"]),
    }
    return {
        "customer": {"id": 0, "external_id": "SAMPLE", "name": "Образцова Анна Сергеевна", "first_name": "Анна",
                     "greeting_name": "Анна", "gender": "f", "birthday": date(1985, 5, 14), "region": "Москва",
                     "city": "Москва", "timezone": "Europe/Moscow", "preferred_channel": "email",
                     "attributes": {"internet": "yes", "tv": "no", "has_router": "yes", "children": 2,
                                    "haircut_interval_days": 30, "car": "Kia Rio", "pet": "cat",
                                    # hand-typed facts a project's own templates may still read (the shipped
                                    # ones take them from the history: contracts, purchases, events)
                                    "years_customer": 5, "contracts": 3, "digital_tv_trial_months": 1,
                                    "support_history": "resolved", "football_streams_per_month": 4,
                                    "football_stream_price": 55},
                     "manager": {"name": "Анна Иванова", "position": "старший менеджер", "phone": "+74951230001",
                                 "email": "a.ivanova@example.com"},
                     "owner": {"code": "ivanova", "name": "Анна Иванова", "position": "старший менеджер",
                               "active": True}},
        "purchases": {"count": 39, "total": 99720, "average_check": 2556.92, "first_on": date(2025, 1, 10),
                      "last_on": ago(2), "categories": sorted(by_category), "by_category": by_category,
                      "last": {"product": "Трансляция матча", "category": "football_stream", "quantity": 1,
                               "amount": 55, "on": ago(2)}},
        "events": {"haircut": {"count": 4, "first_on": ago(120), "last_on": ago(25)},
                   "car_service": {"count": 2, "first_on": ago(370), "last_on": ago(170)},
                   "trip": {"count": 1, "first_on": ago(122), "last_on": ago(122)},
                   "isp_contract": {"count": 3, "first_on": ago(1840), "last_on": ago(400)},
                   "support_call": {"count": 5, "first_on": ago(300), "last_on": ago(270)}},
        "needs": [{"basis": "replenishment", "key": "category:business_cards", "item": "business_cards",
                   "due_on": as_of + timedelta(days=5), "days_left": 5, "last_on": ago(35), "avg_daily_use": 25.0,
                   "interval_days": 40.0},
                  {"basis": "service", "key": "haircut", "item": "haircut", "due_on": as_of + timedelta(days=5),
                   "days_left": 5, "last_on": ago(25), "avg_daily_use": None, "interval_days": 30.0},
                  {"basis": "service", "key": "car_service", "item": "car_service",
                   "due_on": as_of + timedelta(days=10), "days_left": 10, "last_on": ago(170), "avg_daily_use": None,
                   "interval_days": 180.0}],
        "offer": offer or {}, "company": "touchflow", "today": as_of, "locale": "ru_RU",
        "unsubscribe_url": "http://127.0.0.1:8000/unsubscribe/SAMPLE",
    }

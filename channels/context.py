"""Build template contexts from the customer base, a batch of customers at a time.

Each context holds what a message may say about the customer: ``customer`` (fields, attributes,
greeting name, manager), ``purchases`` (count, total, average check, last purchase, per category),
``events`` (per kind: count, last date), ``needs`` (predicted run-outs and due visits, with days
left), the campaign's ``offer``, ``company``, ``today`` and ``locale``. A handful of queries per
batch, whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from crm.db import in_chunks, one_of
from crm.models import Customer, Manager, Prediction, Purchase, ServiceEvent

customers = Customer.__table__
managers = Manager.__table__
purchases = Purchase.__table__
events = ServiceEvent.__table__
predictions = Prediction.__table__


def _num(value: Any) -> float | int:
    number = float(value or 0)
    return int(number) if number.is_integer() else round(number, 2)


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


def _fill(conn, ids: list[int], result: dict, offer: dict, as_of: date, company: str, locale: str) -> None:
    rows = conn.execute(select(customers, managers.c.name.label("m_name"), managers.c.phone.label("m_phone"),
                               managers.c.email.label("m_email"))
                        .outerjoin(managers, managers.c.id == customers.c.manager_id)
                        .where(one_of(conn, customers.c.id, ids))).all()
    for row in rows:
        first = row.first_name or (row.name.split()[1] if len(row.name.split()) > 1 else row.name)
        result[row.id] = {
            "customer": {
                "id": row.id, "external_id": row.external_id, "name": row.name, "first_name": row.first_name,
                "greeting_name": first or "клиент", "birthday": row.birthday, "region": row.region,
                "timezone": row.timezone, "preferred_channel": row.preferred_channel,
                "attributes": dict(row.attributes or {}),
                "manager": {"name": row.m_name, "phone": row.m_phone, "email": row.m_email} if row.m_name else None,
            },
            "purchases": {"count": 0, "total": 0, "average_check": 0, "first_on": None, "last_on": None,
                          "last": None, "categories": [], "by_category": {}},
            "events": {}, "needs": [], "offer": offer, "company": company, "today": as_of, "locale": locale,
            "unsubscribe_url": None,
        }
    per_category = (select(purchases.c.customer_id, purchases.c.category, func.count(), func.sum(purchases.c.amount),
                           func.min(purchases.c.purchased_on), func.max(purchases.c.purchased_on))
                    .where(one_of(conn, purchases.c.customer_id, ids), purchases.c.purchased_on <= as_of)
                    .group_by(purchases.c.customer_id, purchases.c.category))
    for customer_id, category, count, total, first_on, last_on in conn.execute(per_category):
        summary = result[customer_id]["purchases"]
        summary["count"] += count
        summary["total"] = _num(summary["total"] + _num(total))
        summary["first_on"] = min(filter(None, (summary["first_on"], first_on)), default=None)
        summary["last_on"] = max(filter(None, (summary["last_on"], last_on)), default=None)
        if category:
            summary["categories"].append(category)
            summary["by_category"][category] = {"count": count, "total": _num(total), "last_on": last_on}
    latest = (select(purchases.c.customer_id, purchases.c.product, purchases.c.category, purchases.c.quantity,
                     purchases.c.amount, purchases.c.purchased_on)
              .where(one_of(conn, purchases.c.customer_id, ids), purchases.c.purchased_on <= as_of)
              .order_by(purchases.c.customer_id, purchases.c.purchased_on, purchases.c.id))
    for row in conn.execute(latest):
        result[row.customer_id]["purchases"]["last"] = {
            "product": row.product, "category": row.category, "quantity": _num(row.quantity),
            "amount": _num(row.amount), "on": row.purchased_on}
    for context in result.values():
        summary = context["purchases"]
        summary["categories"].sort()
        summary["average_check"] = _num(summary["total"] / summary["count"]) if summary["count"] else 0
    visits = (select(events.c.customer_id, events.c.kind, func.count(), func.max(events.c.occurred_on))
              .where(one_of(conn, events.c.customer_id, ids), events.c.occurred_on <= as_of)
              .group_by(events.c.customer_id, events.c.kind))
    for customer_id, kind, count, last_on in conn.execute(visits):
        result[customer_id]["events"][kind] = {"count": count, "last_on": last_on}
    for p in conn.execute(select(predictions).where(one_of(conn, predictions.c.customer_id, ids))
                          .order_by(predictions.c.customer_id, predictions.c.due_on)):
        result[p.customer_id]["needs"].append({
            "basis": p.basis, "key": p.key, "item": p.key.split(":", 1)[-1], "due_on": p.due_on,
            "days_left": (p.due_on - as_of).days if p.due_on else None, "last_on": p.last_on,
            "avg_daily_use": p.avg_daily_use, "interval_days": p.interval_days})


def sample_context(offer: dict[str, Any] | None = None, as_of: date | None = None) -> dict[str, Any]:
    """A complete made-up context for checking templates on an empty base."""
    as_of = as_of or date.today()
    return {
        "customer": {"id": 0, "external_id": "SAMPLE", "name": "Образцова Анна Сергеевна", "first_name": "Анна",
                     "greeting_name": "Анна", "birthday": date(1985, 5, 14), "region": "Москва",
                     "timezone": "Europe/Moscow", "preferred_channel": "email",
                     "attributes": {"internet": "yes", "tv": "no", "years_customer": 5, "contracts": 3,
                                    "digital_tv_trial_months": 1, "has_router": "yes", "support_history": "resolved",
                                    "children": 2, "football_streams_per_month": 4, "football_stream_price": 55,
                                    "haircut_interval_days": 30, "car": "Kia Rio", "pet": "cat"},
                     "manager": {"name": "Анна Иванова", "phone": "+74951230001", "email": "a.ivanova@example.com"}},
        "purchases": {"count": 6, "total": 9600, "average_check": 1600, "first_on": date(2025, 1, 10),
                      "last_on": as_of, "categories": ["business_cards", "cat_goods"],
                      "by_category": {"business_cards": {"count": 5, "total": 8000, "last_on": as_of}},
                      "last": {"product": "Визитки 1000 шт", "category": "business_cards", "quantity": 1000,
                               "amount": 1600, "on": as_of}},
        "events": {"haircut": {"count": 4, "last_on": as_of}, "car_service": {"count": 2, "last_on": as_of},
                   "trip": {"count": 1, "last_on": as_of}},
        "needs": [{"basis": "replenishment", "key": "category:business_cards", "item": "business_cards",
                   "due_on": as_of, "days_left": 5, "last_on": as_of, "avg_daily_use": 25.0, "interval_days": 40.0}],
        "offer": offer or {}, "company": "touchflow", "today": as_of, "locale": "ru_RU",
        "unsubscribe_url": "http://127.0.0.1:8000/unsubscribe/SAMPLE",
    }

"""Read a customer's whole card (article 002: anyone sees the full history) and base-wide counts."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from crm.models import (
    Consent,
    ContactPoint,
    Customer,
    Manager,
    Purchase,
    ServiceEvent,
    Touch,
)

_COUNTED = {
    "customers": Customer,
    "managers": Manager,
    "contact_points": ContactPoint,
    "consents": Consent,
    "purchases": Purchase,
    "service_events": ServiceEvent,
    "touches": Touch,
}


def base_stats(engine: Engine) -> dict[str, int]:
    """Count the rows of every main table."""
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(model.__table__)).scalar_one()
                for name, model in _COUNTED.items()}


def _rows(conn, query) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(query)]


def customer_card(engine: Engine, external_id: str) -> dict[str, Any] | None:
    """Return everything held about one customer record, or None if there is no such record."""
    c, m = Customer.__table__, Manager.__table__
    with engine.connect() as conn:
        row = conn.execute(select(c, m.c.code.label("manager_code"), m.c.name.label("manager_name"))
                           .outerjoin(m, m.c.id == c.c.manager_id).where(c.c.external_id == external_id)).first()
        if row is None:
            return None
        customer = dict(row._mapping)
        cid = customer["id"]
        cp, cs = ContactPoint.__table__, Consent.__table__
        p, e, t = Purchase.__table__, ServiceEvent.__table__, Touch.__table__
        return {
            "customer": customer,
            "contact_points": _rows(conn, select(cp.c.kind, cp.c.value, cp.c.raw, cp.c.status, cp.c.status_reason)
                                    .where(cp.c.customer_id == cid).order_by(cp.c.kind, cp.c.id)),
            "consents": _rows(conn, select(cs.c.id, cs.c.channel, cs.c.purpose, cs.c.granted, cs.c.at, cs.c.source,
                                           cs.c.wording).where(cs.c.customer_id == cid).order_by(cs.c.at, cs.c.id)),
            "purchases": _rows(conn, select(p.c.purchased_on, p.c.product, p.c.category, p.c.quantity, p.c.amount,
                                            p.c.currency).where(p.c.customer_id == cid)
                               .order_by(p.c.purchased_on, p.c.id)),
            "events": _rows(conn, select(e.c.occurred_on, e.c.kind, e.c.note, e.c.attributes)
                            .where(e.c.customer_id == cid).order_by(e.c.occurred_on, e.c.id)),
            "touches": _rows(conn, select(t.c.created_at, t.c.campaign, t.c.channel, t.c.status, t.c.reason,
                                          t.c.offer, t.c.address).where(t.c.customer_id == cid)
                             .order_by(t.c.created_at, t.c.id)),
        }


def render_card(console: Console, card: dict[str, Any]) -> None:
    """Print a customer card as a few rich tables."""
    customer = card["customer"]
    console.print(f"[bold]{customer['name'] or customer['external_id']}[/] ({customer['external_id']})"
                  f" region {customer['region'] or '—'}, birthday {customer['birthday'] or '—'}, "
                  f"manager {customer['manager_name'] or '—'}, prefers {customer['preferred_channel'] or '—'}",
                  highlight=False)
    if customer["attributes"]:
        console.print("attributes: " + ", ".join(f"{k}={v}" for k, v in sorted(customer["attributes"].items())),
                      highlight=False)
    for title, key, columns in (
        ("contact points", "contact_points", ("kind", "value", "status", "status_reason")),
        ("consents", "consents", ("at", "channel", "purpose", "granted", "source", "wording")),
        ("purchases", "purchases", ("purchased_on", "product", "category", "quantity", "amount", "currency")),
        ("visits and events", "events", ("occurred_on", "kind", "note")),
        ("touches", "touches", ("created_at", "campaign", "channel", "status", "reason", "offer")),
    ):
        rows = card[key]
        if not rows:
            continue
        table = Table(title=f"{title} ({len(rows)})", title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
        console.print(table)

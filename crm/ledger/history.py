"""Reading the history: touches and decisions with the consent each relied on, and deferred touches now due."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, case, cast, func, or_, select
from sqlalchemy.engine import Engine

from crm.models import Consent, Customer, Manager, Touch

touches = Touch.__table__
customers = Customer.__table__
consents = Consent.__table__
managers = Manager.__table__


def due_deferred(engine: Engine, campaign: str, now: datetime) -> list[dict[str, Any]]:
    """Deferred touches of ``campaign`` whose quiet hours are over."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(touches).where(touches.c.campaign == campaign, touches.c.status == "deferred",
                                  touches.c.due_at <= now).order_by(touches.c.id))]


def history(engine: Engine, *, customer: str | None = None, campaign: str | None = None, channel: str | None = None,
            status: str | None = None, purpose: str | None = None, manager: str | None = None,
            since: datetime | None = None, until: datetime | None = None, direction: str | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    """Touches and decisions, newest last, with the consent relied upon (a customer: the whole person).

    ``direction`` ``in`` keeps what people wrote back (with its text as ``reply``), ``out`` what was sent.
    """
    query = (select(touches.c.id, touches.c.created_at, customers.c.external_id.label("customer"),
                    touches.c.person_key, touches.c.campaign, touches.c.run_id, touches.c.offer, touches.c.purpose,
                    touches.c.channel, touches.c.address, touches.c.status, touches.c.reason, touches.c.detail,
                    touches.c.template, touches.c.template_hash, touches.c.body_hash, touches.c.provider_message_id,
                    touches.c.error_code, touches.c.error_message, touches.c.sent_at, touches.c.due_at,
                    touches.c.consent_id, touches.c.direction, touches.c.in_reply_to, touches.c.cost,
                    case((touches.c.direction == "in", touches.c.body), else_=None).label("reply"),
                    consents.c.at.label("consent_at"), consents.c.source.label("consent_source"),
                    consents.c.wording.label("consent_wording"))
             .outerjoin(customers, customers.c.id == touches.c.customer_id)
             .outerjoin(consents, consents.c.id == touches.c.consent_id)
             .order_by(touches.c.id))
    if customer:
        person = select(func.coalesce(customers.c.person_id, customers.c.id)).where(
            customers.c.external_id == customer).scalar_subquery()
        same_person = select(customers.c.id).where(customers.c.person_id == person)
        query = query.where(or_(customers.c.external_id == customer, touches.c.customer_id.in_(same_person),
                                touches.c.person_key == cast(person, String)))
    filters = {touches.c.campaign: campaign, touches.c.channel: channel, touches.c.status: status,
               touches.c.purpose: purpose, touches.c.direction: direction}
    query = query.where(*(column == value for column, value in filters.items() if value))
    if manager:
        query = query.where(touches.c.manager_id.in_(select(managers.c.id).where(managers.c.code == manager)))
    if since:
        query = query.where(touches.c.created_at >= since)
    if until:
        query = query.where(touches.c.created_at <= until)
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]

"""What one customer would receive from a template on a day: the offer as a run would show it, every part rendered.

Shared by ``touchflow template preview`` and the console's template preview.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from channels.render import channels_of, meta, render
from channels.render.context import contexts_for
from crm.models import Customer
from flows.spec import resolve_offer
from touchflow.errors import NotFound
from touchflow.settings import Settings

customers = Customer.__table__


def customer_id_of(engine: Engine, external_id: str) -> int:
    """The record's id; ``NotFound`` names the id when there is none."""
    with engine.connect() as conn:
        found = conn.execute(select(customers.c.id).where(customers.c.external_id == external_id)).scalar()
    if found is None:
        raise NotFound(f"no customer with external id {external_id!r}")
    return found


def preview(engine: Engine, template: str, customer_id: int, *, day: date, settings: Settings,
            channels: list[str] | None = None) -> tuple[dict[str, Any], list]:
    """(the offer as resolved on ``day``, the rendered parts per channel) for one customer."""
    offer = resolve_offer(meta(template).get("offer", {}), {}, day, template=template, campaign="template preview")
    context = contexts_for(engine, [customer_id], offer=offer, company=settings.company_name, as_of=day)[customer_id]
    parts = [render(template, channel, context, sms_max_segments=settings.sms_max_segments,
                    sms_over_limit=settings.sms_over_limit)
             for channel in channels or channels_of(template)]
    return offer, parts

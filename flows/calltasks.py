"""Manager call tasks: the ``call`` channel's sink. The customer's own rep when active, else the least loaded.

The task carries the rendered call script, a due date and the calling window (outside quiet hours
in the customer's time zone). At most one open task per person is enforced by the ``call`` lock
taken when the touch is claimed.
"""

from __future__ import annotations

import asyncio
from datetime import date

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from channels.base import Message
from crm.db import write_tx
from crm.models import CallTask, Customer, Manager, utcnow

tasks = CallTask.__table__
managers = Manager.__table__
customers = Customer.__table__


def assign_manager(conn, customer_id: int) -> int | None:
    """The customer's owning manager when active, otherwise the active rep with the fewest open tasks."""
    owner = conn.execute(select(managers.c.id).join(customers, customers.c.manager_id == managers.c.id)
                         .where(customers.c.id == customer_id, managers.c.active.is_(True))).scalar()
    if owner is not None:
        return owner
    if conn.dialect.name == "postgresql":  # serialise concurrent assignments (SQLite's write lock already does)
        conn.execute(select(managers.c.id).where(managers.c.active.is_(True)).with_for_update()).all()
    load = (select(managers.c.id, func.count(tasks.c.id).label("open"))
            .outerjoin(tasks, (tasks.c.manager_id == managers.c.id) & (tasks.c.status == "open"))
            .where(managers.c.active.is_(True)).group_by(managers.c.id).order_by("open", managers.c.id))
    row = conn.execute(load).first()
    return row.id if row else None


def create_task(engine: Engine, message: Message, *, campaign: str, offer: str, due_on: date,
                window: tuple[str, str] = ("09:00", "21:00")) -> str:
    """Insert the call task for a claimed call touch; return its id."""
    meta = message.metadata
    with write_tx(engine) as conn:
        manager = assign_manager(conn, meta["customer_id"])
        task_id = conn.execute(insert(tasks).values(
            touch_id=meta.get("touch_id"), customer_id=meta["customer_id"], person_id=meta["person_id"],
            manager_id=manager, campaign=campaign, offer=offer, phone=message.to, script=message.text,
            document_path=meta.get("document"),
            due_on=due_on, window_start=window[0], window_end=window[1], status="open",
            created_at=utcnow()).returning(tasks.c.id)).scalar_one()
    return f"task-{task_id}"


def make_task_sink(engine: Engine, *, campaign: str, offer: str, as_of: date):
    """The async sink the call channel hands messages to."""
    async def sink(message: Message) -> str:
        return await asyncio.to_thread(create_task, engine, message, campaign=campaign, offer=offer, due_on=as_of)
    return sink

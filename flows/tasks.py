"""Working the call tasks: list, export the administrator's call schedule, record each call's outcome.

Every outcome is a touch in the history. ``callback`` creates the next task on the agreed date
("call me in two months") and keeps the person's open-call lock on it; ``wrong_number`` marks the
phone invalid; ``declined`` with ``opt_out`` revokes marketing consent on every channel; the other
outcomes close the task and free the person for the next call.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from crm.db import write_tx
from crm.models import (
    CallTask,
    Consent,
    ContactLock,
    ContactPoint,
    ContactStatus,
    Customer,
    Manager,
    Touch,
    TouchEvent,
    utcnow,
)

OUTCOMES = ("reached", "no_answer", "callback", "declined", "wrong_number")
STATUS_OF = {"reached": "delivered", "callback": "delivered", "declined": "delivered", "no_answer": "failed",
             "wrong_number": "failed"}
tasks = CallTask.__table__
managers = Manager.__table__
customers = Customer.__table__
touches = Touch.__table__
locks = ContactLock.__table__
contacts = ContactPoint.__table__


class TaskError(ValueError):
    """A task is unknown or closed, or an outcome is wrong."""


@dataclass
class Completion:
    """What completing a task did."""

    task_id: int
    outcome: str
    touch_id: int
    next_task_id: int | None = None


def list_tasks(engine: Engine, *, manager: str | None = None, due: date | None = None, status: str = "open"
               ) -> list[dict[str, Any]]:
    """Tasks with customer and rep, earliest due first."""
    query = (select(tasks.c.id, tasks.c.due_on, tasks.c.window_start, tasks.c.window_end, tasks.c.status,
                    tasks.c.outcome, tasks.c.campaign, tasks.c.offer, tasks.c.phone, tasks.c.script, tasks.c.note,
                    customers.c.external_id.label("customer"), customers.c.name.label("customer_name"),
                    customers.c.timezone, managers.c.code.label("manager"), managers.c.name.label("manager_name"))
             .join(customers, customers.c.id == tasks.c.customer_id)
             .outerjoin(managers, managers.c.id == tasks.c.manager_id)
             .order_by(tasks.c.due_on, tasks.c.id))
    if status != "all":
        query = query.where(tasks.c.status == status)
    if manager:
        query = query.where(managers.c.code == manager)
    if due:
        query = query.where(tasks.c.due_on <= due)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def export_schedule(engine: Engine, manager: str, out: Path) -> int:
    """Write a rep's open tasks as the administrator's call schedule (CSV, Excel-friendly UTF-8)."""
    rows = list_tasks(engine, manager=manager)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(["task", "due", "window", "customer", "name", "phone", "campaign", "script"])
        for row in rows:
            writer.writerow([row["id"], row["due_on"], f"{row['window_start']}–{row['window_end']}", row["customer"],
                             row["customer_name"], row["phone"], row["campaign"], row["script"]])
    return len(rows)


def complete(engine: Engine, task_id: int, outcome: str, *, callback_on: date | None = None, note: str | None = None,
             opt_out: bool = False, today: date | None = None) -> Completion:
    """Close a task with its outcome (see the module docstring); return what was done."""
    if outcome not in OUTCOMES:
        raise TaskError(f"unknown outcome {outcome!r}; choose one of: {', '.join(OUTCOMES)}")
    today = today or date.today()
    if outcome == "callback" and (callback_on is None or callback_on <= today):
        raise TaskError("a callback needs --callback-on with a future date (e.g. two months from now)")
    now = utcnow()
    with write_tx(engine) as conn:
        task = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
        if task is None:
            raise TaskError(f"no call task {task_id}")
        if task.status != "open":
            raise TaskError(f"call task {task_id} is already closed ({task.outcome})")
        original = conn.execute(select(touches).where(touches.c.id == task.touch_id)).first() if task.touch_id else None
        status = STATUS_OF[outcome]
        touch_id = conn.execute(insert(touches).values(
            claim_key=None, person_key=str(task.person_id), customer_id=task.customer_id, campaign=task.campaign,
            run_id=original.run_id if original else None, offer=task.offer,
            purpose=original.purpose if original else "marketing", channel="call",
            contact_point_id=original.contact_point_id if original else None, address=task.phone, status=status,
            reason=f"call_{outcome}", detail=note, manager_id=task.manager_id,
            consent_id=original.consent_id if original else None, created_at=now, updated_at=now,
            sent_at=now).returning(touches.c.id)).scalar_one()
        conn.execute(insert(TouchEvent.__table__).values(touch_id=touch_id, status=status, at=now,
                                                         detail=f"call task {task_id}: {outcome}"))
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(status="done", outcome=outcome, note=note,
                                                                         closed_at=now))
        next_id = None
        if outcome == "callback":
            next_id = conn.execute(insert(tasks).values(
                touch_id=touch_id, customer_id=task.customer_id, person_id=task.person_id, manager_id=task.manager_id,
                campaign=task.campaign, offer=task.offer, phone=task.phone, script=task.script, due_on=callback_on,
                window_start=task.window_start, window_end=task.window_end, status="open",
                note=f"callback agreed on {today}: {note or ''}".strip(), created_at=now)
                .returning(tasks.c.id)).scalar_one()
            conn.execute(update(locks).where(locks.c.person_id == task.person_id, locks.c.scope == "call")
                         .values(touch_id=touch_id))
        else:
            conn.execute(locks.delete().where(locks.c.person_id == task.person_id, locks.c.scope == "call"))
        if outcome == "wrong_number" and original is not None and original.contact_point_id:
            conn.execute(update(contacts).where(contacts.c.id == original.contact_point_id).values(
                status=ContactStatus.invalid.value, status_reason=f"wrong number (call task {task_id})",
                updated_at=now))
        if outcome == "declined" and opt_out:
            conn.execute(insert(Consent.__table__).values(
                customer_id=task.customer_id, channel="all", purpose="marketing", granted=False, at=now,
                source=f"call_task:{task_id}", wording=note or "declined on the call and asked not to be contacted",
                recorded_at=now))
    return Completion(task_id, outcome, touch_id, next_id)

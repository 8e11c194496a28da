"""Call tasks for sales reps: assign them within capacity, list them, move them, record each call's outcome.

A task goes to the customer's own rep when active and under their daily call capacity that day,
otherwise to the active rep least loaded against capacity that is under it, otherwise to the
least loaded; the task's note says why it is not with the customer's rep. Assignment is
serialised, so concurrent runs stay fair. A rep's load on a day is the calls on their list that
day: their tasks due that day and their open tasks overdue from earlier days. Deactivating a rep
moves their open tasks and their customers to other reps (one named, or shared against
capacity), each move written to ``reassignments``.

At most one open task per person is enforced by the ``call`` lock taken when the touch is
claimed. Every outcome is a touch in the history. ``callback`` creates the next task on the
agreed date ("call me in two months") and keeps the person's open-call lock on it;
``wrong_number`` marks the number invalid on every record; ``opt_out`` (or ``declined`` with
``opt_out``) revokes marketing on every channel for the person; the other outcomes close the
task and free the person for the next call.
"""

from __future__ import annotations

import csv
import heapq
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from crm.db import write_tx
from crm.ledger import consents
from crm.ledger.contacts import mark_address
from crm.ledger.touches import record_touch
from crm.models import (
    CallTask,
    ContactLock,
    ContactPoint,
    ContactStatus,
    Customer,
    Manager,
    Reassignment,
    Touch,
    utcnow,
)
from touchflow.errors import InputError, NotFound

OUTCOMES = ("reached", "no_answer", "callback", "declined", "opt_out", "wrong_number")
STATUS_OF = {"reached": "delivered", "callback": "delivered", "declined": "delivered", "opt_out": "delivered",
             "no_answer": "failed", "wrong_number": "failed"}
tasks = CallTask.__table__
managers = Manager.__table__
customers = Customer.__table__
touches = Touch.__table__
locks = ContactLock.__table__
moves = Reassignment.__table__
contacts = ContactPoint.__table__


class TaskError(InputError):
    """An outcome is wrong, or the task is closed."""


class TaskNotFound(NotFound, TaskError):
    """No such call task."""


class RepNotFound(NotFound, TaskError):
    """No rep with that code."""


class Assignment(NamedTuple):
    """Who gets a new call task, and why when it is not the customer's own rep (the task's note)."""

    manager_id: int | None
    note: str | None = None


@dataclass(frozen=True)
class RepLoad:
    """A rep with their work: open tasks, calls on their list on ``day``, customers, against capacity."""

    id: int
    code: str
    name: str
    needs_name: bool
    active: bool
    capacity: int
    open_tasks: int
    day_load: int
    customers: int = 0

    @property
    def under_capacity(self) -> bool:
        return self.day_load < self.capacity

    def pressure(self, load: int) -> float:
        """``load`` against capacity: what fair shares and the least-loaded choice compare."""
        return load / self.capacity if self.capacity else float("inf")


@dataclass
class Completion:
    """What completing a task did."""

    task_id: int
    outcome: str
    touch_id: int
    next_task_id: int | None = None


def _day_load(day: date):
    """Counts a rep's calls on ``day``: tasks due that day, and open ones overdue from before."""
    return func.coalesce(func.sum(case((or_(tasks.c.due_on == day, and_(tasks.c.due_on < day,
                                                                          tasks.c.status == "open")), 1),
                                       else_=0)), 0)


def rep_loads(conn: Connection, day: date, *, ids: list[int] | None = None, active_only: bool = False
              ) -> list[RepLoad]:
    """Every rep (or those of ``ids``) with open tasks, the load on ``day`` and customers, by code."""
    work = (select(tasks.c.manager_id, func.count().filter(tasks.c.status == "open").label("open"),
                   _day_load(day).label("day")).where(tasks.c.manager_id.is_not(None))
            .group_by(tasks.c.manager_id).subquery())
    owned = (select(customers.c.manager_id, func.count().label("n")).where(customers.c.manager_id.is_not(None))
             .group_by(customers.c.manager_id).subquery())
    query = (select(managers.c.id, managers.c.code, managers.c.name, managers.c.needs_name, managers.c.active,
                    managers.c.daily_call_capacity, func.coalesce(work.c.open, 0), func.coalesce(work.c.day, 0),
                    func.coalesce(owned.c.n, 0))
             .outerjoin(work, work.c.manager_id == managers.c.id).outerjoin(owned, owned.c.manager_id == managers.c.id)
             .order_by(managers.c.code))
    if ids is not None:
        query = query.where(managers.c.id.in_(ids))
    if active_only:
        query = query.where(managers.c.active.is_(True))
    return [RepLoad(*row) for row in conn.execute(query)]


def _lock_reps(conn: Connection, ids: list[int] | None = None) -> None:
    """Serialise assignments on PostgreSQL (SQLite's write lock already does): lock the reps' rows."""
    if conn.dialect.name == "postgresql":
        query = select(managers.c.id).where(managers.c.active.is_(True) if ids is None else managers.c.id.in_(ids))
        conn.execute(query.with_for_update()).all()


def assign_manager(conn: Connection, customer_id: int, day: date | None = None) -> Assignment:
    """The rep for a new call task due on ``day`` (see the module docstring), with the reason in a note."""
    day = day or date.today()
    owner_id = conn.execute(select(customers.c.manager_id).where(customers.c.id == customer_id)).scalar()
    owner = None
    if owner_id is not None:
        _lock_reps(conn, [owner_id])
        owner = next(iter(rep_loads(conn, day, ids=[owner_id])), None)
        if owner is not None and owner.active and owner.under_capacity:
            return Assignment(owner.id)
    _lock_reps(conn)
    return choose_rep(owner, rep_loads(conn, day, active_only=True), day)


def choose_rep(owner: RepLoad | None, active: list[RepLoad], day: date) -> Assignment:
    """The least-loaded active rep under capacity, else the least loaded; the note says why not ``owner``."""
    if not active:
        return Assignment(None, "no active rep to take the call; add reps with `touchflow managers import`")
    under = [rep for rep in active if rep.under_capacity]
    chosen = min(under or active, key=lambda rep: (rep.pressure(rep.day_load), rep.day_load, rep.id))
    why = []
    if owner is not None:
        why.append(f"the customer's rep {owner.code} is inactive" if not owner.active else
                   f"the customer's rep {owner.code} is at capacity ({owner.day_load} of {owner.capacity} calls "
                   f"on {day:%Y-%m-%d})")
    if not under:
        why.append(f"every active rep is at capacity on {day:%Y-%m-%d}; given to the least loaded, {chosen.code} "
                   f"({chosen.day_load} of {chosen.capacity})")
    return Assignment(chosen.id, "; ".join(why) or None)


def create_task(engine: Engine, *, touch_id: int | None, customer_id: int, person_id: int, phone: str,
                script: str, campaign: str | None, offer: str | None, due_on: date,
                document_path: str | None = None, window: tuple[str, str] = ("09:00", "21:00")) -> int:
    """Insert the call task for a claimed call touch, assigned to a rep; return its id."""
    with write_tx(engine) as conn:
        manager, note = assign_manager(conn, customer_id, due_on)
        return conn.execute(insert(tasks).values(
            touch_id=touch_id, customer_id=customer_id, person_id=person_id, manager_id=manager, campaign=campaign,
            offer=offer, phone=phone, script=script, document_path=document_path, due_on=due_on,
            window_start=window[0], window_end=window[1], status="open", note=note, created_at=utcnow())
            .returning(tasks.c.id)).scalar_one()


def request_call(conn: Connection, *, customer_id: int, touch_id: int | None, script: str, note: str,
                 due_on: date, campaign: str | None) -> tuple[int, bool]:
    """A call asked for outside a campaign (an order in the Telegram bot); return (task id, whether it is new).

    The person's open task, when they have one, takes the request in its note instead of a second
    task: two open tasks would call them twice, and closing either would free the other's call lock.
    """
    person_id = conn.execute(select(func.coalesce(customers.c.person_id, customers.c.id))
                             .where(customers.c.id == customer_id)).scalar_one()
    open_task = conn.execute(select(tasks.c.id, tasks.c.note).where(tasks.c.person_id == person_id,
                                                                    tasks.c.status == "open")
                             .order_by(tasks.c.due_on, tasks.c.id).limit(1)).first()
    if open_task is not None:
        joined = "; ".join(part for part in (open_task.note, note) if part)[:2000]
        conn.execute(update(tasks).where(tasks.c.id == open_task.id).values(note=joined))
        return open_task.id, False
    manager, why = assign_manager(conn, customer_id, due_on)
    phone = conn.execute(select(contacts.c.value).where(contacts.c.customer_id == customer_id,
                                                        contacts.c.kind == "phone", contacts.c.status == "active")
                         .order_by(contacts.c.id).limit(1)).scalar()
    task_note = "; ".join(part for part in (note, why) if part)[:2000]
    return conn.execute(insert(tasks).values(
        touch_id=touch_id, customer_id=customer_id, person_id=person_id, manager_id=manager, campaign=campaign,
        phone=phone, script=script, due_on=due_on, window_start="09:00", window_end="21:00", status="open",
        note=task_note, created_at=utcnow()).returning(tasks.c.id)).scalar_one(), True


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


def rep_queue(engine: Engine, manager_id: int, *, due: date, after: tuple[date, int] | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    """A rep's open tasks due by ``due`` (overdue first), keyset-paged by (due_on, id) after ``after``."""
    query = (select(tasks.c.id, tasks.c.due_on, tasks.c.window_start, tasks.c.window_end, tasks.c.campaign,
                    tasks.c.phone, customers.c.name.label("customer_name"))
             .join(customers, customers.c.id == tasks.c.customer_id)
             .where(tasks.c.manager_id == manager_id, tasks.c.status == "open", tasks.c.due_on <= due)
             .order_by(tasks.c.due_on, tasks.c.id).limit(limit))
    if after is not None:
        query = query.where(or_(tasks.c.due_on > after[0], and_(tasks.c.due_on == after[0], tasks.c.id > after[1])))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def task(engine: Engine, task_id: int, *, manager_id: int | None = None) -> dict[str, Any] | None:
    """One task with its customer's name; None when it does not exist or is another rep's (``manager_id``)."""
    query = (select(tasks, customers.c.name.label("customer_name"))
             .join(customers, customers.c.id == tasks.c.customer_id).where(tasks.c.id == task_id))
    if manager_id is not None:
        query = query.where(tasks.c.manager_id == manager_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return dict(row._mapping) if row else None


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
            raise TaskNotFound(f"no call task {task_id}; list them with `touchflow tasks list`")
        if task.status != "open":
            raise TaskError(f"call task {task_id} is already closed ({task.outcome})")
        original = conn.execute(select(touches).where(touches.c.id == task.touch_id)).first() if task.touch_id else None
        touch_id = record_touch(conn, _outcome_row(task, original, outcome, note, now))
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
        if outcome == "wrong_number" and task.phone:
            mark_address(conn, "phone", task.phone, ContactStatus.invalid.value, f"wrong number (call task {task_id})")
        if outcome == "opt_out" or (outcome == "declined" and opt_out):
            consents.record(conn, channel="all", purpose="marketing", granted=False, source=f"call_task:{task_id}",
                            wording=note or "asked on the call not to be contacted", customer_ids=[task.customer_id])
    return Completion(task_id, outcome, touch_id, next_id)


def _outcome_row(task: Any, original: Any, outcome: str, note: str | None, now) -> dict[str, Any]:
    """The touch a call's outcome leaves in the history (it inherits the call touch's run, consent and address)."""
    return {"person_key": str(task.person_id), "customer_id": task.customer_id, "campaign": task.campaign,
            "run_id": original.run_id if original else None, "offer": task.offer,
            "purpose": original.purpose if original else "marketing", "channel": "call",
            "contact_point_id": original.contact_point_id if original else None, "address": task.phone,
            "address_digest": None, "status": STATUS_OF[outcome],
            "reason": f"call_{outcome}", "detail": note, "manager_id": task.manager_id,
            "consent_id": original.consent_id if original else None, "created_at": now, "updated_at": now}


def fair_share(count: int, reps: list[RepLoad], load_of) -> list[int]:
    """Rep ids for ``count`` items, each to the rep whose load (``load_of(rep)``) after it is lowest against capacity.

    Reps with no capacity take a share only when no rep has any.
    """
    pool = [rep for rep in reps if rep.capacity > 0] or reps
    heap = [((load_of(rep) + 1) / max(rep.capacity, 1), load_of(rep), rep.id, rep) for rep in pool]
    heapq.heapify(heap)
    chosen = []
    for _ in range(count):
        _, load, _, rep = heapq.heappop(heap)
        chosen.append(rep.id)
        heapq.heappush(heap, ((load + 2) / max(rep.capacity, 1), load + 1, rep.id, rep))
    return chosen


def reassign(conn: Connection, *, task_moves: list[tuple[int, int]], customer_moves: list[tuple[int, int]],
             reason: str, now: datetime) -> None:
    """Move call tasks and customers (``(id, to_manager_id)``) to other reps, each move recorded with ``reason``."""
    records = []
    for table, subject, pairs in ((tasks, "call_task", task_moves), (customers, "customer", customer_moves)):
        ids = [item for item, _ in pairs]
        key = tasks.c.customer_id if subject == "call_task" else customers.c.id
        before = {row.id: row for row in conn.execute(select(table.c.id, table.c.manager_id, key.label("customer"))
                                                      .where(table.c.id.in_(ids)))} if ids else {}
        for item, to in pairs:
            conn.execute(update(table).where(table.c.id == item).values(manager_id=to))
            records.append({"subject": subject, "subject_id": item, "customer_id": before[item].customer,
                            "from_manager_id": before[item].manager_id, "to_manager_id": to,
                            "reason": reason[:500], "at": now})
    if records:
        conn.execute(insert(moves), records)


def deactivate(engine: Engine, code: str, *, reassign_to: str | None = None, today: date | None = None
               ) -> dict[str, Any]:
    """Deactivate a rep, moving their open call tasks and their customers (see the module docstring).

    With ``reassign_to`` everything goes to that rep; otherwise tasks are shared among the active reps
    by open tasks against capacity, a customer follows their open task, and the other customers are
    shared by customers against capacity. Returns what moved where (by rep code).
    """
    today, now = today or date.today(), utcnow()
    with write_tx(engine) as conn:
        _lock_reps(conn)
        reps = {rep.code: rep for rep in rep_loads(conn, today)}
        leaving = reps.get(code)
        if leaving is None:
            raise RepNotFound(f"no rep with code {code!r}; `touchflow managers list` shows them")
        targets = _targets(reps, leaving, reassign_to)
        open_tasks = conn.execute(select(tasks.c.id, tasks.c.customer_id).where(
            tasks.c.manager_id == leaving.id, tasks.c.status == "open").order_by(tasks.c.due_on, tasks.c.id)).all()
        owned = list(conn.execute(select(customers.c.id).where(customers.c.manager_id == leaving.id)
                                  .order_by(customers.c.id)).scalars())
        if (open_tasks or owned) and not targets:
            raise TaskError(f"rep {code} has {len(open_tasks)} open call tasks and {len(owned)} customers and no "
                            "other active rep can take them; add or activate one (`touchflow managers import`), "
                            "or name one with --reassign-to CODE")
        task_moves = list(zip([t.id for t in open_tasks], fair_share(len(open_tasks), targets,
                                                                     lambda rep: rep.open_tasks)))
        follows = {t.customer_id: to for t, (_, to) in zip(open_tasks, task_moves)}
        customer_moves = [(cid, follows[cid]) for cid in owned if cid in follows]
        followed = Counter(to for _, to in customer_moves)
        rest = [cid for cid in owned if cid not in follows]
        customer_moves += list(zip(rest, fair_share(len(rest), targets,
                                                    lambda rep: rep.customers + followed[rep.id])))
        how = f"handed to {reassign_to}" if reassign_to else "shared among the active reps by load and capacity"
        reassign(conn, task_moves=task_moves, customer_moves=customer_moves,
                 reason=f"rep {code} deactivated on {today:%Y-%m-%d}; {how}", now=now)
        conn.execute(update(managers).where(managers.c.id == leaving.id).values(active=False))
    codes = {rep.id: rep.code for rep in reps.values()}
    return {"manager": code, "was_active": leaving.active,
            "tasks": dict(Counter(codes[to] for _, to in task_moves)),
            "customers": dict(Counter(codes[to] for _, to in customer_moves))}


def _targets(reps: dict[str, RepLoad], leaving: RepLoad, reassign_to: str | None) -> list[RepLoad]:
    """The reps who take a leaving rep's work: the one named (active, another), else every other active rep."""
    if reassign_to is None:
        return [rep for rep in reps.values() if rep.active and rep.id != leaving.id]
    target = reps.get(reassign_to)
    if target is None:
        raise RepNotFound(f"--reassign-to {reassign_to}: no rep with that code; `touchflow managers list` shows them")
    if target.id == leaving.id or not target.active:
        raise TaskError(f"--reassign-to {reassign_to}: " + ("that is the rep being deactivated" if target.id ==
                        leaving.id else "that rep is inactive") + "; name an active rep, or leave --reassign-to out "
                        "to share the work among the active reps")
    return [target]


def list_reps(engine: Engine, day: date | None = None) -> list[dict[str, Any]]:
    """Every rep with contacts, capacity, open tasks, the load on ``day`` (default today) and customers."""
    day = day or date.today()
    with engine.connect() as conn:
        loads = {rep.id: rep for rep in rep_loads(conn, day)}
        rows = conn.execute(select(managers.c.id, managers.c.position, managers.c.phone, managers.c.email)
                            .order_by(managers.c.code)).all()
    return [{"code": (rep := loads[row.id]).code, "name": rep.name, "needs_name": rep.needs_name,
             "position": row.position, "phone": row.phone, "email": row.email, "active": rep.active,
             "capacity": rep.capacity, "open_tasks": rep.open_tasks, "load": rep.day_load,
             "at_capacity": not rep.under_capacity, "customers": rep.customers, "day": day} for row in rows]

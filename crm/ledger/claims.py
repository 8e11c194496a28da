"""Claims: what the policy needs to know about candidates, and the person's locks that make a touch theirs.

A touch is claimed by committed rows before anything is sent: the touch itself (unique claim key)
and the person's locks (unique person / scope / key): the offer and offer-group cooldowns, a
frequency-cap slot and the minimum gap for marketing, the open call task. Two runs that select
the same person cannot both hold them, on SQLite and PostgreSQL alike; the loser records why it
did not contact. Which locks a claim needs and why one is refused is ``crm.ledger.arbitration``
(pure, shared with dry runs and the plan's simulator). Locks belong to the person, so they
follow records merged into one person (``rekey_persons``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from crm.bulk import bulk_insert
from crm.db import in_chunks, one_of, write_tx
from crm.ledger import budget
from crm.ledger.arbitration import THIS_BATCH, Holder, Refusal, Terms, blocked, wanted_locks
from crm.ledger.policy import Candidate, ConsentState, ContactOption, Decision
from crm.ledger.touches import insert_touches
from crm.models import CallTask, Consent, ContactLock, ContactPoint, Customer, Touch

touches = Touch.__table__
locks = ContactLock.__table__
customers = Customer.__table__
contacts = ContactPoint.__table__
consents = Consent.__table__
tasks = CallTask.__table__
LOCK_COLUMNS = ("person_id", "scope", "key", "touch_id", "expires_at", "created_at", "priority")


@dataclass
class Claimed:
    """A claimed touch, ready to send (or deferred)."""

    touch_id: int
    decision: Decision


def load_candidates(conn: Connection, customer_ids: list[int]) -> list[Candidate]:
    """Customers with their contact points and the person's latest consent entries, in id order.

    Consent is the person's: the latest entry of any of their records decides (an opt-out given
    through one record holds for the others).
    """
    result: dict[int, Candidate] = {}
    members: dict[int, list[int]] = {}
    for chunk in in_chunks(customer_ids):
        for row in conn.execute(select(customers.c.id, customers.c.person_id, customers.c.timezone,
                                       customers.c.preferred_channel).where(one_of(conn, customers.c.id, chunk))):
            person = row.person_id or row.id
            result[row.id] = Candidate(row.id, person, row.timezone, row.preferred_channel, [], {})
            members.setdefault(person, []).append(row.id)
        for row in conn.execute(select(contacts.c.id, contacts.c.customer_id, contacts.c.kind, contacts.c.value,
                                       contacts.c.status).where(one_of(conn, contacts.c.customer_id, chunk))):
            result[row.customer_id].contacts.append(ContactOption(row.id, row.kind, row.value, row.status))
    latest: dict[int, dict[tuple[str, str], ConsentState]] = {}
    for person, entries in _person_consents(conn, list(members)).items():
        for channel, purpose, state in entries:
            latest.setdefault(person, {})[(channel, purpose)] = state
    for candidate in result.values():
        candidate.consents.update(latest.get(candidate.person_id, {}))
    return [result[cid] for cid in customer_ids if cid in result]


def _person_consents(conn: Connection, persons: list[int]) -> dict[int, list[tuple[str, str, ConsentState]]]:
    """Every consent entry of the persons' records, oldest first (the last one per key decides)."""
    found: dict[int, list[tuple[Any, ...]]] = {}
    person = customers.c.person_id
    for chunk in in_chunks(persons):
        query = (select(person, consents.c.id, consents.c.channel, consents.c.purpose, consents.c.granted,
                        consents.c.at)
                 .join(customers, customers.c.id == consents.c.customer_id).where(one_of(conn, person, chunk)))
        for row in conn.execute(query):
            found.setdefault(row.person_id, []).append(row)
    return {p: [(r.channel, r.purpose, ConsentState(r.granted, r.id, r.at))
                for r in sorted(rows, key=lambda r: (r.at, r.id))] for p, rows in found.items()}


def claim(engine: Engine, decisions: list[Decision], rows: list[dict[str, Any]],
          terms: Terms) -> tuple[list[Claimed], list[dict[str, Any]]]:
    """Claim touches for ``decisions`` (with their prepared ``rows``); return (claimed, decisions not to contact).

    Runs in one write transaction (``BEGIN IMMEDIATE`` on SQLite) with a savepoint per person when
    another run got there first; committed before any message leaves.
    """
    claimed: list[Claimed] = []
    if not decisions:
        return claimed, []
    with write_tx(engine) as conn:
        if terms.budget is not None:
            budget.lock(conn, terms.campaign)  # first: no other claim of the campaign commits until this one does
        held, holders = _held_locks(conn, sorted({d.person_id for d in decisions}), terms.now)
        planned, refused = plan(held, holders, decisions, rows, terms)
        if terms.budget is not None:
            planned, over = _within_budget(conn, planned, terms.campaign, terms.budget)
            refused.extend(over)
        try:
            with conn.begin_nested():
                claimed.extend(_claim_all(conn, planned, terms))
        except IntegrityError:
            # another run claimed some of these people meanwhile: claim one by one, keep what is still free
            for item in planned:
                try:
                    with conn.begin_nested():
                        claimed.extend(_claim_all(conn, [item], terms))
                except IntegrityError:
                    decision, row, _ = item
                    now_held, now_holders = _held_locks(conn, [decision.person_id], terms.now, delete_expired=False)
                    no = blocked(decision, now_held.get(decision.person_id, {}), now_holders, set(), terms)
                    no = no or Refusal("cooling_down", "another run claimed this person first")
                    refused.append(_refusal(row, no))
    return claimed, refused


def _within_budget(conn: Connection, planned: list, campaign: str,
                   limit: Decimal) -> tuple[list, list[dict[str, Any]]]:
    """The planned claims that fit in the campaign's budget, and the rest as ``budget_exhausted`` decisions."""
    so_far = budget.spent(conn, campaign)
    kept = budget.fitting([row.get("cost") for _, row, _ in planned], so_far, limit)
    spent_then = so_far + sum((row.get("cost") or 0 for _, row, _ in planned[:kept]), Decimal(0))
    return planned[:kept], [_refusal(row, Refusal("budget_exhausted", budget.exhausted(limit, spent_then,
                                                                                          row.get("cost"))))
                            for _, row, _ in planned[kept:]]


def plan(held: dict, holders: dict, decisions: list[Decision], rows: list[dict[str, Any]],
         terms: Terms) -> tuple[list, list[dict[str, Any]]]:
    """Which decisions may claim (with the locks each takes) and which are refused, from the persons' locks.

    Pure over ``held`` (person → (scope, key) → holding touch), which it updates with the locks it
    plans, so several records of one person in a batch see each other. ``claim`` writes the plan;
    ``preview`` (a dry run) and the plan's simulator only count it.
    """
    this_run = {tid for tid, holder in holders.items() if holder.run_id == terms.run_id} | {THIS_BATCH}
    holders = {**holders, THIS_BATCH: Holder(terms.campaign, terms.now, terms.run_id, terms.priority, terms.offer)}
    planned, refused = [], []
    for decision, row in zip(decisions, rows):
        mine = held.setdefault(decision.person_id, {})
        no = blocked(decision, mine, holders, this_run, terms)
        if no is not None:
            refused.append(_refusal(row, no))
            continue
        wanted = wanted_locks(decision, mine, holders, terms)
        for scope, key, _ in wanted:
            mine[(scope, key)] = THIS_BATCH  # held by this batch from here on
        planned.append((decision, row, wanted))
    return planned, refused


def preview(engine: Engine, decisions: list[Decision], rows: list[dict[str, Any]], terms: Terms,
            simulated: dict[int, dict]) -> tuple[list, list[dict]]:
    """What ``claim`` would do now, writing nothing (a dry run): (would claim, refused with reasons).

    ``simulated`` carries the locks this dry run would have taken across batches, for the persons
    that have several records (the only ones a later batch can meet again).
    """
    if not decisions:
        return [], []
    persons = sorted({d.person_id for d in decisions})
    with engine.connect() as conn:
        held, holders = _held_locks(conn, persons, terms.now, delete_expired=False)
    for person in persons:
        held.setdefault(person, {}).update(simulated.get(person, {}))
    planned, refused = plan(held, holders, decisions, rows, terms)
    for decision, _, wanted in planned:
        if decision.person_id in simulated:
            simulated[decision.person_id].update({(scope, key): THIS_BATCH for scope, key, _ in wanted})
    return planned, refused


def shared_persons(engine: Engine) -> set[int]:
    """Persons with more than one record: the ones whose claims a dry run must remember across batches."""
    with engine.connect() as conn:
        return set(conn.execute(select(customers.c.person_id).where(customers.c.person_id != customers.c.id)
                                .distinct()).scalars())


def held_locks(conn: Connection, persons: list[int], now: datetime) -> tuple[dict, dict[int, Holder]]:
    """The persons' live locks and their holders, read only (the plan's simulator starts from them)."""
    return _held_locks(conn, persons, now, delete_expired=False)


def _held_locks(conn: Connection, persons: list[int], now: datetime, *,
                delete_expired: bool = True) -> tuple[dict, dict[int, Holder]]:
    """The persons' live locks (expired ones deleted first, or left out) and the touches holding them."""
    held: dict[int, dict[tuple[str, str], int | None]] = {}
    priority: dict[int, int | None] = {}
    live = locks.c.expires_at.is_(None) | (locks.c.expires_at > now)
    for chunk in in_chunks(persons):
        if delete_expired:
            conn.execute(delete(locks).where(one_of(conn, locks.c.person_id, chunk), ~live))
        for row in conn.execute(select(locks.c.person_id, locks.c.scope, locks.c.key, locks.c.touch_id,
                                       locks.c.priority).where(one_of(conn, locks.c.person_id, chunk), live)):
            held.setdefault(row.person_id, {})[(row.scope, row.key)] = row.touch_id
            if row.touch_id is not None:
                priority[row.touch_id] = row.priority
    holders: dict[int, Holder] = {}
    for chunk in in_chunks(sorted(priority)):
        for row in conn.execute(select(touches.c.id, touches.c.run_id, touches.c.campaign, touches.c.created_at,
                                       touches.c.offer).where(one_of(conn, touches.c.id, chunk))):
            holders[row.id] = Holder(row.campaign, row.created_at, row.run_id, priority[row.id], row.offer)
    return held, holders


def _claim_all(conn: Connection, planned: list, terms: Terms) -> list[Claimed]:
    """Insert touches (with their claim events) and locks for planned claims: a few statements for the whole list."""
    if not planned:
        return []
    ids = insert_touches(conn, [row for _, row, _ in planned])
    lock_rows = [{"person_id": decision.person_id, "scope": scope, "key": key, "touch_id": touch_id,
                  "expires_at": expires, "created_at": terms.now, "priority": terms.priority}
                 for touch_id, (decision, _, wanted) in zip(ids, planned) for scope, key, expires in wanted]
    bulk_insert(conn, locks, LOCK_COLUMNS, lock_rows)
    return [Claimed(touch_id, decision) for touch_id, (decision, _, _) in zip(ids, planned)]


def _refusal(row: dict[str, Any], no: Refusal) -> dict[str, Any]:
    """The decision not to contact, as a history row (``winner``, not a column, is for counting conflicts)."""
    refused = dict(row)
    refused.update(status="skipped", reason=no.reason, detail=no.detail, claim_key=None, due_at=None, winner=no.winner,
                   cost=None)
    return refused


def transfer(engine: Engine, from_touch_id: int, row: dict[str, Any], limit: Decimal | None = None) -> int | None:
    """A fallback: write a claimed touch on another channel and hand it the failed touch's locks; return its id.

    None when the campaign's budget (``limit``) has no room left for it: the failed touch stays the person's last.
    """
    with write_tx(engine) as conn:
        if limit is not None:
            budget.lock(conn, row["campaign"])
            if budget.fitting([row.get("cost")], budget.spent(conn, row["campaign"]), limit) == 0:
                return None
        touch_id = insert_touches(conn, [row])[0]
        conn.execute(update(locks).where(locks.c.touch_id == from_touch_id).values(touch_id=touch_id))
    return touch_id


def add_copies(engine: Engine, rows: list[dict[str, Any]], limit: Decimal | None = None) -> list[int]:
    """Claimed copies of touches in another channel (``duplicate_in``): same person and offer, no new locks.

    With a budget (``limit``) only the first rows that fit in it are written: their ids, in order.
    """
    with write_tx(engine) as conn:
        if limit is not None and rows:
            budget.lock(conn, rows[0]["campaign"])
            rows = rows[:budget.fitting([row.get("cost") for row in rows], budget.spent(conn, rows[0]["campaign"]),
                                        limit)]
        return insert_touches(conn, rows)


def rekey_persons(conn: Connection, moved: dict[int, tuple[int, int]]) -> None:
    """Carry locks and open call tasks over when records change person (``{customer: (old, new)}``).

    A person made of several earlier persons holds all their locks (offer cooldowns, cap slots
    renumbered so the cap still counts every one, the open call); a record split off keeps a
    copy of its earlier person's locks, since either of them may be the one who was contacted.
    """
    sources: dict[int, set[int]] = {}
    for old, new in moved.values():
        if old != new:
            sources.setdefault(new, {new}).add(old)
    if not sources:
        return
    old_persons = sorted({p for group in sources.values() for p in group})
    current: dict[int, list[Any]] = {}
    for chunk in in_chunks(old_persons):
        for row in conn.execute(select(locks).where(one_of(conn, locks.c.person_id, chunk))):
            current.setdefault(row.person_id, []).append(row)
    rows: list[dict[str, Any]] = []
    for new, group in sources.items():
        rows.extend(_merged_locks(new, [lock for person in sorted(group) for lock in current.get(person, [])]))
    still = {p for p, in conn.execute(select(customers.c.person_id).where(one_of(conn, customers.c.person_id,
                                                                                old_persons)).distinct())}
    for chunk in in_chunks(sorted(set(sources) | (set(old_persons) - still))):
        conn.execute(delete(locks).where(one_of(conn, locks.c.person_id, chunk)))
    bulk_insert(conn, locks, LOCK_COLUMNS, rows)
    for customer_id, (old, new) in moved.items():
        if old != new:
            conn.execute(update(tasks).where(tasks.c.customer_id == customer_id).values(person_id=new))


def _merged_locks(person: int, held: list[Any]) -> list[dict[str, Any]]:
    """One person's locks from several persons' ones: the latest expiry per key, cap slots numbered anew."""
    best: dict[tuple[str, str], Any] = {}
    caps = []
    for lock in held:
        if lock.scope == "cap":
            caps.append(lock)
            continue
        kept = best.get((lock.scope, lock.key))
        if kept is None or (kept.expires_at is not None and (lock.expires_at is None
                                                              or lock.expires_at > kept.expires_at)):
            best[(lock.scope, lock.key)] = lock
    unique_caps = {(lock.touch_id, lock.expires_at): lock for lock in caps}.values()
    numbered = [(("cap", f"slot{i}"), lock) for i, lock in enumerate(sorted(
        unique_caps, key=lambda lock: (lock.expires_at is None, lock.expires_at)))]
    return [{"person_id": person, "scope": scope, "key": key, "touch_id": lock.touch_id,
             "expires_at": lock.expires_at, "created_at": lock.created_at, "priority": lock.priority}
            for (scope, key), lock in [*best.items(), *numbered]]

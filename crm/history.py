"""The contact history: load what the policy needs, claim touches, record every outcome and decision.

A touch is claimed by committed rows before anything is sent: the touch itself (unique claim key)
and the person's locks (unique person / scope / key): the offer cooldown, a frequency-cap slot for
marketing, the open call task. Two runs that select the same person cannot both hold them, on
SQLite and PostgreSQL alike; the loser records why it did not contact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from crm.bulk import bulk_insert
from crm.db import in_chunks, one_of, write_tx
from crm.models import (
    Consent,
    ContactLock,
    ContactPoint,
    ContactStatus,
    Customer,
    Touch,
    TouchEvent,
    utcnow,
)
from crm.policy import Candidate, ConsentState, ContactOption, Decision, Policy

touches = Touch.__table__
events = TouchEvent.__table__
locks = ContactLock.__table__
customers = Customer.__table__
contacts = ContactPoint.__table__
consents = Consent.__table__

ORDER = {"deferred": 0, "claimed": 1, "sending": 2, "sent": 3, "delivered": 4, "failed": 4, "unknown": 4,
         "skipped": 4}
RELEASING = ("failed", "skipped")  # not delivered for sure: the person's locks are freed
TOUCH_COLUMNS = ("claim_key", "person_key", "customer_id", "campaign", "run_id", "offer", "purpose", "channel",
                 "contact_point_id", "address", "status", "reason", "detail", "template", "template_hash", "body",
                 "body_hash", "consent_id", "manager_id", "created_at", "updated_at", "due_at")


@dataclass
class Claimed:
    """A claimed touch, ready to send (or deferred)."""

    touch_id: int
    decision: Decision


def load_candidates(conn: Connection, customer_ids: list[int]) -> list[Candidate]:
    """Customers with their contact points and latest consent entries, in id order."""
    result: dict[int, Candidate] = {}
    for chunk in in_chunks(customer_ids):
        for row in conn.execute(select(customers.c.id, customers.c.person_id, customers.c.timezone,
                                       customers.c.preferred_channel).where(one_of(conn, customers.c.id, chunk))):
            result[row.id] = Candidate(row.id, row.person_id or row.id, row.timezone, row.preferred_channel, [], {})
        for row in conn.execute(select(contacts.c.id, contacts.c.customer_id, contacts.c.kind, contacts.c.value,
                                       contacts.c.status).where(one_of(conn, contacts.c.customer_id, chunk))):
            result[row.customer_id].contacts.append(ContactOption(row.id, row.kind, row.value, row.status))
        for row in conn.execute(select(consents.c.id, consents.c.customer_id, consents.c.channel, consents.c.purpose,
                                       consents.c.granted, consents.c.at).where(one_of(conn, consents.c.customer_id, chunk))
                                .order_by(consents.c.at, consents.c.id)):
            result[row.customer_id].consents[(row.channel, row.purpose)] = ConsentState(row.granted, row.id, row.at)
    return [result[cid] for cid in customer_ids if cid in result]


def body_hash(text: str | None) -> str | None:
    """SHA-256 of a rendered message (kept instead of the text when configured)."""
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def touch_row(decision: Decision, *, run_id: str, campaign: str, offer: str | None, purpose: str,
              status: str, now: datetime, template: str | None = None, template_hash: str | None = None,
              body: str | None = None, keep_body: bool = True, claim_key: str | None = None,
              manager_id: int | None = None) -> dict[str, Any]:
    """A ``touches`` row for a decision (a touch, a deferral or a decision not to contact)."""
    return {"claim_key": claim_key, "person_key": str(decision.person_id), "customer_id": decision.customer_id,
            "campaign": campaign, "run_id": run_id, "offer": offer, "purpose": purpose, "channel": decision.channel,
            "contact_point_id": decision.contact_point_id, "address": decision.address, "status": status,
            "reason": decision.reason, "detail": decision.detail, "template": template,
            "template_hash": template_hash, "body": body if keep_body else None, "body_hash": body_hash(body),
            "consent_id": decision.consent_id, "manager_id": manager_id, "created_at": now, "updated_at": now,
            "due_at": decision.due_at}


def record_decisions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write decisions not to contact (status ``skipped``), one executemany."""
    bulk_insert(conn, touches, TOUCH_COLUMNS, rows)


def claim(engine: Engine, decisions: list[Decision], rows: list[dict[str, Any]], *, offer: str, purpose: str,
          policy: Policy, run_id: str, now: datetime) -> tuple[list[Claimed], list[dict[str, Any]]]:
    """Claim touches for ``decisions`` (with their prepared ``rows``); return (claimed, decisions not to contact).

    Runs in one write transaction (``BEGIN IMMEDIATE`` on SQLite) with a savepoint per person, committed
    before any message leaves.
    """
    claimed: list[Claimed] = []
    refused: list[dict[str, Any]] = []
    if not decisions:
        return claimed, refused
    persons = sorted({d.person_id for d in decisions})
    with write_tx(engine) as conn:
        held: dict[int, dict[tuple[str, str], int | None]] = {}
        for chunk in in_chunks(persons):
            conn.execute(delete(locks).where(one_of(conn, locks.c.person_id, chunk), locks.c.expires_at.is_not(None),
                                             locks.c.expires_at <= now))
            for row in conn.execute(select(locks.c.person_id, locks.c.scope, locks.c.key, locks.c.touch_id)
                                    .where(one_of(conn, locks.c.person_id, chunk))):
                held.setdefault(row.person_id, {})[(row.scope, row.key)] = row.touch_id
        holders = {tid for person in held.values() for tid in person.values() if tid}
        this_run: set[int] = set()
        holder_campaign: dict[int, tuple[str | None, Any]] = {}
        for chunk in in_chunks(sorted(holders)):
            for row in conn.execute(select(touches.c.id, touches.c.run_id, touches.c.campaign, touches.c.created_at)
                                    .where(one_of(conn, touches.c.id, chunk))):
                holder_campaign[row.id] = (row.campaign, row.created_at)
                if row.run_id == run_id:
                    this_run.add(row.id)
        this_run.add(-1)  # marks locks taken earlier in this batch
        planned: list[tuple[Decision, dict[str, Any], list[tuple[str, str, datetime | None]]]] = []
        for decision, row in zip(decisions, rows):
            mine = held.setdefault(decision.person_id, {})
            reason = _blocked(decision, mine, this_run, offer, purpose, policy)
            if reason is not None:
                holder = mine.get(("offer", offer)) if reason in ("cooling_down", "same_person") else None
                campaign, when = holder_campaign.get(holder, (None, None))
                detail = (f"offer {offer} already given to this person by {campaign} on {when:%Y-%m-%d}"
                          if campaign and when else None)
                refused.append(_refusal(row, reason, detail))
                continue
            wanted = [("offer", offer, now + timedelta(days=policy.offer_cooldown_days))]
            if purpose == "marketing":
                slot = next(f"slot{i}" for i in range(policy.cap_max) if ("cap", f"slot{i}") not in mine)
                wanted.append(("cap", slot, now + timedelta(days=policy.cap_days)))
            if decision.channel == "call":
                wanted.append(("call", "open", None))
            for scope, key, _ in wanted:
                mine[(scope, key)] = -1  # held by this batch from here on
            planned.append((decision, row, wanted))
        try:
            with conn.begin_nested():
                claimed.extend(_claim_all(conn, planned, now))
        except IntegrityError:
            # another run claimed some of these people meanwhile: claim one by one, keep what is still free
            for decision, row, wanted in planned:
                try:
                    with conn.begin_nested():
                        claimed.extend(_claim_all(conn, [(decision, row, wanted)], now))
                except IntegrityError:
                    current = {(r.scope, r.key): r.touch_id for r in conn.execute(
                        select(locks.c.scope, locks.c.key, locks.c.touch_id)
                        .where(locks.c.person_id == decision.person_id))}
                    reason = _blocked(decision, current, set(), offer, purpose, policy) or "cooling_down"
                    refused.append(_refusal(row, reason, "another run claimed this person first"))
    return claimed, refused


def _claim_all(conn: Connection, planned: list, now: datetime) -> list[Claimed]:
    """Insert touches, locks and claim events for planned claims: a few statements for the whole list."""
    if not planned:
        return []
    bulk_insert(conn, touches, TOUCH_COLUMNS, [row for _, row, _ in planned])
    keys = [row["claim_key"] for _, row, _ in planned]
    ids: dict[str, int] = {}
    for chunk in in_chunks(keys):
        ids.update(dict(conn.execute(select(touches.c.claim_key, touches.c.id)
                                     .where(one_of(conn, touches.c.claim_key, chunk))).all()))
    lock_rows, event_rows, result = [], [], []
    for decision, row, wanted in planned:
        touch_id = ids[row["claim_key"]]
        lock_rows.extend({"person_id": decision.person_id, "scope": scope, "key": key, "touch_id": touch_id,
                          "expires_at": expires, "created_at": now} for scope, key, expires in wanted)
        event_rows.append({"touch_id": touch_id, "status": row["status"], "at": now, "detail": row.get("detail")})
        result.append(Claimed(touch_id, decision))
    bulk_insert(conn, locks, ("person_id", "scope", "key", "touch_id", "expires_at", "created_at"), lock_rows)
    bulk_insert(conn, events, ("touch_id", "status", "at", "detail"), event_rows)
    return result


def _blocked(decision: Decision, mine: dict, this_run: set[int], offer: str, purpose: str,
             policy: Policy) -> str | None:
    holder = mine.get(("offer", offer), 0)
    if holder != 0:
        return "same_person" if holder in this_run else "cooling_down"
    if decision.channel == "call" and ("call", "open") in mine:
        return "open_call_task"
    if purpose == "marketing" and sum(1 for scope, _ in mine if scope == "cap") >= policy.cap_max:
        return "capped"
    return None


def _refusal(row: dict[str, Any], reason: str, detail: str | None = None) -> dict[str, Any]:
    refused = dict(row)
    refused.update(status="skipped", reason=reason, detail=detail, claim_key=None, due_at=None)
    return refused


def move(engine: Engine, moves: list[dict[str, Any]], *, at: datetime | None = None) -> None:
    """Apply status moves ``{touch_id, status, detail?, provider_message_id?, error_code?, error_message?, reason?}``.

    A status only moves forward (claimed → sending → sent → delivered; failed / unknown / skipped are
    final), so replayed or out-of-order reports leave one consistent touch. Every move that happens is
    also a ``touch_events`` row. A few statements per call, whatever the number of moves.
    """
    if not moves:
        return
    now = at or utcnow()
    ids = [m["touch_id"] for m in moves]
    with write_tx(engine) as conn:
        current: dict[int, str] = {}
        for chunk in in_chunks(ids):
            query = select(touches.c.id, touches.c.status).where(one_of(conn, touches.c.id, chunk))
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            current.update(dict(conn.execute(query).all()))
        updates, new_events, released = [], [], []
        for item in moves:
            status, old = item["status"], current.get(item["touch_id"])
            if old is None or ORDER.get(old, 9) >= ORDER[status]:
                continue
            current[item["touch_id"]] = status
            row = {"b_id": item["touch_id"], "status": status, "updated_at": now,
                   "sent_at": now if status == "sent" else None, "delivered_at": now if status == "delivered" else None}
            row.update({key: item.get(key) for key in ("provider_message_id", "error_code", "error_message", "reason",
                                                       "detail")})
            updates.append(row)
            new_events.append({"touch_id": item["touch_id"], "status": status, "at": now,
                               "detail": item.get("detail") or item.get("error_message")})
            if status in RELEASING:
                released.append(item["touch_id"])
        if updates:
            if conn.dialect.name == "postgresql" and len(updates) > 1:
                _update_touches_from_arrays(conn, updates)
            else:
                keep = {name: func.coalesce(bindparam(name), touches.c[name]) for name in _KEPT}
                conn.execute(update(touches).where(touches.c.id == bindparam("b_id"))
                             .values(status=bindparam("status"), updated_at=bindparam("updated_at"), **keep), updates)
            bulk_insert(conn, events, ("touch_id", "status", "at", "detail"), new_events)
        for chunk in in_chunks(released):
            conn.execute(delete(locks).where(one_of(conn, locks.c.touch_id, chunk), locks.c.scope != "call"))


_KEPT = ("provider_message_id", "error_code", "error_message", "reason", "detail", "sent_at", "delivered_at")
_TEXT_KEPT = _KEPT[:5]
_MOVE_FROM_ARRAYS = text(
    "UPDATE touches AS t SET status = v.status, updated_at = v.updated_at, "
    + ", ".join(f"{name} = COALESCE(v.{name}, t.{name})" for name in _KEPT)
    + " FROM unnest(CAST(:ids AS integer[]), CAST(:status AS text[]), CAST(:updated_at AS timestamp[]), "
    + ", ".join(f"CAST(:{name} AS text[])" for name in _TEXT_KEPT)
    + ", CAST(:sent_at AS timestamp[]), CAST(:delivered_at AS timestamp[])) "
    + f"AS v(id, status, updated_at, {', '.join(_TEXT_KEPT)}, sent_at, delivered_at) WHERE t.id = v.id")


def _update_touches_from_arrays(conn: Connection, updates: list[dict[str, Any]]) -> None:
    """The status moves as one UPDATE over arrays (PostgreSQL): one statement for the server, not one per row."""
    stamp = touches.c.updated_at.type.process_bind_param  # naive UTC, as every instant is stored
    params: dict[str, list[Any]] = {"ids": [row["b_id"] for row in updates],
                                    "status": [row["status"] for row in updates]}
    for name in ("updated_at", "sent_at", "delivered_at"):
        params[name] = [stamp(row[name], conn.dialect) for row in updates]
    for name in _TEXT_KEPT:
        params[name] = [None if row[name] is None else str(row[name]) for row in updates]
    conn.execute(_MOVE_FROM_ARRAYS, params)


def apply_address_action(engine: Engine, contact_point_id: int, customer_id: int, channel: str, action: str,
                         code: str | None, message: str | None) -> None:
    """What a permanent failure means for the address: bounced / blocked contact point, or an opt-out."""
    now = utcnow()
    with write_tx(engine) as conn:
        if action in (ContactStatus.bounced.value, ContactStatus.blocked.value):
            conn.execute(update(contacts).where(contacts.c.id == contact_point_id).values(
                status=action, status_reason=f"{channel} provider: {code} {message or ''}".strip()[:500],
                updated_at=now))
        elif action == "opt_out":
            conn.execute(insert(consents).values(customer_id=customer_id, channel=channel, purpose="marketing",
                                                 granted=False, at=now, source=f"{channel}_provider_opt_out",
                                                 wording=f"provider code {code}", recorded_at=now))


def mark_stale_in_flight(engine: Engine, campaign: str, current_run: str) -> tuple[list[int], list[int]]:
    """Clean up after a run of ``campaign`` that died: return (unknown, released) touch ids.

    Touches handed to the provider (``sending``) may or may not have left: they become ``unknown``,
    are reported and never resent blindly (their locks stay). Touches still ``claimed`` were never
    handed over: they are closed as ``skipped`` (run_interrupted) and their locks freed, so this run
    contacts those people once.
    """
    with engine.connect() as conn:
        rows = conn.execute(select(touches.c.id, touches.c.status).where(
            touches.c.campaign == campaign, touches.c.status.in_(("claimed", "sending")),
            touches.c.run_id != current_run)).all()
    unknown = [r.id for r in rows if r.status == "sending"]
    released = [r.id for r in rows if r.status == "claimed"]
    move(engine, [{"touch_id": tid, "status": "unknown",
                   "detail": "the run that sent it stopped before recording the provider's answer"} for tid in unknown]
         + [{"touch_id": tid, "status": "skipped", "reason": "run_interrupted",
             "detail": "the run that claimed it stopped before sending; released for the next run"}
            for tid in released])
    return unknown, released


def due_deferred(engine: Engine, campaign: str, now: datetime) -> list[dict[str, Any]]:
    """Deferred touches of ``campaign`` whose quiet hours are over."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(touches).where(touches.c.campaign == campaign, touches.c.status == "deferred",
                                  touches.c.due_at <= now).order_by(touches.c.id))]


def history(engine: Engine, *, customer: str | None = None, campaign: str | None = None, channel: str | None = None,
            status: str | None = None, purpose: str | None = None, manager: str | None = None,
            since: datetime | None = None, until: datetime | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    """Touches and decisions, newest last, with the consent relied upon."""
    query = (select(touches.c.id, touches.c.created_at, customers.c.external_id.label("customer"),
                    touches.c.person_key, touches.c.campaign, touches.c.run_id, touches.c.offer, touches.c.purpose,
                    touches.c.channel, touches.c.address, touches.c.status, touches.c.reason, touches.c.detail,
                    touches.c.template, touches.c.template_hash, touches.c.body_hash, touches.c.provider_message_id,
                    touches.c.error_code, touches.c.error_message, touches.c.sent_at, touches.c.due_at,
                    touches.c.consent_id, consents.c.at.label("consent_at"), consents.c.source.label("consent_source"),
                    consents.c.wording.label("consent_wording"))
             .outerjoin(customers, customers.c.id == touches.c.customer_id)
             .outerjoin(consents, consents.c.id == touches.c.consent_id)
             .order_by(touches.c.id))
    if customer:
        person = select(func.coalesce(customers.c.person_id, customers.c.id)).where(
            customers.c.external_id == customer).scalar_subquery()
        query = query.where(or_(customers.c.external_id == customer, touches.c.person_key == cast(person, String)))
    if campaign:
        query = query.where(touches.c.campaign == campaign)
    if channel:
        query = query.where(touches.c.channel == channel)
    if status:
        query = query.where(touches.c.status == status)
    if purpose:
        query = query.where(touches.c.purpose == purpose)
    if manager:
        from crm.models import Manager

        managers = Manager.__table__
        query = query.where(touches.c.manager_id.in_(select(managers.c.id).where(managers.c.code == manager)))
    if since:
        query = query.where(touches.c.created_at >= since)
    if until:
        query = query.where(touches.c.created_at <= until)
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


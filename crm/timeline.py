"""Read-only views of the history for the console: one person's timeline and a history search, keyset-paged.

A person is every customer record sharing ``customers.person_id`` (or the record alone). Their
timeline merges touches, replies (inbound touches: ``reply.received``, the start of the text and the
touch answered), decisions not to contact, touch status events, consent ledger entries, purchases,
service events and call tasks with their outcomes, newest first. Each source is read
with its own index bound by the cursor and ``LIMIT``; the merge takes the newest ``limit`` items, so a
page costs the same on page one and page one hundred (no ``OFFSET``).

The search reads a page of keys ``(created_at, id)`` from an index in order, then its rows. A set
of customers (what the text matched, a rep's customers) is read record by record when it is small,
or by walking touches newest first and asking each its customer when it is large (a common name,
a rep with 40,000 customers): both stay one short index range per page.

Cursors are opaque strings holding the last item's key: ``(at, kind, id)`` for the timeline,
``(at, id)`` for the search. Items hold plain values only; addresses are masked, and free text of
an erased record (notes, wordings) is never returned.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import Any

from sqlalchemy import and_, case, false, func, or_, select
from sqlalchemy.engine import Connection, Engine

from crm.db import one_of
from crm.importing.normalize import normalize_email, normalize_phone
from crm.models import (
    CallTask,
    Consent,
    ContactPoint,
    Customer,
    Erasure,
    Purchase,
    ServiceEvent,
    Touch,
    TouchEvent,
)

customers = Customer.__table__
contacts = ContactPoint.__table__
touches = Touch.__table__
events = TouchEvent.__table__
consents = Consent.__table__
purchases = Purchase.__table__
services = ServiceEvent.__table__
tasks = CallTask.__table__
erasures = Erasure.__table__

DECISIONS = ("skipped", "deferred")  # a touch in these states is a decision (not to contact, or not yet)
MAX_LIMIT = 500
REPLY_PREVIEW = 200  # characters of a reply shown in the timeline
NAME_MATCHES = 5000  # above this many records a name prefix is searched touch by touch, not record by record
FEW_CUSTOMERS = 5000  # a rep with at most this many customers is searched record by record


@dataclass
class Page:
    """One page of items, newest first, and the cursor of the next page (None at the end)."""

    items: list[dict]
    next: str | None


class CursorError(ValueError):
    """A cursor that this module did not write."""


def encode_cursor(at: datetime, kind: str, ident: int) -> str:
    """The opaque cursor after an item with key ``(at, kind, ident)``."""
    raw = json.dumps([at.astimezone(timezone.utc).isoformat(), kind, ident], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, int]:
    """The key a cursor holds; ``CursorError`` when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, kind, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
        at = datetime.fromisoformat(at)
        if at.tzinfo is None or not isinstance(kind, str) or not isinstance(ident, int):
            raise ValueError
        return at, kind, ident
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CursorError(f"not a page cursor: {cursor[:40]!r}") from exc


def mask(address: str | None) -> str | None:
    """An address shown without giving it away: ``i***@example.com``, ``+7916***67``."""
    if not address:
        return None
    local, at, domain = address.rpartition("@")
    if at:
        return f"{local[:1]}***@{domain}"
    if len(address) > 6:
        return f"{address[:5]}***{address[-2:]}"
    return "***"


def person_of(engine: Engine, customer_id: int) -> int:
    """The person a customer record belongs to (``customers.person_id``, or its own id); KeyError if unknown."""
    with engine.connect() as conn:
        row = conn.execute(select(customers.c.person_id).where(customers.c.id == customer_id)).first()
    if row is None:
        raise KeyError(customer_id)
    return row.person_id or customer_id


def _members(conn: Connection, person_id: int, manager_id: int | None = None) -> tuple[list[int], set[int]]:
    """The person's customer ids (only the rep's, given one), and those of them that were erased."""
    query = select(customers.c.id, customers.c.person_id).where(
        or_(customers.c.person_id == person_id, customers.c.id == person_id))
    if manager_id is not None:
        query = query.where(customers.c.manager_id == manager_id)
    # the record ``person_id`` itself only if it is not another person's now
    ids = sorted(cid for cid, person in conn.execute(query) if person in (None, person_id))
    if not ids:
        return [], set()
    erased = set(conn.execute(select(erasures.c.customer_id).where(one_of(conn, erasures.c.customer_id, ids)))
                 .scalars())
    return ids, erased


# --- timeline sources: each reads one kind of item with its own index, bounded by the cursor -------

@dataclass(frozen=True)
class _Bound:
    """The cursor's key, turned into conditions on a source's time and id columns."""

    at: datetime
    kind: str
    ident: int

    def before(self, kind: str, at_col, id_col, *, is_date: bool = False):
        """Rows of ``kind`` whose key ``(at, kind, id)`` is below the cursor's."""
        if is_date:
            day, midnight = self.at.date(), self.at.timetz() == time(0, tzinfo=timezone.utc)
            lt = at_col < day if midnight else at_col <= day
            eq = at_col == day if midnight else false()
        else:
            lt, eq = at_col < self.at, at_col == self.at
        if kind < self.kind:
            return or_(lt, eq)
        if kind == self.kind:
            return or_(lt, and_(eq, id_col < self.ident))
        return lt


_TOUCH_SHOWN = (*(touches.c[name] for name in (
    "id", "created_at", "customer_id", "channel", "status", "campaign", "offer", "purpose", "reason", "detail",
    "error_code", "error_message", "address", "template", "run_id", "manager_id", "consent_id", "sent_at",
    "delivered_at", "due_at", "direction", "in_reply_to")), consents.c.at.label("consent_at"),
    consents.c.source.label("consent_source"),
    case((touches.c.direction == "in", touches.c.body), else_=None).label("body"))  # a reply's text, not ours
# (with ``consents`` outer-joined on ``touches.consent_id``: the consent each touch relied on)


def _touch_item(row: Any, erased: bool) -> dict[str, Any]:
    if row.direction == "in":
        return _reply_item(row, erased)
    decision = row.status in DECISIONS
    title = ("decision.deferred" if row.status == "deferred" else "decision.not_contacted") if decision \
        else f"touch.{row.status}"
    detail = {"touch_id": row.id, "channel": row.channel, "status": row.status, "campaign": row.campaign,
              "offer": row.offer, "purpose": row.purpose, "reason": row.reason,
              "note": None if erased else row.detail, "error_code": row.error_code,
              "error": None if erased else row.error_message, "address": mask(row.address),
              "template": row.template, "run_id": row.run_id, "manager_id": row.manager_id,
              "consent_id": row.consent_id, "consent_at": row.consent_at, "consent_source": row.consent_source,
              "sent_at": row.sent_at, "delivered_at": row.delivered_at, "due_at": row.due_at}
    return {"at": row.created_at, "kind": "decision" if decision else "touch", "id": row.id,
            "customer_id": row.customer_id, "title": title, "detail": detail}


def _reply_item(row: Any, erased: bool) -> dict[str, Any]:
    """What the person wrote back: the start of the text and the touch it answers (no text once erased)."""
    preview = None if erased or not row.body else " ".join(row.body.split())[:REPLY_PREVIEW]
    detail = {"touch_id": row.id, "channel": row.channel, "in_reply_to": row.in_reply_to, "reply": preview,
              "campaign": row.campaign, "note": None if erased else row.detail, "address": mask(row.address)}
    return {"at": row.created_at, "kind": "touch", "id": row.id, "customer_id": row.customer_id,
            "title": "reply.received", "detail": detail}


def _touches(conn: Connection, ids: list[int], bound: _Bound | None, limit: int, kind: str) -> list[Any]:
    query = (select(*_TOUCH_SHOWN)
             .select_from(touches).outerjoin(consents, consents.c.id == touches.c.consent_id)
             .where(one_of(conn, touches.c.customer_id, ids),
                    touches.c.status.in_(DECISIONS) if kind == "decision" else touches.c.status.not_in(DECISIONS))
             .order_by(touches.c.created_at.desc(), touches.c.id.desc()).limit(limit))
    if bound:
        query = query.where(bound.before(kind, touches.c.created_at, touches.c.id))
    return conn.execute(query).all()


def _events(conn: Connection, ids: list[int], bound: _Bound | None, limit: int) -> list[dict[str, Any]]:
    query = (select(events.c.id, events.c.at, events.c.status, events.c.reason, events.c.error_code,
                    events.c.error_message, events.c.touch_id, touches.c.customer_id, touches.c.channel)
             .select_from(touches).join(events, events.c.touch_id == touches.c.id)
             .where(one_of(conn, touches.c.customer_id, ids))
             .order_by(events.c.at.desc(), events.c.id.desc()).limit(limit))
    if bound:  # an event never precedes its touch: older touches only
        query = query.where(touches.c.created_at <= bound.at,
                            bound.before("event", events.c.at, events.c.id))
    return conn.execute(query).all()


def _consents(conn: Connection, ids: list[int], bound: _Bound | None, limit: int) -> list[Any]:
    query = (select(consents.c.id, consents.c.at, consents.c.customer_id, consents.c.channel, consents.c.purpose,
                    consents.c.granted, consents.c.source, consents.c.wording)
             .where(one_of(conn, consents.c.customer_id, ids))
             .order_by(consents.c.at.desc(), consents.c.id.desc()).limit(limit))
    if bound:
        query = query.where(bound.before("consent", consents.c.at, consents.c.id))
    return conn.execute(query).all()


def _dated(conn: Connection, table, day_col, columns, kind: str, ids: list[int], bound: _Bound | None,
           limit: int) -> list[Any]:
    query = (select(table.c.id, table.c.customer_id, day_col.label("day"), *columns)
             .where(one_of(conn, table.c.customer_id, ids))
             .order_by(day_col.desc(), table.c.id.desc()).limit(limit))
    if bound:
        query = query.where(bound.before(kind, day_col, table.c.id, is_date=True))
    return conn.execute(query).all()


def _tasks(conn: Connection, ids: list[int], bound: _Bound | None, limit: int, kind: str) -> list[Any]:
    at_col = tasks.c.created_at if kind == "call_task" else tasks.c.closed_at
    query = (select(tasks.c.id, tasks.c.customer_id, at_col.label("at"), tasks.c.manager_id, tasks.c.campaign,
                    tasks.c.offer, tasks.c.due_on, tasks.c.status, tasks.c.outcome, tasks.c.note,
                    tasks.c.touch_id, tasks.c.document_path)
             .where(one_of(conn, tasks.c.customer_id, ids), at_col.is_not(None))
             .order_by(at_col.desc(), tasks.c.id.desc()).limit(limit))
    if bound:
        query = query.where(bound.before(kind, at_col, tasks.c.id))
    return conn.execute(query).all()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def _collect(conn: Connection, ids: list[int], erased: set[int], bound: _Bound | None,
             limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` items of every source below the cursor, unsorted."""
    items = [_touch_item(r, r.customer_id in erased) for kind in ("touch", "decision")
             for r in _touches(conn, ids, bound, limit, kind)]
    items += [{"at": r.at, "kind": "event", "id": r.id, "customer_id": r.customer_id, "title": f"event.{r.status}",
               "detail": {"touch_id": r.touch_id, "channel": r.channel, "status": r.status, "reason": r.reason,
                          "error_code": r.error_code,
                          "error": None if r.customer_id in erased else r.error_message}}
              for r in _events(conn, ids, bound, limit)]
    items += [{"at": r.at, "kind": "consent", "id": r.id, "customer_id": r.customer_id,
               "title": "consent.granted" if r.granted else "consent.revoked",
               "detail": {"channel": r.channel, "purpose": r.purpose, "granted": r.granted, "source": r.source,
                          "wording": None if r.customer_id in erased else r.wording}}
              for r in _consents(conn, ids, bound, limit)]
    items += [{"at": _midnight(r.day), "kind": "purchase", "id": r.id, "customer_id": r.customer_id,
               "title": "purchase", "detail": {"product": r.product, "category": r.category,
                                               "quantity": float(r.quantity), "amount": float(r.amount),
                                               "currency": r.currency, "on": r.day}}
              for r in _dated(conn, purchases, purchases.c.purchased_on, (purchases.c.product, purchases.c.category,
                              purchases.c.quantity, purchases.c.amount, purchases.c.currency),
                              "purchase", ids, bound, limit)]
    items += [{"at": _midnight(r.day), "kind": "service", "id": r.id, "customer_id": r.customer_id,
               "title": "service.event", "detail": {"event": r.kind, "on": r.day,
                                                    "note": None if r.customer_id in erased else r.note}}
              for r in _dated(conn, services, services.c.occurred_on, (services.c.kind, services.c.note),
                              "service", ids, bound, limit)]
    for kind in ("call_task", "call_outcome"):
        items += [{"at": r.at, "kind": kind, "id": r.id, "customer_id": r.customer_id,
                   "title": "call.task" if kind == "call_task" else f"call.{r.outcome or r.status}",
                   "detail": {"task_id": r.id, "manager_id": r.manager_id, "campaign": r.campaign, "offer": r.offer,
                              "due_on": r.due_on, "status": r.status, "outcome": r.outcome,
                              "touch_id": r.touch_id, "document": bool(r.document_path),
                              "note": None if r.customer_id in erased else r.note}}
                  for r in _tasks(conn, ids, bound, limit, kind)]
    return items


def _key(item: dict[str, Any]) -> tuple[datetime, str, int]:
    return item["at"], item["kind"], item["id"]


def _page(items: list[dict[str, Any]], limit: int, cursor_of: Callable[[dict[str, Any]], str],
          key: Callable[[dict[str, Any]], tuple] = _key) -> Page:
    """The newest ``limit`` of ``items`` (already fetched ``limit + 1`` per source) and the next cursor."""
    items.sort(key=key, reverse=True)
    more = len(items) > limit
    items = items[:limit]
    return Page(items, cursor_of(items[-1]) if more and items else None)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def timeline(engine: Engine, person_id: int, *, before: str | None = None, limit: int = 50,
             manager_id: int | None = None) -> Page:
    """The person's history across all their records, newest first, ``limit`` items after cursor ``before``.

    ``person_id`` is what ``person_of`` returns. ``manager_id`` (sales scoping) keeps only that rep's
    records of the person: none, and the page is empty.
    """
    limit = _limit(limit)
    bound = _Bound(*decode_cursor(before)) if before else None
    with engine.connect() as conn:
        ids, erased = _members(conn, person_id, manager_id)
        if not ids:
            return Page([], None)
        items = _collect(conn, ids, erased, bound, limit + 1)
    return _page(items, limit, lambda item: encode_cursor(*_key(item)))


# --- customers by what a user types, and the history search -------------------------------------

def _prefix_condition(conn: Connection, column, text: str):
    """``column`` starts with ``text`` (as typed, or capitalised), so that an index serves it."""
    variants = {text, text[:1].upper() + text[1:]}
    if conn.dialect.name == "postgresql":  # served by the text_pattern_ops index
        escaped = [v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for v in variants]
        return or_(*(column.like(f"{v}%", escape="\\") for v in escaped))
    return or_(*(and_(column >= v, column < v[:-1] + chr(ord(v[-1]) + 1)) for v in variants))


def _address_of(text: str) -> tuple[str, str] | None:
    """``(kind, value)`` when ``text`` is an email or a phone, normalised as imports normalise them."""
    if "@" in text:
        try:
            return "email", normalize_email(text)
        except ValueError:
            return None
    if sum(ch.isdigit() for ch in text) >= 7:
        try:
            return "phone", normalize_phone(text)
        except ValueError:
            return None
    return None


def _matches(conn: Connection, text: str, manager_id: int | None, limit: int,
             ordered: bool = True) -> list[tuple[int, str]]:
    """``(customer id, what matched)``: the record with that external id, else the holders of that phone /
    email, else the records whose name starts with the text."""
    text = text.strip()
    if not text:
        return []
    scope = [customers.c.manager_id == manager_id] if manager_id is not None else []
    exact = conn.execute(select(customers.c.id).where(customers.c.external_id == text, *scope)).scalars().all()
    if exact:  # an external id names one record: nothing else is meant
        return [(cid, "external_id") for cid in exact]
    address = _address_of(text)
    if address:
        query = (select(contacts.c.customer_id).join(customers, customers.c.id == contacts.c.customer_id)
                 .where(contacts.c.kind == address[0], contacts.c.value == address[1], *scope)
                 .group_by(contacts.c.customer_id).order_by(contacts.c.customer_id).limit(limit))
        return [(cid, address[0]) for cid in conn.execute(query).scalars()]
    query = select(customers.c.id).where(_prefix_condition(conn, customers.c.name, text), *scope).limit(limit)
    if ordered:  # sorting every holder of a common name costs more than finding them
        query = query.order_by(customers.c.name, customers.c.id)
    return [(cid, "name") for cid in conn.execute(query).scalars()]


def find_customers(engine: Engine, text: str, *, manager_id: int | None = None, limit: int = 20) -> list[dict]:
    """Customer records matching what a user typed (external id, phone, email or the start of the name)."""
    limit = _limit(limit)
    with engine.connect() as conn:
        matched = _matches(conn, text, manager_id, limit)
        if not matched:
            return []
        rows = {r.id: r for r in conn.execute(
            select(customers.c.id, customers.c.external_id, customers.c.name, customers.c.person_id,
                   customers.c.manager_id, customers.c.region, customers.c.city)
            .where(one_of(conn, customers.c.id, [cid for cid, _ in matched])))}
    return [{"id": cid, "external_id": rows[cid].external_id, "name": rows[cid].name,
             "person_id": rows[cid].person_id or cid, "manager_id": rows[cid].manager_id,
             "region": rows[cid].region, "city": rows[cid].city, "matched": how}
            for cid, how in matched if cid in rows]


def _persons_records(conn: Connection, ids: Iterable[int]) -> list[int]:
    """Every record of the persons of ``ids`` (a search by one record finds the whole person)."""
    ids = list(ids)
    persons = set(conn.execute(select(func.coalesce(customers.c.person_id, customers.c.id))
                               .where(one_of(conn, customers.c.id, ids))).scalars())
    shared = conn.execute(select(customers.c.id).where(one_of(conn, customers.c.person_id, sorted(persons))))
    return sorted(set(ids) | persons | set(shared.scalars()))


def _few_customers_of(conn: Connection, manager_id: int) -> list[int] | None:
    """A rep's customer ids when they are few enough to read their touches record by record, else None.

    A rep with many customers is served better the other way round: touches newest first, each
    checked against its customer's rep, until a page is full.
    """
    ids = conn.execute(select(customers.c.id).where(customers.c.manager_id == manager_id)
                       .limit(FEW_CUSTOMERS + 1)).scalars().all()
    return list(ids) if len(ids) <= FEW_CUSTOMERS else None


def search(engine: Engine, *, text: str | None = None, channel: str | None = None, status: str | None = None,
           campaign: str | None = None, since: datetime | None = None, until: datetime | None = None,
           manager_id: int | None = None, after: str | None = None, limit: int = 50) -> Page:
    """Touches and decisions matching the filters, newest first; ``manager_id`` limits to that rep's customers."""
    limit = _limit(limit)
    with engine.connect() as conn:
        ids, name = None, None
        if text and text.strip():
            matched = _matches(conn, text, manager_id, NAME_MATCHES + 1, ordered=False)
            if len(matched) > NAME_MATCHES:  # a common name: walk touches newest first, asking each its name
                name = text.strip()
            else:
                ids = _persons_records(conn, [cid for cid, _ in matched])
                if not ids:
                    return Page([], None)
        elif manager_id is not None:
            ids = _few_customers_of(conn, manager_id)
        page = _search_ids(conn, ids, channel, status, campaign, since, until, manager_id, after, limit + 1, name)
        rows = _search_rows(conn, page)
    items = []
    for row in rows:
        item = _touch_item(row, row.erased)
        item["detail"].update(external_id=row.external_id, name=row.name, person_id=row.person_id or row.customer_id)
        items.append(item)
    return _page(items, limit, lambda item: encode_cursor(item["at"], "touch", item["id"]),
                 key=lambda item: (item["at"], item["id"]))


def _search_ids(conn: Connection, ids, channel, status, campaign, since, until, manager_id, after,
                limit, name: str | None = None) -> list[int]:
    """The page's touch ids, newest first: only keys are read and sorted; the rows come after (``_search_rows``).

    ``ids``: only these records' touches (read record by record); ``name``: only touches of records
    whose name starts with it (read newest first, for names too common to list their records).
    """
    query = (select(touches.c.id).order_by(touches.c.created_at.desc(), touches.c.id.desc()).limit(limit))
    filters = {touches.c.channel: channel, touches.c.status: status, touches.c.campaign: campaign}
    query = query.where(*(column == value for column, value in filters.items() if value))
    if ids is not None:
        query = query.where(one_of(conn, touches.c.customer_id, ids))
    if manager_id is not None:  # each touch asks its customer's rep (a join would read the rep's every customer)
        rep = select(customers.c.manager_id).where(customers.c.id == touches.c.customer_id).scalar_subquery()
        query = query.where(rep == manager_id)
    if name is not None:
        named = select(customers.c.name).where(customers.c.id == touches.c.customer_id).scalar_subquery()
        query = query.where(_prefix_condition(conn, named, name))
    if since:
        query = query.where(touches.c.created_at >= since)
    if until:
        query = query.where(touches.c.created_at <= until)
    if after:
        at, _, ident = decode_cursor(after)
        query = query.where(or_(touches.c.created_at < at, and_(touches.c.created_at == at, touches.c.id < ident)))
    return list(conn.execute(query).scalars())


def _search_rows(conn: Connection, page: list[int]) -> list[Any]:
    """The touches of a page with their customer, consent and erasure, in the page's order."""
    if not page:
        return []
    erased = select(erasures.c.id).where(erasures.c.customer_id == touches.c.customer_id).exists()
    query = (select(*_TOUCH_SHOWN, customers.c.external_id, customers.c.name, customers.c.person_id,
                    erased.label("erased"))
             .select_from(touches).join(customers, customers.c.id == touches.c.customer_id)
             .outerjoin(consents, consents.c.id == touches.c.consent_id)
             .where(one_of(conn, touches.c.id, page)))
    rows = {row.id: row for row in conn.execute(query)}
    return [rows[tid] for tid in page if tid in rows]

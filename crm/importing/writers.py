"""Parse and write each kind of import row: customers (with contact points), reps, purchases, events, consents.

A writer turns one row's cells into a record (or raises ``RowError`` saying which field is wrong
and how to fix it) and writes a batch of records with a few bulk statements. Customers upsert by
external id, reps (``managers``) by code; purchases and events are keyed by their id or content;
consents go to the ledger.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import namedtuple
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import EllipsisType
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from crm.bulk import bulk_insert, bulk_insert_tuples
from crm.db import in_chunks, one_of
from crm.ledger import consents
from crm.ledger.contacts import mark, suppressed
from crm.importing.normalize import (
    normalize_email,
    normalize_phone,
    parse_bool,
    parse_date,
    parse_datetime,
    parse_decimal,
    zone,
)
from crm.models import (
    CallTask,
    Channel,
    Consent,
    ContactKind,
    ContactPoint,
    ContactStatus,
    Customer,
    Manager,
    Purchase,
    Purpose,
    ServiceEvent,
    utcnow,
)

CONSENT_CHANNELS = tuple(c.value for c in Channel) + ("all",)
SUPERSEDED = ContactStatus.superseded.value
_NUMBER = re.compile(r"^-?\d+(?:[.,]\d+)?$")

customers_t = Customer.__table__
contacts_t = ContactPoint.__table__
managers_t = Manager.__table__
purchases_t = Purchase.__table__
events_t = ServiceEvent.__table__
consents_t = Consent.__table__

CUSTOMER_FIELDS = ("name", "first_name", "birthday", "gender", "region", "city", "timezone", "preferred_channel")
CUSTOMER_COLUMNS = ("external_id", *CUSTOMER_FIELDS, "manager_id", "attributes", "created_at", "updated_at")
GENDERS = {"f": "f", "female": "f", "ж": "f", "жен": "f", "женский": "f", "w": "f", "woman": "f",
           "m": "m", "male": "m", "м": "m", "муж": "m", "мужской": "m", "man": "m"}
CONTACT_COLUMNS = ("customer_id", "kind", "raw", "value", "status", "created_at", "updated_at", "status_reason")
_PendingContact = namedtuple("_PendingContact", "id customer_id kind value status")


class RowError(ValueError):
    """One row is wrong; the message says which field and how to fix it."""


@dataclass
class ImportOptions:
    """How to read values that files leave implicit."""

    default_region: str = "RU"
    default_timezone: str = "Europe/Moscow"
    currency: str = "RUB"
    batch_size: int = 20000
    column_map: dict[str, str] = field(default_factory=dict)
    parallel: bool | None = None  # validate in a second process; None: only for files of 4 MB and more


def _attribute_value(value: object) -> object:
    if isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    if not _NUMBER.match(text):
        return text
    if "." in text or "," in text:
        return float(text.replace(",", "."))
    digits = text.lstrip("-")
    return text if len(digits) > 1 and digits.startswith("0") else int(text)  # "007" is a code, not 7


def _blank(value: object) -> bool:
    return value == "" or value is None


def _text(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name, "")
    return None if _blank(value) else str(value).strip()


# the longest value each free-text column stores: PostgreSQL refuses a longer one, failing the whole batch
LENGTHS = {name: column.type.length for name, column in (
    ("name", customers_t.c.name), ("first_name", customers_t.c.first_name), ("region", customers_t.c.region),
    ("city", customers_t.c.city), ("manager", managers_t.c.code), ("code", managers_t.c.code),
    ("position", managers_t.c.position), ("category", purchases_t.c.category), ("note", events_t.c.note),
    ("wording", consents_t.c.wording))}


def _sized(raw: dict[str, Any], name: str, limit: int | None = None) -> str | None:
    """``_text``, refusing a value longer than its column (``LENGTHS``) with a reason instead of failing the batch."""
    value = _text(raw, name)
    limit = limit or LENGTHS[name]
    if value is not None and len(value) > limit:
        raise RowError(f"{name} is {len(value):,} characters long, more than the {limit} the base stores; shorten it")
    return value


def parse_gender(raw: object) -> str | None:
    """``f`` or ``m`` from the ways files write it (ж / м, female / male, жен. / муж.); None when empty."""
    text = str(raw).strip().lower().rstrip(".") if not _blank(raw) else ""
    if not text:
        return None
    if text not in GENDERS:
        raise RowError(f"gender {str(raw)!r} is not one of f, m (also ж / м, female / male, жен / муж); "
                       "correct it, or leave the cell empty when it is not known")
    return GENDERS[text]


class Writer:
    """Parse one kind of row and write batches of them."""

    TOUCHED_LIMIT = 200_000
    rejects_on_write = True  # write() may turn a parsed row into a rejection (e.g. an unknown customer)
    partial_rows = False  # a row may leave out fields, which keep their stored values (customers only)

    def __init__(self, options: ImportOptions, path: Path) -> None:
        self.options = options
        self.path = path
        self.touched: set[int] | None = set()

    def touch(self, customer_ids: Iterable[int]) -> None:
        """Remember customers whose data changed (None once there are too many: refresh everyone)."""
        if self.touched is not None:
            self.touched.update(customer_ids)
            if len(self.touched) > self.TOUCHED_LIMIT:
                self.touched = None

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def batch_key(self, record: dict[str, Any]) -> str:
        return record["key"]

    def write(self, conn: Connection, records: list[dict[str, Any]]) -> list[str]:
        raise NotImplementedError

    def _customer_ids(self, conn: Connection, external_ids: Iterable[str]) -> dict[str, int]:
        result: dict[str, int] = {}
        for chunk in in_chunks(set(external_ids)):
            rows = conn.execute(select(customers_t.c.external_id, customers_t.c.id)
                                .where(one_of(conn, customers_t.c.external_id, chunk)))
            result.update({ext: cid for ext, cid in rows})
        return result

    @staticmethod
    def _customer_ref(raw: dict[str, Any]) -> str:
        customer = _text(raw, "customer")
        if customer is None:
            raise RowError("customer is empty; give the customer's external id")
        return customer

    @staticmethod
    def _unknown_customer(external_id: str) -> str:
        return (f"customer {external_id!r} is not in the base; import it with `touchflow import customers` "
                "first, then import this file again")


ABSENT = ...  # a customer field the file has no column for: the stored value is left alone


# A parsed customer row: a plain tuple, the cheapest thing to hand between processes.
# (external_id, fields aligned with CustomerWriter.FIELDS with ABSENT where the file has no column,
#  manager code or None to clear or ABSENT, contacts as ((kind, (raw, normalised) or None to clear), ...),
#  attributes as ((name, value or None to remove), ...))
CustomerRecord = tuple[str, tuple[Any, ...], "str | None | EllipsisType", tuple[Any, ...], tuple[Any, ...]]


class CustomerWriter(Writer):
    """Upsert customers by external id, with their email, phone and Telegram contact points."""

    FIELDS = CUSTOMER_FIELDS
    rejects_on_write = False
    partial_rows = True
    _EXISTING = select(*(customers_t.c[name] for name in ("id", "external_id", *FIELDS, "manager_id", "attributes")))

    def batch_key(self, record: CustomerRecord) -> str:
        return record[0]

    def parse(self, raw: dict[str, Any]) -> CustomerRecord:
        external_id = _text(raw, "external_id")
        if external_id is None:
            raise RowError("external_id is empty; every customer needs the id the source CRM gives it")
        if len(external_id) > 128:
            raise RowError(f"external_id {external_id[:20]!r}… is longer than 128 characters")
        fields: dict[str, Any] = {}
        for name in ("name", "first_name", "region", "city"):
            if name in raw:
                fields[name] = _sized(raw, name) or ("" if name == "name" else None)
        if "gender" in raw:
            fields["gender"] = parse_gender(raw["gender"])
        if "birthday" in raw:
            fields["birthday"] = None if _blank(raw["birthday"]) else _field(parse_date, raw["birthday"], "birthday")
            if fields["birthday"] is not None and fields["birthday"] > date.today():
                raise RowError(f"birthday {raw['birthday']!r} is in the future")
        if "timezone" in raw:
            tz = _text(raw, "timezone")
            if tz is not None:
                _field(zone, tz, "timezone")
            fields["timezone"] = tz
        if "preferred_channel" in raw:
            channel = _text(raw, "preferred_channel")
            if channel is not None:
                channel = channel.lower()
                if channel not in {c.value for c in Channel}:
                    raise RowError(f"preferred_channel {channel!r} is unknown; use one of "
                                   f"{', '.join(c.value for c in Channel)}")
            fields["preferred_channel"] = channel
        contacts: list[tuple[str, tuple[str, str] | None]] = []
        if "email" in raw:
            email = _text(raw, "email")
            contacts.append((ContactKind.email.value,
                             None if email is None else (email, _field(normalize_email, email, "email"))))
        if "phone" in raw:
            phone = _text(raw, "phone")
            contacts.append((ContactKind.phone.value, None if phone is None else (
                phone, _field(normalize_phone, phone, "phone", self.options.default_region))))
        if "telegram" in raw:
            chat = _text(raw, "telegram")
            if chat is not None and not re.fullmatch(r"-?\d{1,20}", chat):
                raise RowError(f"telegram {chat!r} is not a chat id (digits); bind chats with `touchflow telegram link`")
            contacts.append((ContactKind.telegram.value, None if chat is None else (chat, chat)))
        attributes = tuple((name[5:], None if _blank(value) else _attribute_value(value))
                           for name, value in raw.items() if name.startswith("attr."))
        return (external_id, tuple(fields.get(name, ABSENT) for name in self.FIELDS),
                _sized(raw, "manager") if "manager" in raw else ABSENT, tuple(contacts), attributes)

    def write(self, conn: Connection, records: list[CustomerRecord]) -> list[str]:
        now = utcnow()
        managers = self._manager_ids(conn, {r[2] for r in records if r[2] is not ABSENT and r[2]})
        existing = {row.external_id: row for chunk in in_chunks([r[0] for r in records])
                    for row in conn.execute(self._EXISTING.where(one_of(conn, customers_t.c.external_id, chunk)))}
        outcomes: list[str] = []
        new_rows: list[tuple[Any, ...]] = []
        changed_rows: list[dict[str, Any]] = []
        for external_id, fields, manager, _, record_attributes in records:
            values = {name: value for name, value in zip(self.FIELDS, fields) if value is not ABSENT}
            if manager is not ABSENT:
                values["manager_id"] = managers.get(manager) if manager else None
            current = existing.get(external_id)
            if current is None:
                new_rows.append((external_id, *(values.get(name, "" if name == "name" else None)
                                                for name in self.FIELDS),
                                 values.get("manager_id"), {k: v for k, v in record_attributes if v is not None},
                                 now, now))
                outcomes.append("created")
                continue
            attributes = dict(current.attributes or {})
            for key, value in record_attributes:
                if value is None:
                    attributes.pop(key, None)
                else:
                    attributes[key] = value
            diff = {k: v for k, v in values.items() if getattr(current, k) != v}
            if attributes != (current.attributes or {}):
                diff["attributes"] = attributes
            if diff:
                row = {"external_id": external_id, **{name: getattr(current, name) for name in self.FIELDS},
                       "manager_id": current.manager_id, "attributes": current.attributes,
                       **diff, "b_id": current.id, "updated_at": now}
                changed_rows.append(row)
                outcomes.append("updated")
            else:
                outcomes.append("unchanged")
        ids = {ext: row.id for ext, row in existing.items()}
        if new_rows:
            ids.update(self._insert_customers(conn, new_rows))
        if changed_rows:
            conn.execute(
                update(customers_t).where(customers_t.c.id == bindparam("b_id")).values(
                    {name: bindparam(name) for name in (*self.FIELDS, "manager_id", "attributes", "updated_at")}),
                changed_rows,
            )
        contact_changes = self._write_contacts(conn, records, ids, {row.id for row in existing.values()}, now)
        outcomes = [("updated" if outcome == "unchanged" and record[0] in contact_changes else outcome)
                    for record, outcome in zip(records, outcomes)]
        # touched after the contacts: a record whose only change is a new address changed too
        self.touch(ids[record[0]] for record, outcome in zip(records, outcomes) if outcome != "unchanged")
        return outcomes

    @staticmethod
    def _insert_customers(conn: Connection, rows: list[tuple[Any, ...]]) -> dict[str, int]:
        """Insert new customers (tuples in CUSTOMER_COLUMNS order); return their ids by external id.

        The ids are read back as one range above the largest id before the insert: ids only grow
        (SQLite under the write lock, PostgreSQL from its sequence), so no IN lists are needed.
        """
        before = conn.execute(select(func.max(customers_t.c.id))).scalar() or 0
        bulk_insert_tuples(conn, customers_t, CUSTOMER_COLUMNS, rows)
        # each new record is its own person until `crm.persons.refresh_persons` finds who it shares addresses with
        conn.execute(update(customers_t).where(customers_t.c.id > before, customers_t.c.person_id.is_(None))
                     .values(person_id=customers_t.c.id))
        wanted = {row[0] for row in rows}
        found = {ext: cid for ext, cid in conn.execute(
            select(customers_t.c.external_id, customers_t.c.id).where(customers_t.c.id > before)) if ext in wanted}
        if len(found) != len(wanted):
            raise RuntimeError(f"{len(wanted) - len(found)} inserted customers could not be read back")
        return found

    def _manager_ids(self, conn: Connection, codes: set[str]) -> dict[str, int]:
        """The reps' ids by code; an unknown code becomes a rep named by the code, flagged ``needs_name``."""
        if not codes:
            return {}
        known = dict(conn.execute(select(managers_t.c.code, managers_t.c.id)
                                  .where(managers_t.c.code.in_(codes))).all())
        missing = [code for code in codes if code not in known]
        if missing:
            conn.execute(insert(managers_t), [{"code": c, "name": c, "needs_name": True, "active": True,
                                               "created_at": utcnow()} for c in missing])
            known.update(conn.execute(select(managers_t.c.code, managers_t.c.id)
                                      .where(managers_t.c.code.in_(missing))).all())
        return known

    def _write_contacts(self, conn: Connection, records: list[CustomerRecord], ids: dict[str, int],
                        existing_ids: set[int], now) -> set[str]:
        """Insert new contact points, supersede replaced ones; return external ids whose contacts changed."""
        wanted = [(external_id, ids[external_id], kind, value)
                  for external_id, _, _, contacts, _ in records for kind, value in contacts]
        if not wanted:
            return set()
        customer_ids = list({cid for _, cid, _, _ in wanted} & existing_ids)
        current: dict[tuple[int, str], list[Any]] = {}
        for chunk in in_chunks(customer_ids):
            for row in conn.execute(select(contacts_t.c.id, contacts_t.c.customer_id, contacts_t.c.kind,
                                           contacts_t.c.value, contacts_t.c.status)
                                    .where(one_of(conn, contacts_t.c.customer_id, chunk))):
                current.setdefault((row.customer_id, row.kind), []).append(row)
        inserts: list[list[Any]] = []  # CONTACT_COLUMNS order
        active = ContactStatus.active.value
        status_moves: list[dict[str, Any]] = []
        changed: set[str] = set()
        for external_id, customer_id, kind, value in wanted:
            if customer_id not in existing_ids:
                if value:
                    inserts.append([customer_id, kind, value[0][:320], value[1], active, now, now])
                continue
            rows = current.get((customer_id, kind), [])
            normalised = value[1] if value else None
            for row in rows:
                if row.value != normalised and row.status == ContactStatus.active.value:
                    status_moves.append({"b_id": row.id, "status": SUPERSEDED, "status_reason":
                                         f"replaced by an import of {self.path.name}", "updated_at": now})
                    changed.add(external_id)
                elif row.value == normalised and row.status == SUPERSEDED:
                    status_moves.append({"b_id": row.id, "status": ContactStatus.active.value,
                                         "status_reason": None, "updated_at": now})
                    changed.add(external_id)
            if value and not any(row.value == normalised for row in rows):
                inserts.append([customer_id, kind, value[0][:320], normalised, active, now, now])
                current.setdefault((customer_id, kind), []).append(
                    _PendingContact(None, customer_id, kind, normalised, active))
                changed.add(external_id)
        if inserts:
            blocked = suppressed(conn, [(row[1], row[3]) for row in inserts])
            for row in inserts:
                if (row[1], row[3]) in blocked:
                    row[4] = ContactStatus.blocked.value
                    row.append("suppressed: this address was erased at the person's request")
                else:
                    row.append(None)
            bulk_insert_tuples(conn, contacts_t, CONTACT_COLUMNS, inserts)
        mark(conn, status_moves)
        return changed


def _field(parser: Callable[..., Any], value: object, name: str, *args: Any) -> Any:
    try:
        return parser(value, *args)
    except ValueError as exc:
        message = str(exc)
        raise RowError(message if message.startswith(name) else f"{name}: {message}") from None


class _KeyedWriter(Writer):
    """Insert rows of a child table keyed by ``source_key``; existing keys are left as they are."""

    table: Any = None

    def write(self, conn: Connection, records: list[dict[str, Any]]) -> list[str]:
        customers = self._customer_ids(conn, (r["customer"] for r in records))
        keys = [r["key"] for r in records]
        existing = set()
        for chunk in in_chunks(keys):
            existing.update(conn.execute(select(self.table.c.source_key)
                                         .where(one_of(conn, self.table.c.source_key, chunk))).scalars())
        outcomes: list[str] = []
        rows: list[dict[str, Any]] = []
        now = utcnow()
        for record in records:
            customer_id = customers.get(record["customer"])
            if customer_id is None:
                outcomes.append(self._unknown_customer(record["customer"]))
            elif record["key"] in existing:
                outcomes.append("unchanged")
            else:
                rows.append({**record["row"], "source_key": record["key"], "customer_id": customer_id,
                             "created_at": now})
                outcomes.append("created")
        if rows:
            bulk_insert(conn, self.table, list(rows[0]), rows)
            self.touch(row["customer_id"] for row in rows)
        return outcomes

    def _key_for(self, explicit: str | None, *natural: object) -> str:
        if explicit:
            return explicit[:128]
        digest = hashlib.sha1("\x1f".join(str(v) for v in natural).encode()).hexdigest()
        occurrence = self._occurrences.get(digest, 0) + 1
        self._occurrences[digest] = occurrence
        return f"h:{digest}:{occurrence}"

    def __init__(self, options: ImportOptions, path: Path) -> None:
        super().__init__(options, path)
        self._occurrences: dict[str, int] = {}


class PurchaseWriter(_KeyedWriter):
    """Add purchase lines; ``order_id`` (or the row's content) keeps re-imports from doubling them."""

    table = purchases_t

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer_ref(raw)
        purchased_on = _field(parse_date, raw["date"], "date")
        product = _text(raw, "product")
        if product is None:
            raise RowError("product is empty")
        quantity = Decimal(1) if _blank(raw.get("quantity", "")) else _field(parse_decimal, raw["quantity"], "quantity")
        if quantity <= 0:
            raise RowError(f"quantity {raw['quantity']!r} must be above zero")
        if _blank(raw.get("amount", "")):
            raise RowError("amount is empty; give the line's total")
        amount = _field(parse_decimal, raw["amount"], "amount")
        currency = (_text(raw, "currency") or self.options.currency).upper()
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise RowError(f"currency {currency!r} is not an ISO 4217 code such as RUB")
        category = _sized(raw, "category")
        key = self._key_for(_text(raw, "order_id"), customer, purchased_on, product, category, quantity, amount)
        return {"key": key, "customer": customer, "row": {
            "purchased_on": purchased_on, "product": product[:300], "category": category,
            "quantity": str(quantity), "amount": str(amount), "currency": currency}}  # str: cheap to pickle


class EventWriter(_KeyedWriter):
    """Add service events / visits; ``event_id`` (or the row's content) deduplicates."""

    table = events_t

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer_ref(raw)
        occurred_on = _field(parse_date, raw["date"], "date")
        kind = _text(raw, "kind")
        if kind is None:
            raise RowError("kind is empty; say what happened (haircut, car_service, trip, …)")
        kind = re.sub(r"\s+", "_", kind.lower())
        attributes = {name[5:]: _attribute_value(value) for name, value in raw.items()
                      if name.startswith("attr.") and not _blank(value)}
        note = _sized(raw, "note")
        key = self._key_for(_text(raw, "event_id"), customer, occurred_on, kind,
                            json.dumps(attributes, sort_keys=True))
        return {"key": key, "customer": customer, "row": {
            "occurred_on": occurred_on, "kind": kind[:64], "note": note, "attributes": attributes}}


class ConsentWriter(Writer):
    """Append consent grants and revocations to the ledger; an identical entry is not added twice."""

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer_ref(raw)
        channel = (_text(raw, "channel") or "").lower()
        if channel not in CONSENT_CHANNELS:
            raise RowError(f"channel {channel!r} is unknown; use one of {', '.join(CONSENT_CHANNELS)}")
        purpose = (_text(raw, "purpose") or "").lower()
        if purpose not in {p.value for p in Purpose}:
            raise RowError(f"purpose {purpose!r} is unknown; use marketing or service")
        granted = _field(parse_bool, raw["status"], "status", "status")
        at = _field(parse_datetime, raw["at"], "at", self.options.default_timezone)
        source = _text(raw, "source") or f"import:{self.path.name}"
        wording = _sized(raw, "wording")
        row = {"channel": channel, "purpose": purpose, "granted": granted, "at": at, "source": source[:200],
               "wording": wording}
        return {"key": f"{customer}|{channel}|{purpose}|{granted}|{at.isoformat()}|{source}", "customer": customer,
                "row": row}

    def write(self, conn: Connection, records: list[dict[str, Any]]) -> list[str]:
        customers = self._customer_ids(conn, (r["customer"] for r in records))
        ids = list(set(customers.values()))
        existing = set()
        for chunk in in_chunks(ids):
            for row in conn.execute(select(consents_t.c.customer_id, consents_t.c.channel, consents_t.c.purpose,
                                           consents_t.c.granted, consents_t.c.at, consents_t.c.source)
                                    .where(one_of(conn, consents_t.c.customer_id, chunk))):
                existing.add((row.customer_id, row.channel, row.purpose, row.granted, row.at, row.source))
        outcomes: list[str] = []
        rows: list[dict[str, Any]] = []
        now = utcnow()
        for record in records:
            customer_id = customers.get(record["customer"])
            if customer_id is None:
                outcomes.append(self._unknown_customer(record["customer"]))
                continue
            r = record["row"]
            identity = (customer_id, r["channel"], r["purpose"], r["granted"], r["at"], r["source"])
            if identity in existing:
                outcomes.append("unchanged")
                continue
            existing.add(identity)
            rows.append({**r, "customer_id": customer_id, "recorded_at": now})
            outcomes.append("created")
        consents.append(conn, rows)
        return outcomes


_ACTIVE_WORDS = {"active": True, "активен": True, "работает": True, "inactive": False, "неактивен": False,
                 "уволен": False}
MANAGER_FIELDS = ("name", "position", "phone", "email", "daily_call_capacity", "active")


class ManagerWriter(Writer):
    """Upsert sales reps by code: name, position, phone, email, daily call capacity, active.

    A column the file leaves out (or a blank name or capacity) keeps the stored value; a new rep
    without a name is named by its code and flagged ``needs_name``, like reps that customer
    imports create. A rep with open call tasks is not deactivated here: ``touchflow managers
    deactivate`` moves their work first, so the row is rejected saying so.
    """

    partial_rows = True
    _EXISTING = select(managers_t.c.id, managers_t.c.code, managers_t.c.needs_name,
                       *(managers_t.c[name] for name in MANAGER_FIELDS))

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        code = _sized(raw, "code")
        if code is None:
            raise RowError("code is empty; every rep needs the code customer files name them by (e.g. petrov)")
        fields: dict[str, Any] = {}
        if _text(raw, "name") is not None:
            fields["name"] = _sized(raw, "name", managers_t.c.name.type.length)
        if "position" in raw:
            fields["position"] = _sized(raw, "position")
        if "phone" in raw:
            phone = _text(raw, "phone")
            fields["phone"] = phone and _field(normalize_phone, phone, "phone", self.options.default_region)
        if "email" in raw:
            email = _text(raw, "email")
            fields["email"] = email and _field(normalize_email, email, "email")
        if _text(raw, "capacity") is not None:
            fields["daily_call_capacity"] = _capacity(raw["capacity"])
        if _text(raw, "active") is not None:
            word = str(raw["active"]).strip().lower()
            try:
                fields["active"] = _ACTIVE_WORDS[word] if word in _ACTIVE_WORDS else parse_bool(word, "active")
            except ValueError:
                raise RowError(f"active {raw['active']!r} is neither yes nor no; write yes or no (also да / нет, "
                               "active / inactive), or leave the cell empty to keep the stored value") from None
        return {"key": code, "fields": fields}

    def write(self, conn: Connection, records: list[dict[str, Any]]) -> list[str]:
        now = utcnow()
        existing = {row.code: row for chunk in in_chunks([r["key"] for r in records])
                    for row in conn.execute(self._EXISTING.where(one_of(conn, managers_t.c.code, chunk)))}
        busy = _open_tasks(conn, [row.id for row in existing.values()])
        outcomes: list[str] = []
        for record in records:
            code, fields = record["key"], record["fields"]
            current = existing.get(code)
            if current is None:
                conn.execute(insert(managers_t).values(code=code, name=fields.get("name", code),
                                                       needs_name="name" not in fields, created_at=now,
                                                       **{k: v for k, v in fields.items() if k != "name"}))
                outcomes.append("created")
                continue
            if fields.get("active") is False and current.active and busy.get(current.id):
                outcomes.append(f"active: rep {code} has {busy[current.id]} open call tasks; run `touchflow managers "
                                f"deactivate {code}` (it moves them to other reps), then import this row again")
                continue
            diff = {k: v for k, v in fields.items() if getattr(current, k) != v}
            if "name" in fields and current.needs_name:
                diff["needs_name"] = False
            if diff:
                conn.execute(update(managers_t).where(managers_t.c.id == current.id).values(**diff))
            outcomes.append("updated" if diff else "unchanged")
        return outcomes


def _capacity(raw: object) -> int:
    """A daily call capacity: a whole number of calls, 0 or more (Excel may hand ``40.0``)."""
    value = _field(parse_decimal, raw, "capacity")
    if value != value.to_integral_value() or value < 0 or value > 10_000:
        raise RowError(f"capacity {raw!r} is not a whole number of calls a day between 0 and 10000; write e.g. 40")
    return int(value)


def _open_tasks(conn: Connection, manager_ids: list[int]) -> dict[int, int]:
    """Open call tasks per rep."""
    if not manager_ids:
        return {}
    tasks_t = CallTask.__table__
    return dict(conn.execute(select(tasks_t.c.manager_id, func.count()).where(
        tasks_t.c.status == "open", tasks_t.c.manager_id.in_(manager_ids)).group_by(tasks_t.c.manager_id)).all())


WRITERS: dict[str, type[Writer]] = {
    "customers": CustomerWriter,
    "managers": ManagerWriter,
    "purchases": PurchaseWriter,
    "events": EventWriter,
    "consents": ConsentWriter,
}

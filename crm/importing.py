"""Import customers, purchases, service events and consents from CSV / XLSX files.

Rows stream in batches; each batch is validated row by row, then written with a few bulk
statements and committed, so a crash loses at most the batch in flight and a rerun repeats
nothing (every kind upserts or deduplicates on a stable key). Rejected rows are written,
verbatim and with their row number and reason, to a rejects file that can be fixed and
imported again.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import multiprocessing
import re
import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from itertools import islice
from pathlib import Path
from types import EllipsisType
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from crm.bulk import bulk_insert, bulk_insert_tuples
from crm.columns import SPECS, resolve_header
from crm.db import BASE_TABLES, in_chunks, one_of, refresh_statistics, write_tx
from crm.models import (
    Channel,
    Consent,
    ContactKind,
    ContactPoint,
    ContactStatus,
    Customer,
    ImportRun,
    Manager,
    Purchase,
    Purpose,
    ServiceEvent,
    utcnow,
)
from crm.normalize import (
    normalize_email,
    normalize_phone,
    parse_bool,
    parse_date,
    parse_datetime,
    parse_decimal,
    zone,
)
from crm.readers import FileFormatError, Table, open_table

KINDS = tuple(SPECS)
CONSENT_CHANNELS = tuple(c.value for c in Channel) + ("all",)
SUPERSEDED = "superseded"
_NUMBER = re.compile(r"^-?\d+(?:[.,]\d+)?$")

customers_t = Customer.__table__
contacts_t = ContactPoint.__table__
managers_t = Manager.__table__
purchases_t = Purchase.__table__
events_t = ServiceEvent.__table__
consents_t = Consent.__table__

CUSTOMER_COLUMNS = ("external_id", "name", "first_name", "birthday", "region", "timezone", "manager_id",
                    "preferred_channel", "attributes", "created_at", "updated_at")
CONTACT_COLUMNS = ("customer_id", "kind", "raw", "value", "status", "created_at", "updated_at")
ProgressCallback = Callable[[int, int], None]
_PendingContact = namedtuple("_PendingContact", "id customer_id kind value status")


class ImportFailed(RuntimeError):
    """The file cannot be imported at all (unreadable, unknown or missing columns)."""


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


@dataclass
class ImportSummary:
    """What an import did; ``accepted`` = created + updated + unchanged valid rows."""

    kind: str
    path: str
    rows: int = 0
    accepted: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejects_path: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    seconds: float = 0.0
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    touched_customers: set[int] | None = field(default_factory=set, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON-ready data (without the touched customer ids)."""
        data = asdict(self)
        data.pop("touched_customers")
        return data

    @property
    def rows_per_second(self) -> float:
        """Rows handled per second of wall time."""
        return self.rows / self.seconds if self.seconds else 0.0


class RejectsWriter:
    """Write rejected rows (original values + ``_row`` + ``_reason``), opening the file on first use."""

    def __init__(self, path: Path, header: list[str], delimiter: str) -> None:
        self.path = path
        self.header = header
        self.delimiter = delimiter
        self._fh = None
        self._writer = None

    def write(self, row_number: int, reason: str, values: list[object]) -> None:
        """Append one rejected row."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8-sig", newline="")
            self._writer = csv.writer(self._fh, delimiter=self.delimiter)
            self._writer.writerow(["_row", "_reason", *self.header])
        self._writer.writerow([row_number, reason, *("" if v is None else v for v in values or ())])

    def close(self) -> None:
        """Flush and close the file if it was opened."""
        if self._fh is not None:
            self._fh.close()

    @property
    def used(self) -> bool:
        """True when at least one row was written."""
        return self._writer is not None


def default_rejects_path(path: Path) -> Path:
    """Return ``<file>.rejects.csv`` beside the imported file."""
    return path.with_name(path.name + ".rejects.csv")


def import_file(
    engine: Engine,
    kind: str,
    path: Path | str,
    *,
    options: ImportOptions | None = None,
    rejects_path: Path | str | None = None,
    progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Import one file of ``kind`` (customers, purchases, events, consents) and return the summary.

    Raises ImportFailed for problems with the whole file; row problems go to the rejects file.
    """
    if kind not in SPECS:
        raise ImportFailed(f"unknown import kind {kind!r}; choose one of {', '.join(KINDS)}")
    options = options or ImportOptions()
    path = Path(path)
    try:
        table = open_table(path)
    except FileFormatError as exc:
        raise ImportFailed(str(exc)) from exc
    try:
        try:
            positions = resolve_header(SPECS[kind], table.header, options.column_map)
        except ValueError as exc:
            raise ImportFailed(f"{path}: {exc}") from exc
        return _run(engine, kind, table, positions, options, Path(rejects_path or default_rejects_path(path)), progress)
    finally:
        table.close()


ParsedRow = tuple[int, "list[object] | None", Any]  # (row number, raw values, record or rejection reason)
PARALLEL_MIN_BYTES = 4 << 20


def parse_rows(kind: str, table: Table, positions: dict[int, str], options: ImportOptions
               ) -> Iterator[tuple[list[ParsedRow], int]]:
    """Yield batches of (row number, values, parsed record or rejection reason) and the file position."""
    writer = _WRITERS[kind](options, table.path)
    width = len(table.header)
    rows = iter(table.rows)
    while True:
        with gc_paused():
            chunk = [_parse_row(writer, width, positions, number, values)
                     for number, values in islice(rows, options.batch_size)]
        if not chunk:
            return
        yield chunk, table.position()


def _parse_row(writer: _Writer, width: int, positions: dict[int, str], number: int, values: list[object]
               ) -> ParsedRow:
    record: Any
    if len(values) > width and any(str(v).strip() for v in values[width:]):
        record = (f"row has {len(values)} fields but the header has {width}; "
                  "check for an unquoted delimiter inside a value")
    else:
        try:
            record = writer.parse({name: _cell(values, index) for index, name in positions.items()})
        except (RowError, ValueError) as exc:
            record = str(exc)
    # rows the writer can no longer reject need not carry their raw values back (less to pickle)
    keep = isinstance(record, str) or writer.rejects_on_write
    return number, values if keep else None, record


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch of objects is built or unpickled.

    Building a batch of thousands of tuples and dicts triggers collections that rescan every
    object still alive, which costs more than the work itself (7 µs a row when unpickling parsed
    customers, against 1.4 µs with the collector paused). Cycles made meanwhile are collected
    once it runs again.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _produce(kind: str, path: str, positions: dict[int, str], options: ImportOptions, queue: Any) -> None:
    """Child process: read and validate the file, hand parsed batches to the writer through ``queue``."""
    try:
        table = open_table(path)
        try:
            for item in parse_rows(kind, table, positions, options):
                queue.put(item)
        finally:
            table.close()
        queue.put(None)
    except BaseException as exc:  # report anything to the parent instead of dying silently
        queue.put(RuntimeError(f"reading {path} failed: {exc!r}"))


def _parallel_rows(kind: str, table: Table, positions: dict[int, str], options: ImportOptions
                   ) -> Iterator[tuple[list[ParsedRow], int]]:
    """Run ``parse_rows`` in a second process so validation and database writes use both cores."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue(maxsize=4)
    process = context.Process(target=_produce, args=(kind, str(table.path), positions, options, queue),
                              daemon=True)
    process.start()
    try:
        while True:
            with gc_paused():
                item = queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise ImportFailed(str(item))
            yield item
    finally:
        if process.is_alive():
            process.terminate()
        process.join()


def _run(
    engine: Engine,
    kind: str,
    table: Table,
    positions: dict[int, str],
    options: ImportOptions,
    rejects_path: Path,
    progress: ProgressCallback | None,
) -> ImportSummary:
    started = time.perf_counter()
    summary = ImportSummary(kind=kind, path=str(table.path), encoding=table.encoding, delimiter=table.delimiter)
    rejects = RejectsWriter(rejects_path, table.header, table.delimiter or ";")
    writer = _WRITERS[kind](options, table.path)
    started_at = utcnow()
    batch: list[ParsedRow] = []
    batch_keys: set[str] = set()

    def reject(number: int, values: list[object], reason: str) -> None:
        summary.rejected += 1
        label = reason.split(" ", 1)[0].rstrip(":")
        summary.rejection_reasons[label] = summary.rejection_reasons.get(label, 0) + 1
        rejects.write(number, reason, values)

    def flush() -> None:
        if not batch:
            return
        valid = [record for _, _, record in batch if not isinstance(record, str)]
        outcomes: Iterator[str] = iter(())
        if valid:
            with write_tx(engine) as conn, gc_paused():
                outcomes = iter(writer.write(conn, valid))
        for number, values, record in batch:
            outcome = record if isinstance(record, str) else next(outcomes)
            if outcome not in ("created", "updated", "unchanged"):
                reject(number, values, outcome)
            else:
                setattr(summary, outcome, getattr(summary, outcome) + 1)
                summary.accepted += 1
        batch.clear()
        batch_keys.clear()

    parallel = options.parallel if options.parallel is not None else table.size_bytes >= PARALLEL_MIN_BYTES
    if table.encoding is None:  # XLSX: openpyxl streams rows; keep it in one process
        parallel = False
    batches = (_parallel_rows if parallel else parse_rows)(kind, table, positions, options)
    try:
        for chunk, position in batches:
            for number, values, record in chunk:
                summary.rows += 1
                if not isinstance(record, str):
                    key = writer.batch_key(record)
                    if key in batch_keys:
                        flush()
                    batch_keys.add(key)
                batch.append((number, values, record))
            flush()
            if progress:
                progress(position, table.size_bytes)
    finally:
        rejects.close()
        if hasattr(batches, "close"):
            batches.close()
    summary.seconds = time.perf_counter() - started
    summary.touched_customers = writer.touched
    if rejects.used:
        summary.rejects_path = str(rejects_path)
    elif rejects_path.exists():
        rejects_path.unlink()
    _record_run(engine, summary, started_at)
    refresh_statistics(engine, BASE_TABLES)  # campaigns look customers up by id lists right after
    return summary


def _cell(values: list[object], index: int) -> object:
    if index >= len(values):
        return ""
    value = values[index]
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else value


def _record_run(engine: Engine, summary: ImportSummary, started_at) -> None:
    row = {name: getattr(summary, name) for name in ("kind", "path", "rows", "accepted", "created",
                                                      "updated", "unchanged", "rejected", "rejects_path")}
    with write_tx(engine) as conn:
        conn.execute(insert(ImportRun.__table__).values(started_at=started_at, finished_at=utcnow(), **row))


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


class _Writer:
    """Parse one kind of row and write batches of them."""

    TOUCHED_LIMIT = 200_000
    rejects_on_write = True  # write() may turn a parsed row into a rejection (e.g. an unknown customer)

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


class CustomerWriter(_Writer):
    """Upsert customers by external id, with their email, phone and Telegram contact points."""

    FIELDS = ("name", "first_name", "birthday", "region", "timezone", "preferred_channel")
    rejects_on_write = False
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
        for name in ("name", "first_name", "region"):
            if name in raw:
                fields[name] = _text(raw, name) or ("" if name == "name" else None)
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
                _text(raw, "manager") if "manager" in raw else ABSENT, tuple(contacts), attributes)

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
                new_rows.append((external_id, values.get("name", ""), values.get("first_name"),
                                 values.get("birthday"), values.get("region"), values.get("timezone"),
                                 values.get("manager_id"), values.get("preferred_channel"),
                                 {k: v for k, v in record_attributes if v is not None}, now, now))
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
                row = {"external_id": external_id, "name": current.name,
                       "first_name": current.first_name, "birthday": current.birthday, "region": current.region,
                       "timezone": current.timezone, "manager_id": current.manager_id,
                       "preferred_channel": current.preferred_channel, "attributes": current.attributes,
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
        self.touch(ids[record[0]] for record, outcome in zip(records, outcomes) if outcome != "unchanged")
        return [("updated" if outcome == "unchanged" and record[0] in contact_changes else outcome)
                for record, outcome in zip(records, outcomes)]

    @staticmethod
    def _insert_customers(conn: Connection, rows: list[tuple[Any, ...]]) -> dict[str, int]:
        """Insert new customers (tuples in CUSTOMER_COLUMNS order); return their ids by external id.

        The ids are read back as one range above the largest id before the insert: ids only grow
        (SQLite under the write lock, PostgreSQL from its sequence), so no IN lists are needed.
        """
        before = conn.execute(select(func.max(customers_t.c.id))).scalar() or 0
        bulk_insert_tuples(conn, customers_t, CUSTOMER_COLUMNS, rows)
        wanted = {row[0] for row in rows}
        found = {ext: cid for ext, cid in conn.execute(
            select(customers_t.c.external_id, customers_t.c.id).where(customers_t.c.id > before)) if ext in wanted}
        if len(found) != len(wanted):
            raise RuntimeError(f"{len(wanted) - len(found)} inserted customers could not be read back")
        return found

    def _manager_ids(self, conn: Connection, codes: set[str]) -> dict[str, int]:
        if not codes:
            return {}
        known = dict(conn.execute(select(managers_t.c.code, managers_t.c.id)
                                  .where(managers_t.c.code.in_(codes))).all())
        missing = [code for code in codes if code not in known]
        if missing:
            conn.execute(insert(managers_t), [{"code": c, "name": c, "active": True, "created_at": utcnow()}
                                              for c in missing])
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
            from crm.privacy import suppressed

            blocked = suppressed(conn, [(row[1], row[3]) for row in inserts])
            for row in inserts:
                if (row[1], row[3]) in blocked:
                    row[4] = ContactStatus.blocked.value
            bulk_insert_tuples(conn, contacts_t, CONTACT_COLUMNS, inserts)
            if blocked:
                conn.execute(update(contacts_t).where(contacts_t.c.status == ContactStatus.blocked.value,
                                                      contacts_t.c.status_reason.is_(None))
                             .values(status_reason="suppressed: this address was erased at the person's request"))
        if status_moves:
            conn.execute(update(contacts_t).where(contacts_t.c.id == bindparam("b_id"))
                         .values(status=bindparam("status"), status_reason=bindparam("status_reason"),
                                 updated_at=bindparam("updated_at")), status_moves)
        return changed


def _field(parser: Callable[..., Any], value: object, name: str, *args: Any) -> Any:
    try:
        return parser(value, *args)
    except ValueError as exc:
        message = str(exc)
        raise RowError(message if message.startswith(name) else f"{name}: {message}") from None


class _KeyedWriter(_Writer):
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
        category = _text(raw, "category")
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
        note = _text(raw, "note")
        key = self._key_for(_text(raw, "event_id"), customer, occurred_on, kind,
                            json.dumps(attributes, sort_keys=True))
        return {"key": key, "customer": customer, "row": {
            "occurred_on": occurred_on, "kind": kind[:64], "note": note, "attributes": attributes}}


class ConsentWriter(_Writer):
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
        wording = _text(raw, "wording")
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
        if rows:
            bulk_insert(conn, consents_t, list(rows[0]), rows)
        return outcomes


_WRITERS: dict[str, type[_Writer]] = {
    "customers": CustomerWriter,
    "purchases": PurchaseWriter,
    "events": EventWriter,
    "consents": ConsentWriter,
}

"""The chain definitions: which fields of which table are chained, the bytes of a row, a table's chain walked.

A chain runs over one table's rows in id order: ``chain = SHA-256(previous chain + the row's text)``,
starting from a value fixed per table and version (``_Definition.initial``).

Version 2 (``CHAINS``): a row's text is the compact JSON array of its fields in the chain's column
order. Instants are whole microseconds since 1970-01-01T00:00:00 UTC, booleans 0 or 1, text as it
is (no \\u escapes for non-ASCII), NULL ``null``. The database computes instants and booleans
(``_micros``), so that ``_array_text`` hands each row to the JSON encoder as the driver gives it.

Version 1 (``LEGACY_CHAINS``, frozen: how seals without seq and mac were made): a row's text is its
sorted-key JSON object, instants as ISO text with "+00:00" (``_canonical``, written field by field
by ``_row_text``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from json.encoder import c_make_encoder, encode_basestring  # the C encoder json.dumps uses (None without C)
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, case, cast, func, select, type_coerce
from sqlalchemy.engine import Connection, Engine

from crm.models import AccessLog, Consent, Erasure, Touch, TouchEvent, UTCDateTime

touches = Touch.__table__
events = TouchEvent.__table__

VERSION = 2
CHAINS = {  # version 2; id first in each (read by position)
    "touches": (touches, ("id", "person_key", "customer_id", "campaign", "run_id", "offer", "purpose", "channel",
                          "contact_point_id", "address_digest", "claim_key", "template", "template_hash",
                          "body_hash", "consent_id", "manager_id", "created_at", "due_at")),
    "touch_events": (events, ("id", "touch_id", "status", "at", "reason", "error_code", "provider_message_id")),
    "consents": (Consent.__table__, ("id", "customer_id", "channel", "purpose", "granted", "at", "source",
                                     "wording", "recorded_at")),
    "erasures": (Erasure.__table__, ("id", "customer_id", "reason", "at")),
    "access_log": (AccessLog.__table__, ("id", "at", "user_id", "username", "role", "action", "customer_id",
                                         "person_id", "client", "method", "route", "detail")),
}
LEGACY_CHAINS = {  # version 1, frozen: how seals without seq and mac were made
    "touches": (touches, ("id", "person_key", "customer_id", "campaign", "run_id", "offer", "purpose",
                          "channel", "claim_key", "template_hash", "body_hash", "consent_id", "created_at")),
    "consents": (Consent.__table__, ("id", "customer_id", "channel", "purpose", "granted", "at", "source",
                                     "wording", "recorded_at")),
    "touch_events": (events, ("id", "touch_id", "status", "at", "detail")),
}


# ---------------------------------------------------------------------------------------------
# The bytes of a row


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False)  # built once: json.dumps makes one per call
_ARRAY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def _canonical(values: dict[str, Any]) -> bytes:
    """Version 1: a row's bytes are its sorted-key JSON object, instants as ISO text with "+00:00".

    ``_row_text`` writes the same text field by field, without building a dict per row.
    """
    return _ENCODER.encode({k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}).encode()


def _json(value: Any) -> str:
    """One value as ``_ENCODER`` writes it inside an object (the common types first)."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if hasattr(value, "isoformat"):
        return encode_basestring(value.isoformat())
    return _ENCODER.encode(value)  # bool, float, dict, list: as the encoder writes them


def _instant(value: datetime | None) -> str:
    """A stored (naive UTC) instant as the aware value's isoformat() would read."""
    return "null" if value is None else f'"{value.isoformat()}+00:00"'


def _row_text(columns: tuple[str, ...], instants: set[str]):
    """Version 1: a function from a row (values in ``columns`` order) to ``_canonical``'s text for it."""
    order = sorted(range(len(columns)), key=lambda i: columns[i])
    plan = [(("{" if n == 0 else ", ") + encode_basestring(columns[i]) + ": ", i,
             _instant if columns[i] in instants else _json) for n, i in enumerate(order)]

    def row_text(row) -> str:
        return "".join([key + write(row[i]) for key, i, write in plan]) + "}"
    return row_text


def _unchainable(value: Any) -> Any:
    raise TypeError(f"a chained field holds a {type(value).__name__}, which the chain does not define")


def _array_text():
    """Version 2: a function from a row (a driver's tuple of ints, text and NULLs) to its compact JSON array.

    One call of the C encoder per row, made once, instead of one Python call per field.
    """
    if c_make_encoder is None:  # pragma: no cover - CPython has it
        return _ARRAY_ENCODER.encode
    encoder, join = c_make_encoder(None, _unchainable, encode_basestring, None, ":", ",", False, False, True), "".join
    return lambda row: join(encoder(row, 0))


def _micros(column: Any, dialect: str) -> Any:
    """An instant column as whole microseconds since the epoch (UTC), computed by the database.

    SQLite keeps instants as text ("2026-11-23 09:00:00.123456", written by ``UTCDateTime``):
    whole seconds from ``strftime('%s')`` plus the six fractional digits. PostgreSQL keeps naive
    UTC timestamps: ``EXTRACT(EPOCH)`` is exact (numeric) since PostgreSQL 14, rounded for older.

    A quirk that version 2 keeps: given a fraction, SQLite works in milliseconds, so an instant at
    .9995 s or later counts the next whole second (1 instant in 2,000). Every seal on SQLite was
    made this way and stays checkable; a version 3 would cut the text before its fraction.
    """
    if dialect == "sqlite":
        fraction = case((func.substr(column, 20, 1) == ".", cast(func.substr(column, 21, 6), Integer)), else_=0)
        return cast(func.strftime("%s", column), Integer) * 1000000 + fraction
    return cast(func.round(func.extract("epoch", column) * 1000000), BigInteger)


# ---------------------------------------------------------------------------------------------
# A table's chain


class _Definition(NamedTuple):
    """How one chain of one table is made: the table, the selected expressions, its text writer, its first value."""

    table: Any
    selected: list[Any]
    row_text: Any
    initial: str
    legacy: bool


def _definition(name: str, dialect: str, legacy: bool = False) -> _Definition:
    """The chain of table ``name`` in version 2 (or version 1 when ``legacy``) on ``dialect``."""
    table, columns = (LEGACY_CHAINS if legacy else CHAINS)[name]
    instants = {c for c in columns if isinstance(table.c[c].type, UTCDateTime)}
    if legacy:  # instants read as the naive UTC they are stored as, written with "+00:00" (_instant)
        selected = [type_coerce(table.c[c], DateTime()).label(c) if c in instants else table.c[c] for c in columns]
        return _Definition(table, selected, _row_text(columns, instants),
                           hashlib.sha256(name.encode()).hexdigest(), True)
    selected = [_micros(table.c[c], dialect).label(c) if c in instants
                else cast(table.c[c], Integer).label(c) if isinstance(table.c[c].type, Boolean) else table.c[c]
                for c in columns]
    return _Definition(table, selected, _array_text(),
                       hashlib.sha256(f"touchflow chain v2 {name}".encode()).hexdigest(), False)


def _driver_rows(conn: Connection, query: Any) -> list[tuple]:
    """The query's rows as the driver's tuples: the JSON encoder takes them whole (no Row objects, no conversions)."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup)
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(str(compiled), params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _pages(conn: Connection, definition: _Definition, after: int, upto: int | None, size: int = 10000):
    """The table's rows with id > ``after`` (and <= ``upto``), in id order, a page at a time."""
    table = definition.table
    while True:
        query = select(*definition.selected).where(table.c.id > after)
        if upto is not None:
            query = query.where(table.c.id <= upto)
        query = query.order_by(table.c.id).limit(size)
        rows = conn.execute(query).all() if definition.legacy else _driver_rows(conn, query)
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _chains(engine: Engine, name: str, start: tuple[int, int, str] | None = None, upto: int | None = None,
            *, legacy: bool = False) -> Iterator[tuple[int, int, str]]:
    """Yield (row id, rows so far, chain) for a table, in id order (up to id ``upto`` when given).

    ``start`` (row id, rows, chain) continues a chain from a seal instead of from the first row.
    """
    with engine.connect() as conn:
        yield from _steps(conn, name, start, upto, legacy)


def _steps(conn: Connection, name: str, start: tuple[int, int, str] | None, upto: int | None,
           legacy: bool) -> Iterator[tuple[int, int, str]]:
    """``_chains`` on a connection the caller holds (``verify`` reads everything in one snapshot)."""
    definition = _definition(name, conn.dialect.name, legacy)
    last, count, chain = start or (0, 0, definition.initial)
    row_text, sha256 = definition.row_text, hashlib.sha256
    for rows in _pages(conn, definition, last, upto):
        for row in rows:
            count += 1
            chain = sha256((chain + row_text(row)).encode()).hexdigest()
            yield row[0], count, chain


def _texts(conn: Connection, name: str) -> Iterator[tuple[int, str]]:
    """Yield (row id, the row's version-2 chain text) in id order: ``verify`` folds them itself to resynchronise."""
    definition = _definition(name, conn.dialect.name)
    row_text = definition.row_text
    for rows in _pages(conn, definition, 0, None):
        for row in rows:
            yield row[0], row_text(row)

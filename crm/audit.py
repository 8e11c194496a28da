"""Tamper evidence for the history: hash chains over the append-only rows, sealed and verified.

Each chain runs over a table's rows in id order: ``chain = SHA-256(previous chain + the row's
immutable fields)``. Touches may change only by status moves (and erasure strips addresses and
texts), so their chain covers what never changes: id, person, customer, campaign, run, offer,
purpose, channel, claim key, template hash, body hash, consent, creation time. Consents and touch
events are append-only and covered whole. ``seal`` records the chain after the newest row
(campaign runs and imports seal automatically); ``verify`` recomputes every chain and compares it
with every seal: an edited, inserted-in-the-past or deleted row shows up as the first seal that
no longer matches.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import DateTime, func, insert, select, text, type_coerce
from sqlalchemy.engine import Engine

from crm.db import write_tx
from crm.models import ChainSeal, Consent, Touch, TouchEvent, UTCDateTime, utcnow

seals = ChainSeal.__table__
CHAINS = {  # id first in each: _chains reads it by position
    "touches": (Touch.__table__, ("id", "person_key", "customer_id", "campaign", "run_id", "offer", "purpose",
                                  "channel", "claim_key", "template_hash", "body_hash", "consent_id", "created_at")),
    "consents": (Consent.__table__, ("id", "customer_id", "channel", "purpose", "granted", "at", "source", "wording",
                                     "recorded_at")),
    "touch_events": (TouchEvent.__table__, ("id", "touch_id", "status", "at", "detail")),
}


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False)  # built once: json.dumps makes one per call


def _canonical(values: dict[str, Any]) -> bytes:
    """The definition of a row's bytes in its chain: sorted-key JSON, instants as ISO text with "+00:00".

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
    """A function from a row (values in ``columns`` order) to ``_canonical``'s text for it, 3 times faster."""
    order = sorted(range(len(columns)), key=lambda i: columns[i])
    plan = [(("{" if n == 0 else ", ") + encode_basestring(columns[i]) + ": ", i,
             _instant if columns[i] in instants else _json) for n, i in enumerate(order)]

    def row_text(row) -> str:
        return "".join([key + write(row[i]) for key, i, write in plan]) + "}"
    return row_text


def _chains(engine: Engine, name: str, start: tuple[int, int, str] | None = None, upto: int | None = None):
    """Yield (row id, rows so far, chain) for a table, in id order (up to id ``upto`` when given).

    ``start`` (row id, rows, chain) continues a chain from a seal instead of from the first row.
    """
    table, columns = CHAINS[name]
    last, count, chain = start or (0, 0, hashlib.sha256(name.encode()).hexdigest())
    # instants are read as the naive UTC they are stored as; "+00:00" makes them what the aware
    # values' isoformat() gives, without converting every one to an aware datetime and back
    instants = {c for c in columns if isinstance(table.c[c].type, UTCDateTime)}
    selected = [type_coerce(table.c[c], DateTime()).label(c) if c in instants else table.c[c] for c in columns]
    row_text, sha256 = _row_text(columns, instants), hashlib.sha256
    with engine.connect() as conn:
        while True:
            query = select(*selected).where(table.c.id > last)
            if upto is not None:
                query = query.where(table.c.id <= upto)
            rows = conn.execute(query.order_by(table.c.id).limit(10000)).all()
            if not rows:
                return
            for row in rows:
                count += 1
                chain = sha256((chain + row_text(row)).encode()).hexdigest()
                yield row[0], count, chain
            last = rows[-1][0]


def _settled(engine: Engine, name: str) -> int | None:
    """The newest id of ``name`` below which no row can still appear (PostgreSQL; None: no limit needed).

    On PostgreSQL a transaction still open may hold a lower id than rows already committed; a
    seal past it would later look like a row inserted into the sealed past. ``SHARE`` mode waits
    for the table's open writers to finish and holds new ones only while ``max(id)`` is read;
    rows written after it get higher ids. SQLite has one writer at a time: what a reader sees
    is already settled.
    """
    if engine.dialect.name != "postgresql":
        return None
    table = CHAINS[name][0]
    with engine.begin() as conn:
        conn.execute(text(f'LOCK TABLE "{table.name}" IN SHARE MODE'))
        return conn.execute(select(func.max(table.c.id))).scalar() or 0


def seal(engine: Engine) -> dict[str, int]:
    """Record each chain's value after its newest row; return the rows covered per table.

    Each chain continues from the table's newest seal, so sealing costs the rows added since, not
    the whole history (``verify`` is the one that recomputes everything from the first row).
    """
    covered = {}
    for name in CHAINS:
        with engine.connect() as conn:
            previous = conn.execute(select(seals.c.last_id, seals.c.rows, seals.c.chain)
                                    .where(seals.c.table_name == name).order_by(seals.c.last_id.desc())
                                    .limit(1)).first()
        final = tuple(previous) if previous is not None else None
        for final in _chains(engine, name, final, upto=_settled(engine, name)):
            pass
        if final is None:
            continue
        row_id, count, chain = final
        with write_tx(engine) as conn:
            newest = conn.execute(select(seals.c.last_id).where(seals.c.table_name == name)
                                  .order_by(seals.c.last_id.desc()).limit(1)).scalar()
            if newest != row_id:
                conn.execute(insert(seals).values(table_name=name, last_id=row_id, rows=count, chain=chain,
                                                  created_at=utcnow()))
        covered[name] = count
    return covered


def verify(engine: Engine) -> list[str]:
    """Recompute the chains; return a description of every seal that does not match (empty: intact)."""
    problems: list[str] = []
    with engine.connect() as conn:
        expected = {name: conn.execute(select(seals.c.last_id, seals.c.rows, seals.c.chain)
                                       .where(seals.c.table_name == name).order_by(seals.c.last_id)).all()
                    for name in CHAINS}
    for name, checkpoints in expected.items():
        if not checkpoints:
            continue
        by_id = {cp.last_id: cp for cp in checkpoints}
        newest, reached = max(by_id), set()
        for row_id, count, chain in _chains(engine, name):
            checkpoint = by_id.get(row_id)
            if checkpoint is not None:
                reached.add(row_id)
                if (count, chain) != (checkpoint.rows, checkpoint.chain):
                    problems.append(f"{name}: the rows up to id {row_id} changed since they were sealed "
                                    "(a row was edited, deleted or inserted before it)")
            if row_id >= newest:
                break
        for missing in sorted(set(by_id) - reached):
            problems.append(f"{name}: the sealed row id {missing} is missing (rows were deleted)")
    return problems

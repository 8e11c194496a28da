"""Sealing: a table's chain recorded after its newest row in a numbered, keyed seal; each table's newest seal.

A version-2 seal is numbered per table (``seq`` 1, 2, 3...) and keyed: ``mac`` (``_mac``) binds it to
its number, its rows and the seal before it. A seal continues the chain from the table's newest
seal, so sealing costs the rows added since.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection, Engine

from crm.db import write_tx
from crm.keys import signing_key
from crm.ledger.audit.chains import CHAINS, VERSION, _chains
from crm.models import ChainSeal, utcnow

seals = ChainSeal.__table__


class Head(NamedTuple):
    """A table's newest version-2 seal."""

    id: int
    seq: int
    last_id: int
    rows: int
    chain: str
    mac: str

    def recorded(self) -> dict[str, int]:
        """What a caller keeps of it (a campaign run's summary): enough to find a removed seal."""
        return {"seq": self.seq, "last_id": self.last_id, "rows": self.rows}


def _mac(key: bytes, name: str, seq: int, last_id: int, rows: int, chain: str, previous: str | None) -> str:
    """The seal's HMAC-SHA256: it binds the seal to its number, its rows and the seal before it."""
    message = f"touchflow seal v2\n{name}\n{seq}\n{last_id}\n{rows}\n{chain}\n{previous or ''}"
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _configured_secret() -> str | None:
    """``TOUCHFLOW_SECRET_KEY`` when set (or its Prefect Secret block)."""
    from crm.keys import configured_secret

    return configured_secret()


def _head(conn: Connection, name: str) -> Head | None:
    """The newest version-2 seal of ``name`` (the index on table_name, last_id finds it at once)."""
    row = conn.execute(select(seals.c.id, seals.c.seq, seals.c.last_id, seals.c.rows, seals.c.chain, seals.c.mac)
                       .where(seals.c.table_name == name, seals.c.version == VERSION)
                       .order_by(seals.c.last_id.desc(), seals.c.seq.desc()).limit(1)).first()
    return None if row is None else Head(*row)


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


def _tables(tables: Iterable[str] | None) -> list[str]:
    names = list(CHAINS) if tables is None else list(tables)
    unknown = [name for name in names if name not in CHAINS]
    if unknown:
        raise ValueError(f"no chain for {', '.join(unknown)}; chained tables: {', '.join(CHAINS)}")
    return names


def seal(engine: Engine, tables: Iterable[str] | None = None, *,
         key: bytes | None = None) -> dict[str, dict[str, int]]:
    """Seal each chain after its newest row; return per table what its newest seal holds (seq, last_id, rows).

    Callers keep the returned dict (a campaign run stores it in its summary as ``"sealed"``) so that
    ``verify`` can tell when those seals were removed later. A chain continues from the table's
    newest seal, so sealing costs the rows added since; ``tables`` limits the work to what a caller
    wrote (the web server: ``("consents",)`` after each consent). ``key`` defaults to the
    installation's secret (``TOUCHFLOW_SECRET_KEY``, else the key kept in the database).
    """
    key = key or signing_key(engine, _configured_secret())
    sealed = {}
    for name in _tables(tables):
        head = _seal_table(engine, name, key)
        if head is not None:
            sealed[name] = head.recorded()
    return sealed


def _seal_table(engine: Engine, name: str, key: bytes) -> Head | None:
    """Seal one table; when another process sealed it meanwhile, continue from that seal (never fork the seq)."""
    while True:
        with engine.connect() as conn:
            head = _head(conn, name)
        final = (head.last_id, head.rows, head.chain) if head else None
        for final in _chains(engine, name, final, upto=_settled(engine, name)):
            pass
        if final is None or (head is not None and final[0] == head.last_id):
            return head  # nothing (new) to seal
        with write_tx(engine) as conn:
            if conn.dialect.name == "postgresql":  # sealers take turns; readers are not held up
                conn.execute(text('LOCK TABLE "chain_seals" IN SHARE ROW EXCLUSIVE MODE'))
            newest = _head(conn, name)
            if newest != head:  # another process sealed meanwhile
                if newest is not None and newest.last_id >= final[0]:
                    return newest
                continue
            seq = head.seq + 1 if head else 1
            mac = _mac(key, name, seq, *final, head.mac if head else None)
            seal_id = conn.execute(insert(seals).values(
                table_name=name, version=VERSION, seq=seq, last_id=final[0], rows=final[1], chain=final[2],
                mac=mac, created_at=utcnow()).returning(seals.c.id)).scalar_one()
            return Head(seal_id, seq, *final, mac)


def heads(engine: Engine) -> dict[str, dict[str, Any]]:
    """Each table's newest version-2 seal, whole: what an anchor file keeps."""
    with engine.connect() as conn:
        found = {name: _head(conn, name) for name in CHAINS}
    return {name: {"seq": h.seq, "last_id": h.last_id, "rows": h.rows, "chain": h.chain, "mac": h.mac}
            for name, h in found.items() if h is not None}

"""``verify``: every check of the history in one read snapshot; it seals nothing.

The checks live beside it: ``keyed`` (the version-2 seals and the chains they cover), ``legacy``
(version-1 seals), ``state`` (touches against their events, the marker), ``anchor`` (the file kept
outside the database). Each writes what it finds into one ``Verification`` (``report``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from crm.keys import HISTORY, SIGNING
from crm.ledger.audit.anchor import _verify_anchor
from crm.ledger.audit.chains import CHAINS
from crm.ledger.audit.keyed import _key_notes, _Keyring, _recorded_seals, _verify_sealed
from crm.ledger.audit.legacy import _verify_legacy
from crm.ledger.audit.report import Verification
from crm.ledger.audit.seals import _configured_secret
from crm.ledger.audit.state import MARKER, _marker, _verify_state
from crm.models import ChainSeal, InstanceKey

seals = ChainSeal.__table__
keys = InstanceKey.__table__


def verify(engine: Engine, *, anchor: Path | None = None, secret: str | None = None) -> Verification:
    """Check the whole history; seal nothing (``compliance verify --seal`` does, once this finds no problem).

    Per table: the version-2 seals are numbered without gaps, keyed and linked, and match the
    chain recomputed from the first row; version-1 seals match the legacy chain; every seal a
    campaign run recorded still exists unchanged. Then every touch's mutable state against its
    events, body and address (``_verify_state``), and the anchor file when it exists. ``secret``
    defaults to ``TOUCHFLOW_SECRET_KEY``; seals made with the key kept in the database pass too,
    with a note. Streams every table: memory does not grow with the history.
    """
    report = Verification()
    configured = secret or _configured_secret()
    with _snapshot(engine) as conn:
        stored = dict(conn.execute(select(keys.c.name, keys.c.value)
                                   .where(keys.c.name.in_((SIGNING, HISTORY, MARKER)))).all())
        keyring = _Keyring(configured, stored.get(SIGNING))
        marker = _marker(conn, stored.get(MARKER), report)
        recorded = _recorded_seals(conn)
        for name in CHAINS:
            head = _verify_sealed(conn, name, keyring, recorded, report)
            _verify_legacy(conn, name, head, report)
            report.unsealed[name] = _unsealed(conn, name)
        _key_notes(keyring, report)
        _verify_state(conn, marker, stored.get(HISTORY), report)
        if anchor is not None and anchor.exists():
            _verify_anchor(conn, anchor, stored.get(MARKER), report)
    report.close()
    return report


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read transaction, one snapshot, for the whole of ``verify``.

    A campaign writing while ``verify`` reads must not look like tampering: a touch read before
    its move and its events after, or a seal read but not yet the rows it covers. SQLite's WAL
    gives a read transaction its snapshot; PostgreSQL does with REPEATABLE READ.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _unsealed(conn: Connection, name: str) -> int:
    """Rows after the table's newest seal: no seal vouches for them yet (``--seal`` seals them)."""
    table = CHAINS[name][0]
    newest = conn.execute(select(func.max(seals.c.last_id)).where(seals.c.table_name == name)).scalar()
    return conn.execute(select(func.count()).select_from(table).where(table.c.id > (newest or 0))).scalar() or 0

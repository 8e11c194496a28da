"""The anchor: the newest seals, kept in a file outside the database, and the database checked against it.

A database restored to an older copy, or stripped of its newest seals and rows, no longer holds
the anchored seals unchanged (``compliance verify --anchor FILE``).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from crm.ledger.audit.chains import VERSION
from crm.ledger.audit.report import Verification
from crm.ledger.audit.seals import _head, heads
from crm.ledger.audit.state import MARKER
from crm.models import ChainSeal, InstanceKey

seals = ChainSeal.__table__
keys = InstanceKey.__table__

ANCHOR_FORMAT = "touchflow anchor 1"


def write_anchor(engine: Engine, path: Path) -> dict[str, Any]:
    """Write the newest seals to ``path`` atomically (temporary file, fsync, rename); return what was written.

    Keep the file where those who can edit the database cannot (another machine, write-once
    storage); ``compliance verify --anchor FILE`` checks the database against it.
    """
    with engine.connect() as conn:
        marker = conn.execute(select(keys.c.value).where(keys.c.name == MARKER)).scalar()
    content = {"format": ANCHOR_FORMAT, "written_at": datetime.now(timezone.utc).isoformat(), MARKER: marker,
               "heads": heads(engine)}
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or Path("."))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(content, file, indent=2, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return content


def _verify_anchor(conn: Connection, path: Path, marker: str | None, report: Verification) -> None:
    """The database still holds the anchored seals unchanged (a restored older copy, or removed seals, fail)."""
    anchor = _read_anchor(path, report)
    if anchor is None:
        return
    if anchor.get(MARKER) != marker:
        report.problem("anchor", f"anchor {path}: the instance key {MARKER!r} is {marker!r}, the anchor holds "
                                 f"{anchor.get(MARKER)!r}: it was edited, or this is another installation's database")
    for name, held in sorted(anchor["heads"].items()):
        _check_anchored(conn, path, name, held, report)


def _read_anchor(path: Path, report: Verification) -> dict[str, Any] | None:
    """The anchor file's content, or None (and a problem) when it is not a readable anchor."""
    try:
        anchor = json.loads(path.read_text(encoding="utf-8"))
        anchored = anchor["heads"]
        if anchor.get("format") != ANCHOR_FORMAT or not isinstance(anchored, dict):
            raise ValueError("not an anchor file")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.problem("anchor", f"anchor {path}: cannot be read ({exc}); restore it from where you keep its "
                                 "copies, or move it away to start a new anchor from this database")
        return None
    return anchor


def _check_anchored(conn: Connection, path: Path, name: str, held: Any, report: Verification) -> None:
    """The database holds the seal of ``name`` the anchor holds (``held``), unchanged."""
    try:
        seq = int(held["seq"])
        expected = (int(held["last_id"]), int(held["rows"]), str(held["chain"]), str(held["mac"]))
    except (KeyError, TypeError, ValueError):
        report.problem("anchor", f"anchor {path}: the entry for {name!r} is malformed")
        return
    found = conn.execute(select(seals.c.last_id, seals.c.rows, seals.c.chain, seals.c.mac).where(
        seals.c.table_name == name, seals.c.version == VERSION, seals.c.seq == seq)).all()
    if not found:
        head = _head(conn, name)
        newest = f"#{head.seq}" if head else "none"
        report.problem("anchor", f"{name}: seal #{seq}, anchored in {path} (rows up to id {expected[0]}), is "
                       f"not in the database (its newest is {newest}): the database was restored to an older "
                       "copy, or its newest seals were deleted")
    elif any(tuple(row) != expected for row in found):
        report.problem("anchor", f"{name}: seal #{seq} differs from the one anchored in {path}: it was "
                                 "replaced, or this database is not the one the anchor was written for")

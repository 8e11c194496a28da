"""Checking the version-1 seals (made before keyed seals: no seq, no mac) with the chain they were made with.

``LEGACY_CHAINS`` is frozen: its touch_events chain covered ``detail``, which erasure strips, so
a version-1 seal over events an erasure touched since cannot be checked any more (a note says so;
the keyed seals cover those events without their details).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from crm.ledger.audit.chains import LEGACY_CHAINS, VERSION, _steps
from crm.ledger.audit.report import Verification
from crm.models import ChainSeal, Erasure, Touch, TouchEvent

seals = ChainSeal.__table__
touches = Touch.__table__
events = TouchEvent.__table__
erasures = Erasure.__table__


def _verify_legacy(conn: Connection, name: str, head: Any, report: Verification) -> None:
    """Check the version-1 seals (no seq, no mac) with the chain they were made with."""
    legacy = conn.execute(select(seals.c.id, seals.c.last_id, seals.c.rows, seals.c.chain)
                          .where(seals.c.table_name == name, seals.c.version == 1)
                          .order_by(seals.c.last_id, seals.c.id)).all()
    _odd_versions(conn, name, report)
    if not legacy:
        return
    if name not in LEGACY_CHAINS or (head is not None and legacy[-1].last_id > head.last_id):
        report.problem(f"{name} seals", f"{name}: a version-1 (unkeyed) seal, id {legacy[-1].id}, covers rows "
                       "past the newest keyed seal, or a table version 1 never sealed: it was forged")
        return
    _walk_legacy(conn, name, legacy, report)


def _odd_versions(conn: Connection, name: str, report: Verification) -> None:
    """Seals of a version touchflow never wrote (neither 1 nor ``VERSION``)."""
    odd = conn.execute(select(func.count()).select_from(seals).where(
        seals.c.table_name == name, seals.c.version.not_in((1, VERSION)))).scalar()
    if odd:
        report.problem(f"{name} seals", f"{name}: {odd} seals have a version touchflow never wrote: forged or edited")


def _walk_legacy(conn: Connection, name: str, legacy: list[Any], report: Verification) -> None:
    """Recompute the legacy chain up to the last version-1 seal and compare it at each one."""
    by_id = defaultdict(list)
    for s in legacy:
        by_id[s.last_id].append(s)
    blind_from, blind, reached = _stripped_from(conn, name), [], set()
    for row_id, count, chain in _steps(conn, name, None, legacy[-1].last_id, legacy=True):
        for s in by_id.get(row_id, ()):
            reached.add(row_id)
            if (count, chain) == (s.rows, s.chain):
                continue
            if blind_from is not None and row_id >= blind_from:
                blind.append(s)
            else:
                report.problem(f"{name} rows", f"{name}: rows with ids up to {row_id} changed since they were "
                               f"sealed (version-1 seal id {s.id}): a row was edited, deleted or inserted before it")
    if blind:
        report.notes.append(f"{name}: {len(blind)} version-1 seals (up to id {blind[-1].last_id}) cannot be checked: "
                            f"they covered the details of events from id {blind_from} on, which an erasure stripped "
                            "since; the keyed (version-2) seals cover those events without their details")
    for row_id in sorted(set(by_id) - reached):
        report.problem(f"{name} rows", f"{name}: row id {row_id}, sealed by a version-1 seal, is missing: it was "
                                       "deleted")


def _stripped_from(conn: Connection, name: str) -> int | None:
    """The first event an erasure may have stripped of the detail the version-1 chain covered (touch_events only)."""
    if name != "touch_events":
        return None
    erased_touches = select(touches.c.id).where(touches.c.customer_id.in_(select(erasures.c.customer_id)))
    return conn.execute(select(func.min(events.c.id)).where(events.c.touch_id.in_(erased_touches))).scalar()

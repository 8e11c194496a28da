"""Checking one table's keyed (version-2) seals: numbering, keys, links, the chain, what campaign runs recorded.

The seals are read in seq order. ``_Links`` checks each one's number and mac against the seal
before it (``_Keyring``: which key made it); ``_Walk`` recomputes the table's chain from its first
row and compares it at each seal; every seal a campaign run recorded in its summary must still be
there, unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from crm.ledger.audit.chains import VERSION, _definition, _texts
from crm.ledger.audit.report import Verification
from crm.ledger.audit.seals import _mac
from crm.models import CampaignRun, ChainSeal

seals = ChainSeal.__table__
runs = CampaignRun.__table__


class _Keyring:
    """The keys a seal may be made with, and which ones the seals were made with."""

    CONFIGURED, STORED = "TOUCHFLOW_SECRET_KEY", "the key kept in the database"

    def __init__(self, configured: str | None, stored: str | None) -> None:
        self.keys = [(label, value.encode()) for label, value in ((self.CONFIGURED, configured),
                                                                  (self.STORED, stored)) if value]
        self.used: Counter = Counter()

    def keyed_by(self, name: str, s: Any, previous: str | None) -> str | None:
        """Which key made seal ``s`` (given the previous seal's mac), or None: forged or edited."""
        for label, key in self.keys:
            expected = _mac(key, name, s.seq, s.last_id, s.rows, s.chain, previous)
            if hmac.compare_digest(expected.encode(), s.mac.encode()):
                self.used[label] += 1
                return label
        return None


def _key_notes(keyring: _Keyring, report: Verification) -> None:
    """Seals keyed with the database's own key prove less: say so, and what to do."""
    stored = keyring.used[_Keyring.STORED]
    if stored:
        report.notes.append(f"{stored} seals are keyed with the key kept in the database: anyone who can edit the "
                            "database can read that key and forge seals. Set TOUCHFLOW_SECRET_KEY (the same value "
                            "for every process: serve, campaign runs, workers) and keep it out of the database; "
                            "keep an anchor (--anchor FILE) where the database's users cannot write.")


def _verify_sealed(conn: Connection, name: str, keyring: _Keyring, recorded: dict, report: Verification) -> Any:
    """Check the version-2 seals of one table (numbering, keys, links, chains, runs' records); return the newest."""
    links = _Links(name, keyring, report)
    walk = _Walk(name, _texts(conn, name), _definition(name, conn.dialect.name).initial, report)
    newest = None
    try:
        for s in _seals_in_order(conn, name):
            if links.check(s):
                walk.check(s)
                _match_records(name, s, recorded.pop((name, s.seq), ()), report)
                newest = s
    finally:
        walk.rows.close()
    report.checked[name] = newest.rows if newest else 0
    _gone_records(name, newest, recorded, report)
    return newest


def _seals_in_order(conn: Connection, name: str) -> Iterator[Any]:
    """The version-2 seals of ``name`` in seq order, a page at a time (a seal per consent adds up)."""
    after = (-1, 0)
    seq = func.coalesce(seals.c.seq, 0)
    while True:
        rows = conn.execute(select(seals.c.id, seals.c.seq, seals.c.last_id, seals.c.rows, seals.c.chain, seals.c.mac)
                            .where(seals.c.table_name == name, seals.c.version == VERSION,
                                   or_(seq > after[0], and_(seq == after[0], seals.c.id > after[1])))
                            .order_by(seq, seals.c.id).limit(5000)).all()
        if not rows:
            return
        yield from rows
        after = (rows[-1].seq or 0, rows[-1].id)


class _Links:
    """The numbering and the keyed links of one table's seals, checked in seq order."""

    def __init__(self, name: str, keyring: _Keyring, report: Verification) -> None:
        self.name, self.keyring, self.report = name, keyring, report
        self.expected, self.previous, self.strong = 1, None, False

    def check(self, s: Any) -> bool:
        """Check seal ``s``; False when it cannot take part in the chain check (no seq or mac, a repeated seq)."""
        name, problem, where = self.name, self.report.problem, f"{self.name}: seal #{s.seq} (id {s.id})"
        if s.seq is None or s.mac is None:
            problem(f"{name} seals", f"{where} is version 2 but has no seq or mac: it was edited or forged")
            return False
        if s.seq < self.expected:
            problem(f"{name} seals", f"{where} repeats a seq number: a seal was copied or forged")
            return False
        if s.seq > self.expected:
            gap = f"seal #{self.expected} is" if s.seq == self.expected + 1 else \
                f"seals #{self.expected}–#{s.seq - 1} are"
            problem(f"{name} seals", f"{name}: {gap} missing: deleted (seal #{s.seq} follows #{self.expected - 1})")
            self.previous = None  # the link to a deleted seal cannot be checked
        if self.previous is not None or s.seq == 1:
            self._check_key(s, where)
        self.previous, self.expected = s, s.seq + 1
        return True

    def _check_key(self, s: Any, where: str) -> None:
        """Seal ``s`` is keyed, linked to the seal before it, and not weaker than the seals before it."""
        name, problem = self.name, self.report.problem
        keyed = self.keyring.keyed_by(name, s, self.previous.mac if self.previous else None)
        if keyed is None:
            problem(f"{name} seals", f"{where}: its mac does not match: the seal (or the one before it) was "
                    "forged or edited; if TOUCHFLOW_SECRET_KEY was changed since, set the key it was made with")
        elif keyed == _Keyring.STORED and self.strong:
            problem(f"{name} seals", f"{where} is keyed with the key kept in the database although earlier "
                    "seals are keyed with TOUCHFLOW_SECRET_KEY: someone who read the database forged it, or a "
                    "process sealed without TOUCHFLOW_SECRET_KEY (set it for every process: serve, campaign "
                    "runs, workers)")
        self.strong = self.strong or keyed == _Keyring.CONFIGURED


class _Walk:
    """One table's chain recomputed from its first row, compared at each seal and resumed from it.

    Resuming from each seal's own values localises every change to the rows of one seal.
    """

    def __init__(self, name: str, rows: Iterator[tuple[int, str]], initial: str, report: Verification) -> None:
        self.name, self.rows, self.report = name, rows, report
        self.pending = next(rows, None)
        self.count, self.chain, self.reached = 0, initial, 0

    def check(self, s: Any) -> None:
        name, problem = self.name, self.report.problem
        if s.last_id < self.reached:
            problem(f"{name} seals", f"{name}: seal #{s.seq} (id {s.id}) seals up to id {s.last_id}, before the "
                                     f"seal ahead of it (id {self.reached}): seals were reordered or forged")
            return
        sha256, pending = hashlib.sha256, self.pending
        while pending is not None and pending[0] <= s.last_id:
            self.count += 1
            self.chain = sha256((self.chain + pending[1]).encode()).hexdigest()
            self.reached, pending = pending[0], next(self.rows, None)
        self.pending = pending
        if self.reached != s.last_id:
            problem(f"{name} rows", f"{name}: row id {s.last_id}, the last row of seal #{s.seq}, is missing: it "
                                    "was deleted")
        elif (self.count, self.chain) != (s.rows, s.chain):
            problem(f"{name} rows", f"{name}: rows with ids up to {s.last_id} changed since seal #{s.seq} (after "
                                    f"seal #{s.seq - 1}'s last row): a row was edited, deleted or inserted")
        self.count, self.chain, self.reached = s.rows, s.chain, s.last_id


def _recorded_seals(conn: Connection) -> dict[tuple[str, int], list[tuple[str, int, int]]]:
    """The seals campaign runs recorded in their summaries, by (table, seq)."""
    recorded: dict[tuple[str, int], list] = defaultdict(list)
    after = ""
    while True:
        page = conn.execute(select(runs.c.id, runs.c.summary).where(runs.c.id > after)
                            .order_by(runs.c.id).limit(1000)).all()
        if not page:
            return recorded
        for run_id, summary in page:
            sealed = summary.get("sealed") if isinstance(summary, dict) else None
            for table, entry in (sealed.items() if isinstance(sealed, dict) else ()):
                if isinstance(entry, dict) and isinstance(entry.get("seq"), int):  # older runs kept a count
                    recorded[(table, entry["seq"])].append((run_id, entry.get("last_id"), entry.get("rows")))
        after = page[-1].id


def _match_records(name: str, s: Any, records: Iterable[tuple[str, int, int]], report: Verification) -> None:
    """Seal ``s`` covers the rows the campaign runs that recorded it saw it cover."""
    for run_id, last_id, count in records:
        if (last_id, count) != (s.last_id, s.rows):
            report.problem(f"{name} seals", f"{name}: seal #{s.seq} covers rows up to id {s.last_id} ({s.rows} rows)"
                           f" but campaign run {run_id} recorded it as up to id {last_id} ({count} rows): the seal "
                           "was replaced")


def _gone_records(name: str, newest: Any, recorded: dict, report: Verification) -> None:
    """The seals of ``name`` campaign runs recorded and no seal matched: they were deleted."""
    for (table, seq), records in sorted(recorded.items()):
        if table == name:
            for run_id, last_id, count in records:
                gone = "the newest seals were deleted" if newest is None or seq > newest.seq else "it was deleted"
                report.problem(f"{name} seals", f"{name}: campaign run {run_id} sealed #{seq} (rows up to id "
                               f"{last_id}) and that seal is gone: {gone}")

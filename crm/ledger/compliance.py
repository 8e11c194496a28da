"""The compliance review: check the whole history against the contact rules and count violations.

Found per touch (sent, delivered or unknown — anything that may have reached a person):
marketing without a consent valid at send time, any touch after an opt-out (the latest ledger
entry for its channel and purpose was a revocation), touches inside quiet hours in the customer's
time zone; per person: more marketing contacts in a window than the cap, two marketing contacts
closer than the minimum gap, the same offer again within its cooldown (touches of one run are one
contact occasion), more than one open call task.
On a healthy base every count is zero. An answer to the person's own message (``in_reply_to``
set: the bot's) is not held to quiet hours: it comes when they write.

Consent and opt-outs are the person's: the entries that count for a touch are those of every
record of the person (as the base knows them today, after merges) and of every record holding
the address it went to. Caps and cooldowns count per person the same way.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from crm.db import in_chunks, one_of
from crm.models import CHANNEL_CONTACT_KIND, CallTask, Consent, ContactPoint, Customer, Touch
from crm.ledger.policy import Policy

touches = Touch.__table__
consents = Consent.__table__
customers = Customer.__table__
tasks = CallTask.__table__
contacts = ContactPoint.__table__
CONTACTED = ("sending", "sent", "delivered", "unknown")
KINDS = ("marketing_without_consent", "after_opt_out", "inside_quiet_hours", "over_frequency_cap",
         "within_min_gap", "offer_within_cooldown", "several_open_call_tasks")


@dataclass
class Report:
    """Counts per kind of violation, with examples (touch or person ids) for each."""

    since: datetime | None
    until: datetime | None
    checked_touches: int = 0
    violations: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def to_dict(self, examples: int = 20) -> dict[str, Any]:
        """JSON-ready: counts and the first examples of each kind."""
        return {"since": self.since, "until": self.until, "checked_touches": self.checked_touches,
                "counts": {k: len(v) for k, v in self.violations.items()},
                "examples": {k: v[:examples] for k, v in self.violations.items() if v},
                "total": sum(len(v) for v in self.violations.values())}


def _latest(entries: list[tuple[datetime, int, bool]], at: datetime) -> bool | None:
    position = bisect.bisect_right(entries, (at, float("inf"), True))
    return entries[position - 1][2] if position else None


def check(engine: Engine, *, since: datetime | None = None, until: datetime | None = None,
          policy: Policy | None = None) -> Report:
    """Check every contact in the period; return the report."""
    policy = policy or Policy()
    report = Report(since, until)
    query = (select(touches.c.id, touches.c.customer_id, touches.c.run_id, touches.c.offer, touches.c.purpose,
                    touches.c.channel, touches.c.address, touches.c.sent_at, touches.c.created_at,
                    touches.c.in_reply_to, customers.c.timezone,
                    func.coalesce(customers.c.person_id, customers.c.id).label("person"))
             .join(customers, customers.c.id == touches.c.customer_id)
             .where(touches.c.status.in_(CONTACTED), touches.c.channel != "document")
             .order_by(touches.c.id))
    if since:
        query = query.where(touches.c.created_at >= since)
    if until:
        query = query.where(touches.c.created_at <= until)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        ledger = _ledger(conn, rows)
        open_calls = conn.execute(select(tasks.c.person_id, func.count()).where(tasks.c.status == "open")
                                  .group_by(tasks.c.person_id).having(func.count() > 1)).all()
    report.checked_touches = len(rows)
    occasions: dict[int, dict[str, datetime]] = defaultdict(dict)       # person → run → first contact
    claims: dict[int, dict[str, datetime]] = defaultdict(dict)          # person → run → when it claimed them
    offers: dict[tuple[int, str], dict[str, datetime]] = defaultdict(dict)
    for row in rows:
        at = row.sent_at or row.created_at
        state = _latest(ledger.entries(row), at)
        example = {"touch": row.id, "customer_id": row.customer_id, "channel": row.channel, "at": at}
        if state is False:
            report.violations["after_opt_out"].append(example)
        elif row.purpose == "marketing" and state is None:
            report.violations["marketing_without_consent"].append(example)
        if policy.quiet_hours is not None and row.channel != "call" and row.in_reply_to is None:
            local = at.astimezone(ZoneInfo(row.timezone or policy.default_timezone)).time()
            if policy.quiet_hours.contains(local):
                report.violations["inside_quiet_hours"].append({**example, "local_time": local.isoformat("minutes")})
        run = row.run_id or f"touch:{row.id}"
        if row.purpose == "marketing":
            occasions[row.person].setdefault(run, at)
            claims[row.person].setdefault(run, row.created_at)
        if row.offer:
            offers[(row.person, row.offer)].setdefault(run, at)
    _per_person(report, policy, occasions, offers)
    _gaps(report, policy, claims)
    report.violations["several_open_call_tasks"] = [{"person": person, "open": count} for person, count in open_calls]
    return report


class _Ledger:
    """Consent entries by record, with who belongs to which person and which records hold which address."""

    def __init__(self) -> None:
        self.by_record: dict[tuple[int, str, str], list[tuple[datetime, int, bool]]] = defaultdict(list)
        self.members: dict[int, set[int]] = defaultdict(set)
        self.holders: dict[tuple[str, str], set[int]] = defaultdict(set)

    def entries(self, row: Any) -> list[tuple[datetime, int, bool]]:
        """The entries that speak for a touch: its channel's and ``all``'s, of the person and the address holders."""
        records = self.members.get(row.person, set()) | {row.customer_id}
        if row.address:
            records |= self.holders.get((CHANNEL_CONTACT_KIND[row.channel].value, row.address), set())
        found = [e for record in records for channel in (row.channel, "all")
                 for e in self.by_record.get((record, channel, row.purpose), ())]
        found.sort()
        return found


def _ledger(conn: Any, rows: list[Any]) -> _Ledger:
    ledger = _Ledger()
    persons = sorted({r.person for r in rows})
    for chunk in in_chunks(persons):
        for cid, person in conn.execute(select(customers.c.id, customers.c.person_id)
                                        .where(one_of(conn, customers.c.person_id, chunk))):
            ledger.members[person].add(cid)
    wanted = {(CHANNEL_CONTACT_KIND[r.channel].value, r.address) for r in rows if r.address}
    for chunk in in_chunks(sorted({value for _, value in wanted})):
        for kind, value, cid in conn.execute(select(contacts.c.kind, contacts.c.value, contacts.c.customer_id)
                                             .where(one_of(conn, contacts.c.value, chunk))):
            if (kind, value) in wanted:
                ledger.holders[(kind, value)].add(cid)
    records = {r.customer_id for r in rows} | {c for m in ledger.members.values() for c in m} \
        | {c for h in ledger.holders.values() for c in h}
    for chunk in in_chunks(sorted(records)):
        for c in conn.execute(select(consents.c.id, consents.c.customer_id, consents.c.channel, consents.c.purpose,
                                     consents.c.granted, consents.c.at).where(one_of(conn, consents.c.customer_id,
                                                                                     chunk))):
            ledger.by_record[(c.customer_id, c.channel, c.purpose)].append((c.at, c.id, c.granted))
    return ledger


def _per_person(report: Report, policy: Policy, occasions: dict, offers: dict) -> None:
    """Caps and cooldowns over each person's contact occasions (one run is one occasion)."""
    window = timedelta(days=policy.cap_days)
    for person, runs in occasions.items():
        times = sorted(runs.values())
        for i in range(len(times)):
            inside = bisect.bisect_right(times, times[i] + window) - i
            if inside > policy.cap_max:
                report.violations["over_frequency_cap"].append({"person": person, "contacts": inside,
                                                                "from": times[i]})
                break
    cooldown = timedelta(days=policy.offer_cooldown_days)
    for (person, offer), runs in offers.items():
        times = sorted(runs.values())
        for first, second in zip(times, times[1:]):
            if second - first < cooldown:
                report.violations["offer_within_cooldown"].append({"person": person, "offer": offer,
                                                                   "first": first, "again": second})
                break


def _gaps(report: Report, policy: Policy, claims: dict) -> None:
    """Two marketing occasions closer than the minimum gap, measured as it is kept: between the moments the runs
    claimed the person (a run's messages leave over its duration, so daily runs at 10:00 are 24 hours apart)."""
    gap = timedelta(hours=policy.min_gap_hours)
    for person, runs in claims.items():
        times = sorted(runs.values())
        close = next(((a, b) for a, b in zip(times, times[1:]) if b - a < gap), None)
        if close:
            report.violations["within_min_gap"].append({"person": person, "first": close[0], "again": close[1]})

"""The compliance review: check the whole history against the contact rules and count violations.

Found per touch (sent, delivered or unknown — anything that may have reached a person):
marketing without a consent valid at send time, any touch after an opt-out (the latest ledger
entry for its channel and purpose was a revocation), touches inside quiet hours in the customer's
time zone; per person: more marketing contacts in a window than the cap, the same offer again
within its cooldown (touches of one run are one contact occasion), more than one open call task.
On a healthy base every count is zero.
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

from crm.db import in_chunks
from crm.models import CallTask, Consent, Customer, Touch
from crm.policy import Policy

touches = Touch.__table__
consents = Consent.__table__
customers = Customer.__table__
tasks = CallTask.__table__
CONTACTED = ("sending", "sent", "delivered", "unknown")
KINDS = ("marketing_without_consent", "after_opt_out", "inside_quiet_hours", "over_frequency_cap",
         "offer_within_cooldown", "several_open_call_tasks")


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
    query = (select(touches.c.id, touches.c.customer_id, touches.c.person_key, touches.c.run_id, touches.c.offer,
                    touches.c.purpose, touches.c.channel, touches.c.sent_at, touches.c.created_at,
                    customers.c.timezone)
             .join(customers, customers.c.id == touches.c.customer_id)
             .where(touches.c.status.in_(CONTACTED), touches.c.channel != "document")
             .order_by(touches.c.id))
    if since:
        query = query.where(touches.c.created_at >= since)
    if until:
        query = query.where(touches.c.created_at <= until)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        ledger: dict[tuple[int, str, str], list[tuple[datetime, int, bool]]] = defaultdict(list)
        ids = sorted({r.customer_id for r in rows})
        for chunk in in_chunks(ids):
            for c in conn.execute(select(consents.c.id, consents.c.customer_id, consents.c.channel,
                                         consents.c.purpose, consents.c.granted, consents.c.at)
                                  .where(consents.c.customer_id.in_(chunk))):
                ledger[(c.customer_id, c.channel, c.purpose)].append((c.at, c.id, c.granted))
        open_calls = conn.execute(select(tasks.c.person_id, func.count()).where(tasks.c.status == "open")
                                  .group_by(tasks.c.person_id).having(func.count() > 1)).all()
    for entries in ledger.values():
        entries.sort()
    report.checked_touches = len(rows)
    occasions: dict[str, dict[str, datetime]] = defaultdict(dict)       # person → run → first contact
    offers: dict[tuple[str, str], dict[str, datetime]] = defaultdict(dict)
    for row in rows:
        at = row.sent_at or row.created_at
        entries = [e for ch in (row.channel, "all") for e in ledger.get((row.customer_id, ch, row.purpose), [])]
        entries.sort()
        state = _latest(entries, at)
        example = {"touch": row.id, "customer_id": row.customer_id, "channel": row.channel, "at": at}
        if state is False:
            report.violations["after_opt_out"].append(example)
        elif row.purpose == "marketing" and state is None:
            report.violations["marketing_without_consent"].append(example)
        if policy.quiet_hours is not None and row.channel != "call":
            local = at.astimezone(ZoneInfo(row.timezone or policy.default_timezone)).time()
            if policy.quiet_hours.contains(local):
                report.violations["inside_quiet_hours"].append({**example, "local_time": local.isoformat("minutes")})
        run = row.run_id or f"touch:{row.id}"
        if row.purpose == "marketing":
            occasions[row.person_key].setdefault(run, at)
        if row.offer:
            offers[(row.person_key, row.offer)].setdefault(run, at)
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
    report.violations["several_open_call_tasks"] = [{"person": person, "open": count} for person, count in open_calls]
    return report

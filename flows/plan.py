"""The communication plan: every campaign, reminder and journey of a project, when each fires, who outranks whom.

    load_plan()              the specs of the campaigns directory (the plan), and the files that are wrong
    fires(spec, start, end)  the spec's scheduled times in [start, end)
    rivals_due(...)          the campaigns that outrank a run: higher priority, due in its gap window
    batch_rivals(...)        whom each of them would contact among a batch's candidates
    overview(...)            what ``touchflow plan show`` lists

A run yields a person to a rival of higher priority that would contact them within the minimum
gap (``crm.ledger.arbitration``); a run and the plan's simulator (``flows.simulate``) find rivals
with the same functions, so the simulator's first day is what the real runs do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy.engine import Engine

from crm.ledger.arbitration import Rival
from crm.ledger.policy import Candidate, Policy, decide
from flows.spec import CampaignSpec, SpecError, campaign_files, load_spec

GRACE = timedelta(minutes=15)  # a rival fired this long ago still counts as due (it may be starting)


@dataclass(frozen=True)
class Entry:
    """A spec of the plan, and its file."""

    path: Path
    spec: CampaignSpec


@dataclass
class Plan:
    """The specs of a campaigns directory; ``problems`` are the files that could not be read (file, error)."""

    entries: list[Entry] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def spec(self, name: str) -> CampaignSpec | None:
        return next((e.spec for e in self.entries if e.spec.name == name), None)


@dataclass(frozen=True)
class DueRival:
    """A campaign of higher priority due in a run's window: at ``due``, or running now (``due`` None)."""

    spec: CampaignSpec
    due: datetime | None


def load_plan(directory: Path | None = None) -> Plan:
    """The plan: every spec of ``directory`` (default: the configured campaigns directory)."""
    from touchflow.settings import campaigns_dir

    plan = Plan()
    for path in campaign_files(directory or campaigns_dir()):
        try:
            plan.entries.append(Entry(path, load_spec(path)))
        except SpecError as exc:
            plan.problems.append((str(path), str(exc)))
    return plan


def fires(spec: CampaignSpec, start: datetime, end: datetime) -> list[datetime]:
    """The spec's scheduled times in [start, end), in its own zone (none without a schedule)."""
    if spec.schedule is None:
        return []
    zone = ZoneInfo(spec.schedule.timezone)
    found = []
    for at in CronSim(spec.schedule.cron, (start - timedelta(seconds=1)).astimezone(zone).replace(microsecond=0)):
        if at >= end:
            break
        if at >= start:
            found.append(at)
    return found


def rivals_due(spec: CampaignSpec, plan: Plan, now: datetime, gap_hours: float,
               live: set[str] = frozenset()) -> list[DueRival]:
    """The marketing campaigns of higher priority running now or firing in (now − GRACE, now + gap], highest first."""
    if spec.purpose != "marketing" or gap_hours <= 0:
        return []
    due: list[DueRival] = []
    for entry in plan.entries:
        other = entry.spec
        if other.name == spec.name or other.purpose != "marketing" or other.kind == "journey" \
                or other.priority <= spec.priority:
            continue
        if other.name in live:
            due.append(DueRival(other, None))
            continue
        times = fires(other, now - GRACE, now + timedelta(hours=gap_hours) + timedelta(seconds=1))
        if times:
            due.append(DueRival(other, times[0]))
    return sorted(due, key=lambda d: (-d.spec.priority, d.spec.name))


def rival(due: DueRival, members: Iterable[Candidate], now: datetime, base: Policy) -> Rival:
    """``due`` as an arbiter sees it: the persons among ``members`` (its segment's) it would contact."""
    spec = due.spec
    policy = spec.contact_policy(base)
    wants = frozenset(c.person_id for c in members
                      if decide(c, campaign=spec.name, channels=list(spec.channels), purpose=spec.purpose, now=now,
                                policy=policy, holdout_percent=spec.holdout_percent,
                                use_preferred=spec.use_preferred_channel).action != "skip")
    blocks = (("offer", spec.offer),) + ((("group", spec.offer_group),) if spec.offer_group else ())
    return Rival(spec.name, spec.priority, blocks, wants, due.due)


def batch_rivals(engine: Engine, dues: list[DueRival], candidates: list[Candidate], *, as_of: date,
                 now: datetime, base: Policy) -> tuple[Rival, ...]:
    """Each due rival with whom it would contact among a batch's ``candidates`` (its segment on ``as_of``)."""
    from segments import load_library, members, resolve

    if not dues or not candidates:
        return ()
    library = load_library()
    ids = [c.customer_id for c in candidates]
    found = []
    for due in dues:
        rule = resolve(due.spec.rule if due.spec.rule is not None else due.spec.segment, library)
        inside = members(engine, rule, ids, as_of=as_of, library=library)
        found.append(rival(due, [c for c in candidates if c.customer_id in inside], now, base))
    return tuple(found)


def overview(engine: Engine, plan: Plan, *, start: datetime, weeks: int) -> list[dict[str, Any]]:
    """Every spec of the plan with its schedule, audience, channels, offer group, priority and expected volume.

    ``selected`` is the segment counted on each day it fires (birthdays and run-outs change by the
    day); ``plan simulate`` applies the policy and arbitration on top.
    """
    from segments import count, load_library, resolve

    library = load_library()
    end = start + timedelta(weeks=weeks)
    rows = []
    for entry in sorted(plan.entries, key=lambda e: (-e.spec.priority, e.spec.name)):
        spec = entry.spec
        times = fires(spec, start, end)
        rule = resolve(spec.rule if spec.rule is not None else spec.segment, library)
        days = sorted({t.date() for t in times}) or [start.date()]
        selected = sum(count(engine, rule, as_of=day, library=library) for day in days) if times else 0
        rows.append({"name": spec.name, "kind": spec.kind, "purpose": spec.purpose, "priority": spec.priority,
                     "cron": spec.schedule.cron if spec.schedule else None,
                     "timezone": spec.schedule.timezone if spec.schedule else None,
                     "segment": spec.segment or "inline rule", "channels": list(spec.channels), "offer": spec.offer,
                     "offer_group": spec.offer_group, "runs": len(times),
                     "next_run": times[0].isoformat() if times else None, "selected": selected,
                     "audience_now": count(engine, rule, as_of=start.date(), library=library),
                     "file": entry.path.name})
    return rows

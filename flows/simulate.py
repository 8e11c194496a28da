"""The plan's simulator: the next N days of every scheduled campaign and reminder on the current base, sending nothing.

It reads the base once (candidates, the persons' live locks, reps and their open tasks) and then
replays the plan's fires in time order (higher priority first at the same minute) on a copy of
that state, with the real decision code: ``crm.ledger.policy.decide`` (consent, channels, quiet
hours, holdout), ``flows.plan`` (rivals due in the gap window) and ``crm.ledger.claims.plan``
(cooldowns, offer groups, caps, the minimum gap, open call tasks). So its first day is what the
real runs of that day do. On top it applies what the runs leave to people and providers:

* reps work their call tasks up to their daily capacity; the rest waits (backlog, overload);
* providers send at their rate limits: the hours each channel's day needs.

Journeys are walked step by step from where each person is today (``flows.simulated_journeys``),
as if nobody bought, replied or opted out in the period. Not simulated: messages that fail to
render, fallbacks after permanent failures, and changes to the base (new purchases, opt-outs)
during the period.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm.db import in_chunks
from crm.ledger.arbitration import THIS_BATCH, Holder, Rival, Terms
from crm.ledger.claims import held_locks, load_candidates, plan as claim_plan
from crm.ledger.policy import Candidate, decide
from crm.models import CallTask, ContactLock, Customer, Manager
from flows.batch import dedupe_persons
from flows.plan import Plan, fires, rival, rivals_due
from flows.run import default_policy
from flows.simulated_journeys import journey_fire, load_walkers
from flows.spec import CampaignSpec
from segments import customer_ids, load_library, resolve
from touchflow.settings import Settings

CONTACTED = ("touch", "defer")


@dataclass
class Rep:
    """A rep as the simulator sees them: capacity, and the calls waiting."""

    id: int
    code: str
    active: bool
    capacity: int
    backlog: list[int] = field(default_factory=list)   # persons whose call waits
    days: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class State:
    """The copy of the base the simulator changes: candidates, locks with expiry, holders, reps."""

    candidates: dict[int, Candidate]
    held: dict[int, dict[tuple[str, str], int]]
    expiry: dict[tuple[int, str, str], datetime | None]
    holders: dict[int, Holder]
    owner: dict[int, int | None]
    reps: dict[int, Rep]
    ids: itertools.count = field(default_factory=lambda: itertools.count(-2, -1))
    members: dict[tuple[str, date], list[int]] = field(default_factory=dict)
    rivals: dict[tuple[str, date], Rival] = field(default_factory=dict)  # whom each would contact, by day
    journeys: dict[str, Any] = field(default_factory=dict)  # journey → its walkers (flows.simulated_journeys)


def simulate(engine: Engine, plan: Plan, *, start: datetime, days: int, settings: Settings,
             keep_decisions: bool = False, progress=None) -> dict[str, Any]:
    """Project ``days`` days from ``start``: volume per day and channel, rep load, held back and why, conflicts."""
    fired = schedule(plan, start, days)
    state = _load_state(engine, plan, fired, settings)
    report = _Report(start, days, keep_decisions)
    for day in range(days):
        begin = start + timedelta(days=day)
        for at, spec in (item for item in fired if begin <= item[0] < begin + timedelta(days=1)):
            if spec.kind == "journey":
                journey_fire(engine, plan, state, spec, at, settings, report)
            else:
                _fire(engine, plan, state, spec, at, settings, report)
        _work_calls(state, begin.date(), report)
        if progress:
            progress(day + 1, days)
    return report.result(state, settings)


def schedule(plan: Plan, start: datetime, days: int) -> list[tuple[datetime, CampaignSpec]]:
    """Every fire of the plan's campaigns, reminders and journeys in the period, in each one's zone (its day is the
    run's ``as_of``): by time, higher priority first at the same moment."""
    end = start + timedelta(days=days)
    items = [(at, entry.spec) for entry in plan.entries for at in fires(entry.spec, start, end)]
    return sorted(items, key=lambda item: (item[0], -item[1].priority, item[1].name))


def _load_state(engine: Engine, plan: Plan, schedule: list, settings: Settings) -> State:
    """The base as the period starts: every customer some fire may select, locks, owners, reps."""
    state = State({}, {}, {}, {}, {}, {})
    library = load_library()
    wanted: set[int] = set()
    for at, spec in schedule:
        wanted.update(members_on(engine, state, spec, at.date(), library))
    for entry in plan.entries:  # rivals are looked up on the day of each fire
        if entry.spec.purpose == "marketing" and entry.spec.kind != "journey" and entry.spec.schedule:
            for day in {at.date() for at, _ in schedule}:
                wanted.update(members_on(engine, state, entry.spec, day, library))
    now = schedule[0][0] if schedule else datetime.now(timezone.utc)
    walkers = load_walkers(engine, [e.spec for e in plan.entries if e.spec.kind == "journey"])
    for journey in walkers.values():
        wanted.update(w.customer_id for w in journey.people.values())
    state.journeys = walkers
    with engine.connect() as conn:
        for chunk in in_chunks(sorted(wanted), 5000):
            for candidate in load_candidates(conn, chunk):
                state.candidates[candidate.customer_id] = candidate
        held, holders = held_locks(conn, sorted({c.person_id for c in state.candidates.values()}), now)
        state.held, state.holders = held, holders
        _load_expiry(conn, state)
        _load_reps(conn, state, now.date())
    return state


def members_on(engine: Engine, state: State, spec: CampaignSpec, day: date, library) -> list[int]:
    key = (spec.name, day)
    if key not in state.members:
        rule = resolve(spec.rule if spec.rule is not None else spec.segment, library)
        state.members[key] = [cid for page in customer_ids(engine, rule, as_of=day, library=library)
                              for cid in page]
    return state.members[key]


def _load_expiry(conn, state: State) -> None:
    locks = ContactLock.__table__
    for row in conn.execute(select(locks.c.person_id, locks.c.scope, locks.c.key, locks.c.expires_at)):
        if (row.scope, row.key) in state.held.get(row.person_id, {}):
            state.expiry[(row.person_id, row.scope, row.key)] = row.expires_at


def _load_reps(conn, state: State, day: date) -> None:
    customers, managers, tasks = Customer.__table__, Manager.__table__, CallTask.__table__
    state.owner = dict(conn.execute(select(customers.c.id, customers.c.manager_id)).all())
    for row in conn.execute(select(managers.c.id, managers.c.code, managers.c.active, managers.c.daily_call_capacity)):
        state.reps[row.id] = Rep(row.id, row.code, row.active, row.daily_call_capacity)
    waiting = select(tasks.c.manager_id, tasks.c.person_id).where(tasks.c.status == "open", tasks.c.due_on <= day)
    for manager_id, person in conn.execute(waiting):
        if manager_id in state.reps:
            state.reps[manager_id].backlog.append(person)


def _fire(engine: Engine, plan: Plan, state: State, spec: CampaignSpec, at: datetime, settings: Settings,
          report: "_Report") -> None:
    """One run of ``spec`` at ``at``, on the state: decide, arbitrate, claim; count what it did."""
    library, day, base = load_library(), at.date(), default_policy(settings)
    policy = spec.contact_policy(base)
    candidates = [state.candidates[cid] for cid in members_on(engine, state, spec, day, library)
                  if cid in state.candidates]
    decisions = [decide(c, campaign=spec.name, channels=list(spec.channels), purpose=spec.purpose, now=at,
                        policy=policy, holdout_percent=spec.holdout_percent, use_preferred=spec.use_preferred_channel)
                 for c in candidates]
    dedupe_persons(decisions)
    go = [d for d in decisions if d.action in CONTACTED]
    run_id = f"simulated:{spec.name}:{at:%Y%m%d%H%M}"
    terms = Terms(campaign=spec.name, offer=spec.offer, purpose=spec.purpose, policy=policy, run_id=run_id, now=at,
                  priority=spec.priority, group=spec.offer_group, journey=False,
                  rivals=rivals_at(engine, plan, state, spec, at, policy.min_gap_hours, base, library))
    planned, refused = claim_in_state(state, spec, at, go, terms)
    report.fire(spec, at, decisions, planned, refused)


def claim_in_state(state: State, spec: CampaignSpec, at: datetime, go: list, terms: Terms) -> tuple[list, list]:
    """``claims.plan`` on the simulated locks: the touches it would claim take their locks (and calls their reps)."""
    for decision in go:
        _expire(state, decision.person_id, at)
    planned, refused = claim_plan(state.held, state.holders, go, [{"customer_id": d.customer_id} for d in go], terms)
    for decision, _, wanted in planned:
        touch_id = next(state.ids)
        state.holders[touch_id] = Holder(spec.name, at, terms.run_id, spec.priority, spec.offer)
        for scope, key, expires in wanted:
            state.held[decision.person_id][(scope, key)] = touch_id
            state.expiry[(decision.person_id, scope, key)] = expires
        if decision.channel == "call":
            _assign_call(state, decision.customer_id, decision.person_id)
    return planned, refused


def rivals_at(engine, plan, state, spec, at, gap, base, library) -> tuple[Rival, ...]:
    """The rivals due at ``at``, with whom each would contact (their segment on that day), as a run finds them."""
    found = []
    for due in rivals_due(spec, plan, at, gap):
        key = (due.spec.name, at.date())
        if key not in state.rivals:
            members = [state.candidates[cid] for cid in members_on(engine, state, due.spec, at.date(), library)
                       if cid in state.candidates]
            state.rivals[key] = rival(due, members, at, base)
        found.append(replace(state.rivals[key], due=due.due))
    return tuple(found)


def _expire(state: State, person: int, now: datetime) -> None:
    """Drop the person's locks that have expired by ``now`` (the database leaves them out the same way)."""
    mine = state.held.setdefault(person, {})
    for scope, key in [k for k in mine if mine[k] != THIS_BATCH]:
        expires = state.expiry.get((person, scope, key))
        if expires is not None and expires <= now:
            del mine[(scope, key)]


def _assign_call(state: State, customer_id: int, person: int) -> None:
    """The call goes to the customer's rep when active and under capacity, else the least loaded active rep."""
    active = [rep for rep in state.reps.values() if rep.active]
    if not active:
        return
    owner = state.reps.get(state.owner.get(customer_id))
    if owner is not None and owner.active and len(owner.backlog) < owner.capacity:
        owner.backlog.append(person)
        return
    under = [rep for rep in active if len(rep.backlog) < rep.capacity] or active
    min(under, key=lambda rep: (len(rep.backlog) / max(rep.capacity, 1), len(rep.backlog), rep.id)).backlog.append(
        person)


def _work_calls(state: State, day: date, report: "_Report") -> None:
    """Each rep works up to their capacity of the day's calls; a call worked frees the person's open-call lock."""
    for rep in state.reps.values():
        load = len(rep.backlog)
        worked, rep.backlog = rep.backlog[:rep.capacity], rep.backlog[rep.capacity:]
        for person in worked:
            state.held.get(person, {}).pop(("call", "open"), None)
        if load or rep.days:
            rep.days.append({"date": day.isoformat(), "load": load, "worked": len(worked),
                             "waiting": len(rep.backlog), "over_capacity": load > rep.capacity})


class _Report:
    """What the simulation counts, per day."""

    def __init__(self, start: datetime, days: int, keep: bool) -> None:
        self.start, self.days, self.keep = start, days, keep
        self.channels: dict[str, Counter] = defaultdict(Counter)     # day → channel → contacts
        self.held: dict[str, Counter] = defaultdict(Counter)         # day → reason → people
        self.campaigns: dict[str, Counter] = defaultdict(Counter)    # campaign → outcome
        self.conflicts: Counter = Counter()                          # (loser, winner, reason)
        self.decisions: list[dict[str, Any]] = []

    def fire(self, spec: CampaignSpec, at: datetime, decisions: list, planned: list, refused: list) -> None:
        day = at.date().isoformat()
        self.campaigns[spec.name]["runs"] += 1
        for decision, _, _ in planned:
            when = decision.due_at.date().isoformat() if decision.action == "defer" else day
            self.channels[when][decision.channel] += 1
            self.campaigns[spec.name]["contacted"] += 1
            if spec.duplicate_in and spec.duplicate_in != decision.channel:
                self.channels[when][spec.duplicate_in] += 1
            self._keep(spec, at, decision.customer_id, "deferred" if decision.action == "defer" else "contacted",
                       decision.channel)
        for decision in decisions:
            if decision.action == "skip":
                self._held(spec, day, decision.reason, decision.customer_id, at)
        for row in refused:
            self._held(spec, day, row["reason"], row["customer_id"], at)
            if row.get("winner") and row["winner"] != spec.name:
                self.conflicts[(spec.name, row["winner"], row["reason"])] += 1

    def held_back(self, spec: CampaignSpec, at: datetime, reason: str, customer_id: int) -> None:
        """A person held back (or leaving a journey) outside a run's decisions."""
        self._held(spec, at.date().isoformat(), reason, customer_id, at)

    def _held(self, spec: CampaignSpec, day: str, reason: str, customer_id: int, at: datetime) -> None:
        self.held[day][reason] += 1
        self.campaigns[spec.name][f"held:{reason}"] += 1
        self._keep(spec, at, customer_id, reason, None)

    def _keep(self, spec, at, customer_id, outcome, channel) -> None:
        if self.keep:
            self.decisions.append({"campaign": spec.name, "at": at.isoformat(), "customer_id": customer_id,
                                   "outcome": outcome, "channel": channel})

    def result(self, state: State, settings: Settings) -> dict[str, Any]:
        dates = [(self.start + timedelta(days=d)).date().isoformat() for d in range(self.days)]
        daily = [{"date": d, "channels": dict(self.channels.get(d, {})), "held_back": dict(self.held.get(d, {}))}
                 for d in dates]
        totals: Counter = Counter()
        for counts in self.channels.values():
            totals.update(counts)
        held: Counter = Counter()
        for counts in self.held.values():
            held.update(counts)
        result = {"start": self.start.isoformat(), "days": self.days, "daily": daily,
                  "totals": {"channels": dict(totals), "held_back": dict(held)},
                  "campaigns": {name: _campaign_row(counts) for name, counts in sorted(self.campaigns.items())},
                  "conflicts": [{"campaign": loser, "winner": winner, "reason": reason, "people": n}
                                for (loser, winner, reason), n in self.conflicts.most_common()],
                  "reps": _rep_rows(state), "providers": _provider_rows(self.channels, settings),
                  "not_simulated": ["purchases, replies and opt-outs during the period (journeys take their "
                                    "branches as if none happened)", "messages that fail to render",
                                    "fallbacks after failures"]}
        if self.keep:
            result["decisions"] = self.decisions
        return result


def _campaign_row(counts: Counter) -> dict[str, Any]:
    held = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("held:")}
    return {"runs": counts["runs"], "contacted": counts["contacted"], "held_back": held}


def _rep_rows(state: State) -> list[dict[str, Any]]:
    rows = []
    for rep in sorted(state.reps.values(), key=lambda r: r.code):
        if not rep.days:
            continue
        over = [d for d in rep.days if d["over_capacity"]]
        rows.append({"rep": rep.code, "capacity": rep.capacity, "active": rep.active,
                     "peak_load": max(d["load"] for d in rep.days), "days_over_capacity": len(over),
                     "waiting_at_end": rep.days[-1]["waiting"], "overloaded": bool(over), "days": rep.days})
    return rows


def _provider_rows(channels: dict[str, Counter], settings: Settings) -> list[dict[str, Any]]:
    """Per channel: the busiest day's volume, and the hours it needs at the provider's rate limit."""
    rates = {"email": settings.rate_email, "sms": settings.rate_sms, "voice": settings.rate_voice,
             "telegram": settings.rate_telegram}
    rows = []
    for channel, rate in rates.items():
        peak = max((counts.get(channel, 0) for counts in channels.values()), default=0)
        if not peak:
            continue
        hours = peak / rate / 3600 if rate else 0.0
        rows.append({"channel": channel, "rate_per_second": rate or None, "peak_day": peak,
                     "hours_at_peak": round(hours, 2), "over_a_working_day": hours > 12})
    return rows

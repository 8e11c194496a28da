"""Journeys in the plan's simulator: each person walked through the steps from where they are today.

The walk follows ``flows.journeys`` with the simulator's copy of the state: a send step decides
and claims with the real code (``decide``, ``claims.plan`` with the journey's own offer locks
passable), quiet hours hold a step, a "no" of the policy is tried again the next day (three times),
waits end as ``flows.journeys.wait_until`` says. What cannot be known ahead is taken as not
happening: nobody buys, replies or opts out, so a branch takes only ``delivered`` (the last step
reached them).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm.ledger.arbitration import Terms
from crm.ledger.policy import decide, in_holdout
from crm.models import JourneyState
from flows.journey_spec import EXIT, following, position
from flows.journeys import MAX_ATTEMPTS, MOVE_ON, wait_until
from flows.run import default_policy
from flows.spec import CampaignSpec
from segments import load_library

CONTACTED = ("touch", "defer")


@dataclass
class Walker:
    """A person's place in a simulated journey."""

    customer_id: int
    person_id: int
    index: int | None          # the step they are at; None: done or left
    due: datetime
    attempts: int = 0
    waiting: bool = False      # a wait step begun
    reached: bool = False      # the last send step reached them (``delivered``)


@dataclass
class Journey:
    """A journey's walkers (and the persons that entered it before, in any state), and the due ones in time order."""

    people: dict[int, Walker] = field(default_factory=dict)
    entered: set[int] = field(default_factory=set)
    heap: list[tuple[datetime, int]] = field(default_factory=list)
    enrolled_on: date | None = None

    def schedule(self, walker: Walker) -> None:
        heapq.heappush(self.heap, (walker.due, walker.person_id))

    def due(self, at: datetime) -> list[Walker]:
        found = {}
        while self.heap and self.heap[0][0] <= at:
            due, person = heapq.heappop(self.heap)
            walker = self.people.get(person)
            if walker is not None and walker.index is not None and walker.due == due:
                found[person] = walker
        return list(found.values())


def load_walkers(engine: Engine, specs: list[CampaignSpec]) -> dict[str, Journey]:
    """Where everyone is in each journey today."""
    states = JourneyState.__table__
    journeys = {spec.name: Journey() for spec in specs}
    steps = {spec.name: {step.id: i for i, step in enumerate(spec.steps)} for spec in specs}
    if not journeys:
        return journeys
    with engine.connect() as conn:
        for row in conn.execute(select(states).where(states.c.journey.in_(list(journeys)))):
            journey = journeys[row.journey]
            journey.entered.add(row.person_id)
            if row.status == "active" and row.step in steps[row.journey]:
                walker = Walker(row.customer_id, row.person_id, steps[row.journey][row.step],
                                row.due_at or datetime.now(timezone.utc), row.attempts, waiting=bool(row.attempts))
                journey.people[row.person_id] = walker
                journey.schedule(walker)
    return journeys


def journey_fire(engine: Engine, plan, state, spec: CampaignSpec, at: datetime, settings, report) -> None:
    """One tick of a journey at ``at``: enrol the day's new people (first tick of a day), move everyone due."""
    journey = state.journeys.setdefault(spec.name, Journey())
    if journey.enrolled_on != at.date():
        journey.enrolled_on = at.date()
        _enrol(engine, state, journey, spec, at, report)
    for _ in range(len(spec.steps) + 1):
        due = journey.due(at)
        if not due:
            return
        groups: dict[int, list[Walker]] = {}
        for walker in due:
            groups.setdefault(walker.index, []).append(walker)
        for index, walkers in sorted(groups.items()):
            _step(engine, plan, state, journey, spec, index, walkers, at, settings, report)


def _enrol(engine, state, journey: Journey, spec: CampaignSpec, at: datetime, report) -> None:
    from flows.simulate import members_on

    for cid in members_on(engine, state, spec, at.date(), load_library()):
        candidate = state.candidates.get(cid)
        if candidate is None or candidate.person_id in journey.entered:
            continue
        journey.entered.add(candidate.person_id)
        if in_holdout(spec.name, candidate.person_id, spec.holdout_percent):
            report.held_back(spec, at, "holdout", cid)
            continue
        walker = Walker(cid, candidate.person_id, 0, at)
        journey.people[candidate.person_id] = walker
        journey.schedule(walker)


def _step(engine, plan, state, journey: Journey, spec: CampaignSpec, index: int, walkers: list[Walker],
          at: datetime, settings, report) -> None:
    step = spec.steps[index]
    if step.kind == "wait":
        for walker in walkers:
            if walker.waiting:
                _go(journey, walker, following(spec.steps, index), at)
                continue
            zone = state.candidates[walker.customer_id].timezone or settings.default_timezone
            walker.waiting, walker.due = True, wait_until(step, at, zone)
            journey.schedule(walker) if walker.due > at else _go(journey, walker, following(spec.steps, index), at)
    elif step.kind == "branch":
        for walker in walkers:
            target = step.branch.get("delivered") if walker.reached else None
            if target == EXIT:
                walker.index = None
                report.held_back(spec, at, "left:delivered", walker.customer_id)
            else:
                _go(journey, walker, position(spec.steps, target) if target else following(spec.steps, index), at)
    else:
        _send(engine, plan, state, journey, spec, index, walkers, at, settings, report)


def _go(journey: Journey, walker: Walker, index: int | None, at: datetime) -> None:
    walker.index, walker.due, walker.attempts, walker.waiting = index, at, 0, False
    if index is not None:
        journey.schedule(walker)


def _send(engine, plan, state, journey: Journey, spec: CampaignSpec, index: int, walkers: list[Walker],
          at: datetime, settings, report) -> None:
    """The step through the real decision code, on the simulated locks; each walker moves on by its outcome."""
    from flows.simulate import claim_in_state, rivals_at

    step = spec.steps[index]
    policy = spec.contact_policy(default_policy(settings))
    ready = _after_quiet_hours(journey, walkers, step, policy, state, at, settings)
    by_customer = {w.customer_id: w for w in ready}
    decisions = [decide(state.candidates[w.customer_id], campaign=spec.name, channels=list(step.send.channels),
                        purpose=spec.purpose, now=at, policy=_no_quiet_hours(policy),
                        use_preferred=spec.use_preferred_channel)
                 for w in ready]
    go = [d for d in decisions if d.action in CONTACTED]
    terms = Terms(campaign=spec.name, offer=spec.offer, purpose=spec.purpose, policy=policy,
                  run_id=f"simulated:{spec.name}:{step.id}:{at:%Y%m%d%H%M}", now=at, priority=spec.priority,
                  group=spec.offer_group, journey=True,
                  rivals=rivals_at(engine, plan, state, spec, at, policy.min_gap_hours,
                                   default_policy(settings), load_library()))
    planned, refused = claim_in_state(state, spec, at, go, terms)
    report.fire(spec, at, decisions, planned, refused)
    reasons = {d.customer_id: d.reason for d in decisions if d.action == "skip"}
    reasons.update({row["customer_id"]: row["reason"] for row in refused})
    nxt = following(spec.steps, index)
    for customer_id, walker in by_customer.items():
        reason = reasons.get(customer_id)
        if reason is None:
            walker.reached = True
            _go(journey, walker, nxt, at)
        elif reason == "opted_out":
            walker.index = None
        elif reason in MOVE_ON:
            walker.reached = False
            _go(journey, walker, nxt, at)
        elif walker.attempts + 1 >= MAX_ATTEMPTS:
            walker.index = None
        else:
            walker.attempts, walker.due = walker.attempts + 1, at + timedelta(days=1)
            journey.schedule(walker)


def _after_quiet_hours(journey: Journey, walkers: list[Walker], step, policy, state, at, settings) -> list[Walker]:
    """Walkers inside quiet hours wait for them to end; the others are ready."""
    if policy.quiet_hours is None or set(step.send.channels) == {"call"}:
        return walkers
    ready = []
    for walker in walkers:
        zone = state.candidates[walker.customer_id].timezone or settings.default_timezone
        allowed = policy.quiet_hours.next_allowed(at.astimezone(timezone.utc), zone)
        if allowed > at:
            walker.due = allowed
            journey.schedule(walker)
        else:
            ready.append(walker)
    return ready


def _no_quiet_hours(policy) -> Any:
    from dataclasses import replace

    return replace(policy, quiet_hours=None)

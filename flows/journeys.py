"""Journeys without Prefect: one tick enrols the segment's new people, then moves everyone whose step is due.

A tick leases the due states (``crm.ledger.journeys``) and runs each step for a group of people:

* ``send`` — through the campaign machinery (``flows.batch``: the contact policy, arbitration,
  the ledger, the crash rules), as a run of its own under the journey's name, each touch keyed
  ``journey:<name>:<step>:<person>:<attempt>`` so the database refuses a second one; a person whose
  step touch already reached them or may have (a runner died after sending, before moving them on)
  just moves on; one released unsent is tried again under the next attempt's key. Quiet
  hours in the customer's zone hold the step until they end. A "no" of the policy is in the history;
  ``opted_out`` ends the journey, no consent or address on the step's channels moves on to the next
  step, any other (a cap, the gap, a higher-priority campaign, …) tries again the next day, three
  times at most (then ``held_back:<reason>``);
* ``wait`` — until N days / hours later, then the next time of day ``at`` in the customer's zone,
  or until a date;
* ``branch`` — the first condition that holds since the person entered: exit (``left`` with the
  condition as the reason) or go to a step; else the next step.

Each person's step runs at most once per tick, and at most once in all (the claim key).
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from crm.db import in_chunks, one_of
from crm.ledger import journeys as states
from crm.ledger import runs as ledger_runs
from crm.ledger.policy import in_holdout
from crm.models import Customer, Purchase, Touch, TouchEvent
from flows.journey_spec import EXIT, Step, following, position
from flows.run import default_policy, local_now
from flows.spec import CampaignSpec
from segments import customer_ids, load_library, resolve
from touchflow.settings import Settings, get_settings

customers, purchases, touches, events = Customer.__table__, Purchase.__table__, Touch.__table__, TouchEvent.__table__
CONTACTED = ("deferred", "claimed", "sending", "sent", "delivered", "unknown", "failed")
MOVE_ON = ("no_consent", "unreachable")  # the step's channels cannot reach them: the next step may
MAX_ATTEMPTS = 3
BATCH = 1000
LEASE_RUNS = 5  # a state is leased for this many run leases (TOUCHFLOW_RUN_LEASE_SECONDS): then a dead runner's pass


def run_journey(engine: Engine, spec: CampaignSpec, *, now: datetime | None = None,
                settings: Settings | None = None, progress=None) -> dict[str, Any]:
    """One tick of a journey: enrol, then move every due person until nobody is due; return what it did."""
    now = now or local_now(spec)
    settings = settings or get_settings()
    tick = Tick(engine, spec, now, settings)
    for reaped in ledger_runs.reap(engine):  # a dead runner's step runs: handed over → unknown, claimed → released
        tick.counts["unknown_from_earlier_runs"] += reaped["unknown"]
        tick.counts["released_from_earlier_runs"] += reaped["released"]
    tick.enrol()
    visits: Counter = Counter()
    lease = LEASE_RUNS * settings.run_lease_seconds
    while rows := states.lease(engine, spec.name, now=now, owner=tick.owner, limit=BATCH, seconds=lease):
        looping = [r for r in rows if visits[r["id"]] > len(spec.steps)]
        if looping:  # cannot happen with a checked spec; never spin
            states.move(engine, tick.owner, [{"id": r["id"], "due_at": now + timedelta(hours=1)} for r in looping],
                        now=now)
        rows = [r for r in rows if visits[r["id"]] <= len(spec.steps)]
        visits.update(r["id"] for r in rows)
        for step_id, group in _by_step(rows).items():
            tick.run_step(position(spec.steps, step_id), group)
        if progress:
            progress(sum(tick.counts.values()))
    return {"journey": spec.name, "at": now.isoformat(), "counts": dict(tick.counts),
            "status": states.status(engine, spec.name, now=now)}


def _by_step(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["step"], []).append(row)
    return groups


class Tick:
    """One run of a journey: its owner id for leases, and what it did."""

    def __init__(self, engine: Engine, spec: CampaignSpec, now: datetime, settings: Settings) -> None:
        self.engine, self.spec, self.now, self.settings = engine, spec, now, settings
        self.owner = f"journey-{uuid.uuid4().hex[:16]}"
        self.counts: Counter = Counter()
        self.policy = spec.contact_policy(default_policy(settings))

    def enrol(self) -> None:
        """Enter the segment's people who are not in the journey yet (its holdout as the control group)."""
        from crm.ledger.touches import record_decisions
        from crm.db import write_tx

        library = load_library()
        rule = resolve(self.spec.rule if self.spec.rule is not None else self.spec.segment, library)
        for page in customer_ids(self.engine, rule, as_of=self.now.date(), library=library, page_size=5000):
            people = _people(self.engine, page)
            holdout = {p for _, p in people if in_holdout(self.spec.name, p, self.spec.holdout_percent)}
            entered = states.enrol(self.engine, self.spec.name, people, first_step=self.spec.steps[0].id,
                                   now=self.now, holdout=holdout)
            if entered:
                self.counts["entered"] += len(entered)
            control = [row for row in entered if row["status"] == "holdout"]
            if control:
                with write_tx(self.engine) as conn:
                    record_decisions(conn, [self._decision(row, "holdout", f"{self.spec.holdout_percent:g}% "
                                                                             "control group of the journey")
                                            for row in control])

    def _decision(self, row: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
        from crm.ledger.policy import Decision
        from crm.ledger.touches import touch_row

        decision = Decision(customer_id=row["customer_id"], person_id=row["person_id"], action="skip", reason=reason,
                            detail=detail)
        return touch_row(decision, run_id=None, campaign=self.spec.name, offer=self.spec.offer,
                         purpose=self.spec.purpose, status="skipped", now=self.now)

    def run_step(self, index: int, rows: list[dict[str, Any]]) -> None:
        step = self.spec.steps[index]
        changes = getattr(self, f"_{step.kind}")(index, step, rows)
        states.move(self.engine, self.owner, changes, now=self.now)

    def _go(self, row: dict[str, Any], index: int | None, **extra: Any) -> dict[str, Any]:
        """The change that moves ``row`` to step ``index`` (due now), or ends the journey (None: done)."""
        if index is None:
            self.counts["done"] += 1
            return {"id": row["id"], "status": "done", "due_at": None, "attempts": 0, **extra}
        return {"id": row["id"], "step": self.spec.steps[index].id, "due_at": self.now, "step_at": self.now,
                "attempts": 0, **extra}

    def _leave(self, row: dict[str, Any], reason: str) -> dict[str, Any]:
        self.counts[f"left:{reason}"] += 1
        return {"id": row["id"], "status": "left", "left_reason": reason, "due_at": None}

    # -- wait ----------------------------------------------------------------------------------------------

    def _wait(self, index: int, step: Step, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Arriving: wait until the step's time (``attempts`` 1 marks a wait begun); once over: the next step."""
        zones = _zones(self.engine, [r["customer_id"] for r in rows], self.settings.default_timezone)
        changes = []
        for row in rows:
            if row["attempts"]:
                changes.append(self._go(row, following(self.spec.steps, index)))
                continue
            until = wait_until(step, self.now, zones.get(row["customer_id"], self.settings.default_timezone))
            if until <= self.now:
                changes.append(self._go(row, following(self.spec.steps, index)))
            else:
                self.counts[f"waiting:{step.id}"] += 1
                changes.append({"id": row["id"], "due_at": until, "attempts": 1})
        return changes

    # -- branch --------------------------------------------------------------------------------------------

    def _branch(self, index: int, step: Step, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        facts = Facts(self.engine, self.spec, rows)
        changes = []
        for row in rows:
            target = next((to for condition, to in step.branch.items() if facts.holds(condition, row)), None)
            if target == EXIT:
                changes.append(self._leave(row, next(c for c, to in step.branch.items()
                                                     if to == EXIT and facts.holds(c, row))))
            elif target is not None:
                self.counts[f"branch:{step.id}->{target}"] += 1
                changes.append(self._go(row, position(self.spec.steps, target)))
            else:
                changes.append(self._go(row, following(self.spec.steps, index)))
        return changes

    # -- send ----------------------------------------------------------------------------------------------

    def _send(self, index: int, step: Step, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send the step to those it is daytime for; move each on by the touch or the decision it left."""
        changes, ready = self._quiet_hours(step, rows)
        earlier = step_touches(self.engine, self.spec.name, step.id, [row["person_id"] for row in ready])
        fresh = [row for row in ready if earlier.get(row["person_id"], (None, 0))[0] is None]
        tries = {row["person_id"]: earlier.get(row["person_id"], (None, 0))[1] for row in fresh}
        outcomes = self._run(step, fresh, tries) if fresh else {}
        for row in ready:
            found = earlier.get(row["person_id"], (None, 0))[0] or outcomes.get(row["customer_id"])
            changes.append(self._after_send(index, step, row, found))
        return changes

    def _quiet_hours(self, step: Step, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict]]:
        """People inside quiet hours wait for them to end (no touch yet); the others are ready."""
        quiet = self.policy.quiet_hours
        if quiet is None or set(step.send.channels) == {"call"}:
            return [], rows
        zones = _zones(self.engine, [r["customer_id"] for r in rows], self.settings.default_timezone)
        waiting, ready = [], []
        for row in rows:
            allowed = quiet.next_allowed(self.now.astimezone(timezone.utc),
                                         zones.get(row["customer_id"], self.settings.default_timezone))
            if allowed > self.now:
                self.counts["waiting:quiet_hours"] += 1
                waiting.append({"id": row["id"], "due_at": allowed})
            else:
                ready.append(row)
        return waiting, ready

    def _run(self, step: Step, rows: list[dict[str, Any]], tries: dict[int, int]) -> dict[int, dict[str, Any]]:
        """The step as a campaign run of its own, for ``rows``; each customer's touch or decision, by customer."""
        from flows.batch import process_batch
        from flows.run import finish, start

        spec = self.spec.step_spec(step).model_copy(update={"policy": self.spec.policy.model_copy(
            update={"quiet_hours": "off"})})  # quiet hours were kept above, per person
        run = start(self.engine, spec, now=self.now, settings=self.settings)
        run.claim_key_of = lambda d: claim_key(self.spec.name, step.id, d.person_id, tries.get(d.person_id, 0))
        run.journey = True
        try:
            for chunk in in_chunks([row["customer_id"] for row in rows], BATCH):
                process_batch(run, chunk)
        except BaseException:
            finish(run, "failed")
            raise
        finish(run)
        with self.engine.connect() as conn:
            found = conn.execute(select(touches.c.id, touches.c.customer_id, touches.c.status, touches.c.reason)
                                 .where(touches.c.run_id == run.run_id).order_by(touches.c.id)).all()
        outcome: dict[int, dict[str, Any]] = {}
        for row in found:  # a contact wins over a decision for the same customer (a fallback, a copy)
            if row.customer_id not in outcome or row.status in CONTACTED:
                outcome[row.customer_id] = dict(row._mapping)
        return outcome

    def _after_send(self, index: int, step: Step, row: dict[str, Any], found: dict[str, Any] | None
                    ) -> dict[str, Any]:
        nxt = following(self.spec.steps, index)
        if found is not None and found["status"] in CONTACTED:
            self.counts[f"sent:{step.id}"] += 1
            return self._go(row, nxt, last_touch_id=found["id"])
        reason = found["reason"] if found else "not_decided"
        if reason == "opted_out":
            return self._leave(row, "opted_out")
        if reason in MOVE_ON:
            self.counts[f"skipped:{step.id}:{reason}"] += 1
            return self._go(row, nxt)
        if row["attempts"] + 1 >= MAX_ATTEMPTS:
            return self._leave(row, f"held_back:{reason}")
        self.counts[f"retry:{step.id}:{reason}"] += 1
        return {"id": row["id"], "attempts": row["attempts"] + 1, "due_at": self.now + timedelta(days=1)}


def claim_key(journey: str, step: str, person: int, attempt: int = 0) -> str:
    """The claim key of a person's ``attempt``-th touch for a journey's step (one per attempt: the database holds it)."""
    return f"journey:{journey}:{step}:{person}:{attempt}"


def step_touches(engine: Engine, journey: str, step: str, persons: list[int]) -> dict[int, tuple[dict | None, int]]:
    """Per person: the step's touch that reached them or may have (a runner died after sending, before moving them
    on), and how many touches the step has had (released ones included: the next attempt's number)."""
    prefix = f"journey:{journey}:{step}:"
    found: dict[int, tuple[dict | None, int]] = {}
    with engine.connect() as conn:
        for chunk in in_chunks([str(p) for p in sorted(set(persons))]):
            query = (select(touches.c.id, touches.c.person_key, touches.c.claim_key, touches.c.status,
                            touches.c.reason)
                     .where(touches.c.campaign == journey, one_of(conn, touches.c.person_key, chunk),
                            touches.c.claim_key.like(prefix + "%")).order_by(touches.c.id))
            for row in conn.execute(query):
                person = int(row.person_key)
                contacted, count = found.get(person, (None, 0))
                if row.status in CONTACTED:
                    contacted = dict(row._mapping)
                found[person] = (contacted, count + 1)
    return found


def wait_until(step: Step, now: datetime, zone: str) -> datetime:
    """When a wait step ends for a customer in ``zone``: ``days``/``hours`` on, then the next ``at``; or ``until``."""
    wait = step.wait
    local = now.astimezone(ZoneInfo(zone))
    if wait.until is not None:
        at = wait.at or time(0, 0)
        return datetime.combine(wait.until, at, tzinfo=ZoneInfo(zone))
    end = local + timedelta(days=wait.days, hours=wait.hours)
    if wait.at is not None:
        candidate = datetime.combine(end.date(), wait.at, tzinfo=ZoneInfo(zone))
        end = candidate if candidate >= end else candidate + timedelta(days=1)
    return end


def _people(engine: Engine, ids: list[int]) -> list[tuple[int, int]]:
    """(customer, person) for ``ids``."""
    with engine.connect() as conn:
        return [(row.id, row.person_id or row.id) for row in conn.execute(
            select(customers.c.id, customers.c.person_id).where(one_of(conn, customers.c.id, ids)))]


def _zones(engine: Engine, ids: list[int], default: str) -> dict[int, str]:
    with engine.connect() as conn:
        return {row.id: row.timezone or default for row in conn.execute(
            select(customers.c.id, customers.c.timezone).where(one_of(conn, customers.c.id, ids)))}


class Facts:
    """What happened to a group of people since each entered the journey: the branch conditions."""

    def __init__(self, engine: Engine, spec: CampaignSpec, rows: list[dict[str, Any]]) -> None:
        self.engine, self.spec, self.rows = engine, spec, rows
        self._cache: dict[str, set[int]] = {}

    def holds(self, condition: str, row: dict[str, Any]) -> bool:
        if condition not in self._cache:
            self._cache[condition] = getattr(self, f"_{condition}")()
        return row["id"] in self._cache[condition]

    def _members(self) -> dict[int, list[int]]:
        """Each person's records (state id → customer ids)."""
        persons = {row["person_id"] for row in self.rows}
        records: dict[int, list[int]] = {}
        with self.engine.connect() as conn:
            for chunk in in_chunks(sorted(persons)):
                for cid, person in conn.execute(select(customers.c.id, customers.c.person_id)
                                                .where(one_of(conn, customers.c.person_id, chunk))):
                    records.setdefault(person, []).append(cid)
        return {row["id"]: records.get(row["person_id"], [row["customer_id"]]) for row in self.rows}

    def _purchased(self) -> set[int]:
        members = self._members()
        latest: dict[int, date] = {}
        with self.engine.connect() as conn:
            ids = sorted({cid for cids in members.values() for cid in cids})
            for chunk in in_chunks(ids):
                for cid, day in conn.execute(select(purchases.c.customer_id, func.max(purchases.c.purchased_on))
                                             .where(one_of(conn, purchases.c.customer_id, chunk))
                                             .group_by(purchases.c.customer_id)):
                    latest[cid] = day
        return {row["id"] for row in self.rows
                if any(latest.get(cid) and latest[cid] >= row["entered_at"].date() for cid in members[row["id"]])}

    def _opted_out(self) -> set[int]:
        """The person's latest marketing word, for every channel or for all of the journey's channels, is no."""
        from crm.ledger.claims import load_candidates
        from crm.ledger.policy import consent_for

        channels = sorted({c for step in self.spec.steps if step.send for c in step.send.channels})
        with self.engine.connect() as conn:
            candidates = {c.customer_id: c for c in load_candidates(conn, [r["customer_id"] for r in self.rows])}
        out = set()
        for row in self.rows:
            candidate = candidates.get(row["customer_id"])
            if candidate is None:
                continue
            words = [consent_for(candidate, channel, "marketing") for channel in channels]
            if words and all(word is not None and not word.granted for word in words):
                out.add(row["id"])
        return out

    def _delivered(self) -> set[int]:
        ids = [row["last_touch_id"] for row in self.rows if row["last_touch_id"]]
        with self.engine.connect() as conn:
            ok = {tid for chunk in in_chunks(ids) for tid in conn.execute(
                select(touches.c.id).where(one_of(conn, touches.c.id, chunk),
                                           touches.c.status.in_(("sent", "delivered")))).scalars()}
        return {row["id"] for row in self.rows if row["last_touch_id"] in ok}

    def _event(self, status: str) -> set[int]:
        """People with a ``status`` event (opened, clicked, replied) on one of the journey's touches since entering."""
        persons = {str(row["person_id"]): row for row in self.rows}
        seen: dict[str, datetime] = {}
        with self.engine.connect() as conn:
            for chunk in in_chunks(sorted(persons)):
                query = (select(touches.c.person_key, func.max(events.c.at))
                         .join(events, events.c.touch_id == touches.c.id)
                         .where(touches.c.campaign == self.spec.name, events.c.status == status,
                                one_of(conn, touches.c.person_key, chunk)).group_by(touches.c.person_key))
                seen.update({key: at for key, at in conn.execute(query)})
        return {row["id"] for key, row in persons.items() if key in seen and seen[key] >= row["entered_at"]}

    def _opened(self) -> set[int]:
        return self._event("opened")

    def _clicked(self) -> set[int]:
        return self._event("clicked")

    def _replied(self) -> set[int]:
        return self._event("replied")

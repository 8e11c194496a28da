"""Arbitration: whether a person's locks let a touch through, which locks it takes, and why not.

Pure over plain data, so that a run (``claims.claim``), a dry run (``claims.preview``) and the
plan's simulator (``flows.simulate``) decide alike. A person's locks (``contact_locks``) are
``(scope, key) → holding touch``:

    offer  <offer>      the same offer never again within the cooldown
    group  <group>      nor another offer of its offer group (they count as one offer)
    cap    slot<i>      at most ``cap_max`` marketing touches per ``cap_days``
    gap    marketing    no second marketing touch within ``min_gap_hours``, whatever the campaign or channel
    call   open         one open call task

When another campaign holds the gap, the refusal is ``outranked`` if that campaign has the higher
priority, else ``min_gap`` (it only came first). A run also yields to *rivals*: campaigns of higher
priority due within its gap window (scheduled in the plan, or running now) that would contact the
person: it records ``outranked`` with the winner, and leaves the person to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from crm.ledger.policy import Decision, Policy

THIS_BATCH = -1  # the holder of the locks a batch plans for itself, before they are written


@dataclass(frozen=True)
class Holder:
    """The touch holding a lock: its campaign, when, which run, at which priority."""

    campaign: str | None
    at: datetime | None
    run_id: str | None
    priority: int | None = None
    offer: str | None = None


@dataclass(frozen=True)
class Rival:
    """A campaign of higher priority due in a run's window, and the persons it would contact."""

    campaign: str
    priority: int
    blocks: tuple[tuple[str, str], ...]  # its own cooldown locks: a person holding one is not for it now
    wants: frozenset[int]                # persons it would contact (its segment, consent, channels)
    due: datetime | None = None          # when it fires; None: it is running now

    def label(self) -> str:
        when = "running now" if self.due is None else f"due {self.due:%Y-%m-%d %H:%M %Z}".rstrip()
        return f"{self.campaign} (priority {self.priority}, {when})"


@dataclass(frozen=True)
class Terms:
    """What a run claims under: its campaign, offer and group, purpose, policy, priority and rivals."""

    campaign: str
    offer: str
    purpose: str
    policy: Policy
    run_id: str
    now: datetime
    priority: int = 50
    group: str | None = None
    rivals: tuple[Rival, ...] = ()
    journey: bool = False  # a journey's later steps pass the journey's own offer locks
    budget: Decimal | None = None  # the campaign's budget (RUB, across its runs): claims stop when it is spent

    @property
    def marketing(self) -> bool:
        return self.purpose == "marketing"

    def cooldown_keys(self) -> list[tuple[str, str]]:
        """The locks that say "this offer was given": the offer's, and its group's."""
        return [("offer", self.offer)] + ([("group", self.group)] if self.group else [])


class Refusal(NamedTuple):
    """Why a claim is refused, and the campaign that holds the person (or will), when another one does."""

    reason: str
    detail: str | None = None
    winner: str | None = None


def blocked(decision: Decision, mine: dict, holders: dict, this_run: set[int], terms: Terms) -> Refusal | None:
    """Why ``decision`` may not claim, given the person's locks ``mine``; None when it may."""
    for scope, key in terms.cooldown_keys():
        holder = mine.get((scope, key), 0)
        if holder == 0 or _own_journey(holder, holders, terms):
            continue
        if holder in this_run:
            return Refusal("same_person")
        found = holders.get(holder)
        return Refusal("cooling_down" if scope == "offer" else "offer_group", _given(found, scope, key),
                       found.campaign if found else None)
    if decision.channel == "call" and ("call", "open") in mine:
        return Refusal("open_call_task")
    if not terms.marketing:
        return None
    if sum(1 for scope, _ in mine if scope == "cap") >= terms.policy.cap_max:
        return Refusal("capped")
    if terms.policy.min_gap_hours > 0 and ("gap", "marketing") in mine:
        return _gap_refusal(holders.get(mine[("gap", "marketing")]), terms)
    for rival in terms.rivals:
        if decision.person_id in rival.wants and not any(key in mine for key in rival.blocks):
            return Refusal("outranked", f"outranked by {rival.label()}, which would contact this person",
                           rival.campaign)
    return None


def wanted_locks(decision: Decision, mine: dict, holders: dict,
                 terms: Terms) -> list[tuple[str, str, datetime | None]]:
    """The locks a claim takes: (scope, key, expires at)."""
    policy, now = terms.policy, terms.now
    cooldown = now + timedelta(days=policy.offer_cooldown_days)
    wanted = [(scope, key, cooldown) for scope, key in terms.cooldown_keys()
              if not ((scope, key) in mine and _own_journey(mine[(scope, key)], holders, terms))]
    if terms.marketing:
        slot = next(f"slot{i}" for i in range(policy.cap_max) if ("cap", f"slot{i}") not in mine)
        wanted.append(("cap", slot, now + timedelta(days=policy.cap_days)))
        if policy.min_gap_hours > 0:
            wanted.append(("gap", "marketing", now + timedelta(hours=policy.min_gap_hours)))
    if decision.channel == "call":
        wanted.append(("call", "open", None))
    return wanted


def _own_journey(holder: int, holders: dict, terms: Terms) -> bool:
    """A journey's later step meeting the journey's own offer lock (taken by an earlier step)."""
    if not terms.journey or holder == THIS_BATCH:
        return False
    found = holders.get(holder)
    return found is not None and found.campaign == terms.campaign


def _given(holder: Holder | None, scope: str, key: str) -> str | None:
    if holder is None or holder.campaign is None or holder.at is None:
        return None
    what = f"offer {key}" if scope == "offer" else f"offer group {key} (offer {holder.offer})"
    return f"{what} already given to this person by {holder.campaign} on {holder.at:%Y-%m-%d}"


def _gap_refusal(holder: Holder | None, terms: Terms) -> Refusal:
    gap = f"{terms.policy.min_gap_hours:g} h"
    if holder is None or holder.campaign is None:
        return Refusal("min_gap", f"another marketing touch within {gap}")
    when = f"{holder.at:%Y-%m-%d %H:%M} UTC" if holder.at else "recently"
    if holder.priority is not None and holder.priority > terms.priority:
        return Refusal("outranked", f"outranked by {holder.campaign} (priority {holder.priority} over "
                                    f"{terms.priority}), which contacted this person at {when}", holder.campaign)
    return Refusal("min_gap", f"{holder.campaign} contacted this person at {when}; the plan keeps {gap} between "
                              "marketing touches", holder.campaign)

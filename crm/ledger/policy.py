"""The contact policy as pure functions over plain data: who may be contacted, how, and when.

The database settles what cannot be decided from a snapshot (two runs claiming one person):
``crm.ledger.claims.claim`` holds the person's locks under unique keys. Everything here is decided from
the customer's contact points, the consent ledger and the clock, and says why when the answer is no.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from crm.models import CHANNEL_CONTACT_KIND, ContactStatus


@dataclass(frozen=True)
class QuietHours:
    """Local hours with no contact, e.g. 21:00–09:00 (may cross midnight)."""

    start: time = time(21, 0)
    end: time = time(9, 0)

    def contains(self, local: time) -> bool:
        """True when ``local`` falls inside the quiet hours."""
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, now_utc: datetime, tz: str) -> datetime:
        """The first allowed instant at or after ``now_utc`` in zone ``tz`` (returned in UTC)."""
        zone = ZoneInfo(tz)
        local = now_utc.astimezone(zone)
        if not self.contains(local.timetz().replace(tzinfo=None)):
            return now_utc
        day = local.date() if local.time() < self.end else local.date() + timedelta(days=1)
        return datetime.combine(day, self.end, tzinfo=zone).astimezone(timezone.utc)


@dataclass(frozen=True)
class Policy:
    """Contact rules; campaign specs may override any of them."""

    cap_max: int = 3              # marketing touches per person …
    cap_days: int = 7             # … per this many days, across campaigns, channels and reps
    offer_cooldown_days: int = 30  # the same offer (or offer group) never again within this many days
    min_gap_hours: float = 24.0   # between any two marketing touches to one person, across campaigns and channels
    quiet_hours: QuietHours | None = field(default_factory=QuietHours)
    default_timezone: str = "Europe/Moscow"


@dataclass(frozen=True)
class ContactOption:
    """A contact point as the policy sees it."""

    id: int
    kind: str
    value: str
    status: str


@dataclass(frozen=True)
class ConsentState:
    """The latest ledger entry for one (channel or ``all``, purpose): granted or not, and its id."""

    granted: bool
    consent_id: int
    at: datetime


@dataclass
class Candidate:
    """A selected customer with what the policy needs to know."""

    customer_id: int
    person_id: int
    timezone: str | None
    preferred_channel: str | None
    contacts: list[ContactOption]
    consents: dict[tuple[str, str], ConsentState]  # (channel or "all", purpose) → latest entry


@dataclass
class Decision:
    """What to do with one candidate: ``touch`` (on a channel), ``defer`` (until ``due_at``) or ``skip``."""

    customer_id: int
    person_id: int
    action: str
    reason: str | None = None
    channel: str | None = None
    contact_point_id: int | None = None
    address: str | None = None
    consent_id: int | None = None
    due_at: datetime | None = None
    fallbacks: list[tuple[str, int, str, int | None]] = field(default_factory=list)  # (channel, cp id, address, consent)
    detail: str | None = None


def in_holdout(campaign: str, person_id: int, percent: float) -> bool:
    """Deterministic holdout: the same person is always in or out of a campaign's control group."""
    if percent <= 0:
        return False
    digest = int(hashlib.sha256(f"{campaign}:{person_id}".encode()).hexdigest()[:8], 16)
    return digest % 10000 < percent * 100


def consent_for(candidate: Candidate, channel: str, purpose: str) -> ConsentState | None:
    """The entry that decides: the later of the channel's and ``all``'s latest entries."""
    entries = [candidate.consents.get((channel, purpose)), candidate.consents.get(("all", purpose))]
    entries = [e for e in entries if e is not None]
    return max(entries, key=lambda e: (e.at, e.consent_id)) if entries else None


def channel_plan(channels: list[str], preferred: str | None, use_preferred: bool = True) -> list[str]:
    """The spec's order, with the customer's preferred channel first when it is in the plan."""
    if use_preferred and preferred in channels:
        return [preferred] + [c for c in channels if c != preferred]
    return list(channels)


def options(candidate: Candidate, plan: list[str], purpose: str) -> tuple[list[tuple[str, int, str, int | None]], str]:
    """Usable (channel, contact point, address, consent id) in plan order, and the reason when there is none."""
    usable: list[tuple[str, int, str, int | None]] = []
    saw_contact = saw_revocation = False
    for channel in plan:
        kind = CHANNEL_CONTACT_KIND[channel].value
        points = [c for c in candidate.contacts if c.kind == kind and c.status == ContactStatus.active.value]
        if not points:
            continue
        saw_contact = True
        consent = consent_for(candidate, channel, purpose)
        if purpose == "marketing" and (consent is None or not consent.granted):
            saw_revocation |= consent is not None
            continue
        if purpose == "service" and consent is not None and not consent.granted:
            saw_revocation = True
            continue
        point = min(points, key=lambda c: c.id)
        usable.append((channel, point.id, point.value, consent.consent_id if consent else None))
    reason = "opted_out" if saw_revocation else "no_consent" if saw_contact else "unreachable"
    return usable, reason


def decide(candidate: Candidate, *, campaign: str, channels: list[str], purpose: str, now: datetime,
           policy: Policy, holdout_percent: float = 0.0, use_preferred: bool = True) -> Decision:
    """Decide for one candidate from a snapshot (locks are checked when claiming)."""
    base = {"customer_id": candidate.customer_id, "person_id": candidate.person_id}
    if in_holdout(campaign, candidate.person_id, holdout_percent):
        return Decision(**base, action="skip", reason="holdout", detail=f"{holdout_percent:g}% control group")
    usable, reason = options(candidate, channel_plan(channels, candidate.preferred_channel, use_preferred), purpose)
    if not usable:
        return Decision(**base, action="skip", reason=reason)
    channel, point, address, consent = usable[0]
    decision = Decision(**base, action="touch", channel=channel, contact_point_id=point, address=address,
                        consent_id=consent, fallbacks=usable[1:])
    if policy.quiet_hours is not None and channel != "call":
        tz = candidate.timezone or policy.default_timezone
        allowed = policy.quiet_hours.next_allowed(now, tz)
        if allowed > now:
            decision.action, decision.reason, decision.due_at = "defer", "quiet_hours", allowed
            decision.detail = f"quiet hours in {tz}; deferred to {allowed:%Y-%m-%d %H:%M} UTC"
    return decision

"""How persons answered the touches they were sent, per channel: what ``channels: auto`` ranks channels by.

A touch sent (or delivered) in the look-back counts as answered when the person wrote back to it
(an inbound touch whose ``in_reply_to`` is it), clicked one of its links (a human click in
``engagements``: a scanner's does not count; opens do not either, mail clients prefetch them) or when a purchase of any of the person's records
followed it within the window: the purchase is credited to the person's latest touch sent on or
before its day (last-touch attribution, so an email and an SMS sent the same week do not both
claim one purchase). Three reads per batch of persons, whatever its size; the rest is arithmetic.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from crm.db import in_chunks, one_of
from crm.models import Customer, Engagement, Purchase, Touch

touches = Touch.__table__
customers = Customer.__table__
purchases = Purchase.__table__
engagements = Engagement.__table__
CHANNELS = ("email", "sms", "voice", "telegram", "call")


@dataclass(frozen=True)
class Record:
    """Touches sent in one channel and how many of them were answered."""

    touches: int = 0
    responses: int = 0

    def __add__(self, other: Record) -> Record:
        return Record(self.touches + other.touches, self.responses + other.responses)


def _person_of(conn: Connection, chunk: list[int]):
    person = func.coalesce(customers.c.person_id, customers.c.id)
    return person, or_(one_of(conn, customers.c.person_id, chunk),
                       and_(customers.c.person_id.is_(None), one_of(conn, customers.c.id, chunk)))


def responses(persons: list[int], *, conn: Connection, now: datetime, lookback_days: int,
              window_days: int) -> dict[int, dict[str, Record]]:
    """person → channel → (touches sent, answered) over the last ``lookback_days`` before ``now``."""
    since = now - timedelta(days=lookback_days)
    sent: dict[int, list[tuple[datetime, int, str]]] = {}
    bought: dict[int, list[date]] = {}
    for chunk in in_chunks(sorted(set(persons))):
        person, mine = _person_of(conn, chunk)
        for row in conn.execute(select(person, touches.c.id, touches.c.channel, touches.c.sent_at)
                                .join(customers, customers.c.id == touches.c.customer_id)
                                .where(mine, touches.c.direction == "out", touches.c.status.in_(("sent", "delivered")),
                                       touches.c.sent_at >= since, touches.c.sent_at <= now,
                                       touches.c.channel.in_(CHANNELS))):
            sent.setdefault(row[0], []).append((row.sent_at, row.id, row.channel))
        for row in conn.execute(select(person, purchases.c.purchased_on)
                                .join(customers, customers.c.id == purchases.c.customer_id)
                                .where(mine, purchases.c.purchased_on >= since.date(),
                                       purchases.c.purchased_on <= now.date())):
            bought.setdefault(row[0], []).append(row.purchased_on)
    replied = _replied(conn, [tid for items in sent.values() for _, tid, _ in items])
    return {person: tally(items, bought.get(person, []), replied, window_days) for person, items in sent.items()}


def _replied(conn: Connection, touch_ids: list[int]) -> set[int]:
    """The touches among ``touch_ids`` someone wrote back to or clicked a link of."""
    found: set[int] = set()
    for chunk in in_chunks(touch_ids):
        found.update(conn.execute(select(touches.c.in_reply_to).where(
            touches.c.direction == "in", one_of(conn, touches.c.in_reply_to, chunk))).scalars())
        found.update(conn.execute(select(engagements.c.touch_id).where(
            engagements.c.kind == "clicked", engagements.c.human.is_(True),
            one_of(conn, engagements.c.touch_id, chunk))).scalars())
    return found


def tally(sent: list[tuple[datetime, int, str]], bought: list[date], replied: set[int],
          window_days: int) -> dict[str, Record]:
    """One person's touches per channel and how many were answered (pure): a reply, or a purchase credited to the
    latest touch sent on or before its day, at most ``window_days`` before it."""
    sent = sorted(sent)
    days = [at.date() for at, _, _ in sent]
    answered = {tid for _, tid, _ in sent if tid in replied}
    for day in bought:
        last = bisect_right(days, day) - 1
        if last >= 0 and (day - days[last]).days <= window_days:
            answered.add(sent[last][1])
    out: dict[str, Record] = {}
    for _, tid, channel in sent:
        out[channel] = out.get(channel, Record()) + Record(1, int(tid in answered))
    return out


def base_responses(conn: Connection, *, now: datetime, lookback_days: int, window_days: int,
                   page: int = 5000) -> dict[str, Record]:
    """The whole base's touches and answers per channel (the same counting as a person's, summed over everyone):
    the rate a person's own leans on. Read once a run, ``page`` persons at a time (memory stays flat)."""
    person = func.coalesce(customers.c.person_id, customers.c.id)
    since = now - timedelta(days=lookback_days)
    touched = sorted(set(conn.execute(select(person).join(touches, touches.c.customer_id == customers.c.id).where(
        touches.c.direction == "out", touches.c.status.in_(("sent", "delivered")), touches.c.sent_at >= since,
        touches.c.sent_at <= now).distinct()).scalars()))
    total: dict[str, Record] = {}
    for start in range(0, len(touched), page):
        found = responses(touched[start:start + page], conn=conn, now=now, lookback_days=lookback_days,
                          window_days=window_days)
        for channel, record in pooled(found).items():
            total[channel] = total.get(channel, Record()) + record
    return total


def pooled(history: dict[int, dict[str, Record]]) -> dict[str, Record]:
    """Every person's records summed per channel: the group's own rate, which a person's few touches lean on."""
    total: dict[str, Record] = {}
    for channels in history.values():
        for channel, record in channels.items():
            total[channel] = total.get(channel, Record()) + record
    return total

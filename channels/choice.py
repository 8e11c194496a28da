"""Channel choice by results (``channels: auto``): each person's usable channels ranked by expected cost per response.

A person's response rate in a channel is their own answered / sent touches there, smoothed
towards the group's rate in that channel (empirical Bayes: ``(answered + k·group) / (sent + k)``),
so that two touches do not outweigh a thousand, and a person with no history gets the group's
rate. The expected cost per response is the channel's price (``channels.pricing``: one SMS
segment, one voice minute, a rep's expected call) over that rate; the lowest wins, and at equal
cost the cheaper message, then the higher rate, then the spec's order. A channel nobody in the
group was sent gets the group's rate over all channels. When no channel has any history, the
spec's order stands. Pure: the history is read once a batch (``crm.ledger.responses``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from channels.pricing import Prices
from crm.ledger.responses import Record


@dataclass(frozen=True)
class Score:
    """One channel for one person: their smoothed rate, their own record, the price, the cost per response."""

    channel: str
    rate: float
    own: Record
    price: Decimal
    per_response: float  # math.inf when the rate is 0

    def describe(self) -> str:
        cost = "never answered" if math.isinf(self.per_response) else f"{self.per_response:.2f} RUB/response"
        return (f"{self.channel} {self.rate:.0%} ({self.own.responses}/{self.own.touches} own), "
                f"{self.price.normalize():f} RUB, {cost}")


@dataclass(frozen=True)
class Choice:
    """The channels in the order to try them, why, and whether nothing was known (the spec's order then)."""

    order: list[str]
    reason: str
    known: bool = True


def smoothed(own: Record, group_rate: float, weight: float) -> float:
    """``(answered + weight·group_rate) / (sent + weight)``: the group's rate until the person's history says more."""
    return (own.responses + weight * group_rate) / (own.touches + weight)


def rank(channels: list[str], own: Mapping[str, Record], group: Mapping[str, Record], prices: Prices,
         weight: float) -> Choice:
    """``channels`` (usable ones, in the spec's order) ranked for one person by expected cost per response."""
    seen = [group[c] for c in channels if c in group and group[c].touches > 0]
    if not seen:
        return Choice(list(channels), f"auto: no history in {', '.join(channels)} yet, so the spec's order", False)
    overall = sum(r.responses for r in seen) / sum(r.touches for r in seen)
    scores = []
    for channel in channels:
        found = group.get(channel)
        group_rate = found.responses / found.touches if found and found.touches else overall
        rate = smoothed(own.get(channel, Record()), group_rate, weight)
        price = prices.expected(channel)
        scores.append(Score(channel, rate, own.get(channel, Record()), price,
                            float(price) / rate if rate > 0 else math.inf))
    order = sorted(range(len(scores)), key=lambda i: (scores[i].per_response, scores[i].price, -scores[i].rate, i))
    ranked = [scores[i] for i in order]
    return Choice([s.channel for s in ranked],
                  f"auto: {ranked[0].channel} by cost per response; " + "; ".join(s.describe() for s in ranked))

"""What a message costs, per channel, in roubles (RUB): the price a touch records when it is claimed.

    email     per message                       0.10 ₽  (an ESP's bulk price)
    sms       per segment (channels.render.sms) 3.50 ₽  (a Russian aggregator's Cyrillic segment)
    voice     per started call minute           3.00 ₽  (a robocall; the minutes estimated from the text)
    telegram  per message                       0.00 ₽  (the Bot API is free)
    call      per minute of a rep's call       12.00 ₽  (the rep's time and the line), call_minutes 3 expected

The defaults above are overridden by the settings (``[prices] sms = 3.2`` in ``touchflow.toml``,
``TOUCHFLOW_PRICES_SMS=3.2`` in the environment) and those by a campaign spec's ``prices:``.
Pure: no database, no settings read here (``prices_for`` takes them), so a run, a dry run and a
test price alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CURRENCY = "RUB"
PRICED = ("email", "sms", "voice", "telegram", "call", "call_minutes")
VOICE_WORDS_PER_MINUTE = 130  # a text-to-speech voice reads about this many Russian words a minute
CENT = Decimal("0.0001")  # touches.cost keeps four decimals


@dataclass(frozen=True)
class Prices:
    """The price of one unit per channel: a message (email, telegram), a segment (sms), a minute (voice, call)."""

    email: Decimal = Decimal("0.10")
    sms: Decimal = Decimal("3.50")
    voice: Decimal = Decimal("3.00")
    telegram: Decimal = Decimal("0")
    call: Decimal = Decimal("12.00")
    call_minutes: Decimal = Decimal("3")  # a rep's call is expected to take this long (its real length is unknown)

    def override(self, values: Mapping[str, Any] | None) -> Prices:
        """These prices with ``values`` (``{"sms": 2.9}``) over them; ValueError naming a wrong key or value."""
        if not values:
            return self
        changes = {}
        for key, value in values.items():
            if value is None:
                continue
            if key not in PRICED:
                raise ValueError(f"prices: unknown price {key!r}; known: {', '.join(PRICED)}")
            changes[key] = money(value, f"prices.{key}")
        return replace(self, **changes)

    def units(self, channel: str, text: str | None = None, segments: int | None = None) -> Decimal:
        """How many priced units a message is: SMS segments, voice minutes from its text, a call's minutes, else 1."""
        if channel == "sms":
            return Decimal(max(1, segments or 1))
        if channel == "voice":
            words = len((text or "").split())
            return Decimal(max(1, math.ceil(words / VOICE_WORDS_PER_MINUTE)))
        if channel == "call":
            return self.call_minutes
        return Decimal(1)

    def cost(self, channel: str | None, text: str | None = None, segments: int | None = None) -> Decimal | None:
        """The price of one message on ``channel`` (None for a channel without a price: a document, an inbound one)."""
        if channel not in PRICED or channel == "call_minutes":
            return None
        price = getattr(self, channel) * self.units(channel, text, segments)
        return price.quantize(CENT, rounding=ROUND_HALF_UP)

    def of_rendered(self, channel: str | None, rendered: Any) -> Decimal | None:
        """The price of a rendered message (``channels.render.Rendered``): SMS by its segments, voice by its words."""
        if rendered is None:
            return self.cost(channel)
        sms = getattr(rendered, "sms", None)
        return self.cost(channel, getattr(rendered, "text", None), sms.segments if sms is not None else None)

    def expected(self, channel: str) -> Decimal:
        """What a message on ``channel`` is expected to cost before it is rendered: one SMS segment, one voice minute,
        a call of ``call_minutes`` (what channel choice compares)."""
        return self.cost(channel) or Decimal(0)

    def as_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def money(value: Any, where: str) -> Decimal:
    """A price or budget as a Decimal ≥ 0; ValueError saying where and how to write it."""
    try:
        amount = Decimal(str(value).strip().replace(",", "."))
    except Exception:
        amount = None
    if isinstance(value, bool) or amount is None or not amount.is_finite() or amount < 0:
        raise ValueError(f"{where}: {value!r} is not an amount of roubles; write a number of 0 or more, e.g. 3.5")
    return amount


def prices_for(settings: Any, overrides: Mapping[str, Any] | None = None) -> Prices:
    """The prices a run uses: the defaults, then the settings' ``prices_<channel>``, then a spec's ``prices:``."""
    configured = {key: getattr(settings, f"prices_{key}", None) for key in PRICED}
    return Prices().override(configured).override(overrides)

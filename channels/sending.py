"""Send with the worker's policy: the provider's limits (``channels.ratelimit``), retries with backoff, pauses.

A metered send takes room in its limits before each try and holds it until the provider has
answered; a provider's ``retry_after`` pauses the sender's limit for every process sharing it.

Whatever a transport raises, each message ends as a ``Delivery`` or a ``ChannelError``: an error
that is not one (a bug in a transport) is taken as ``DeliveryUnknown``, as it may have happened
after the message was handed over, so it is never resent blindly. (Transports classify what they
know comes before the hand-over themselves: a message that cannot be built is ``MessageRejected``.) A ``Breaker``
stops a channel for the rest of the run after repeated connection failures (or requests left
unanswered): the messages left fail at once (``ChannelDown``) instead of each waiting for its own
time-outs.
"""

from __future__ import annotations

import asyncio
import logging
import random

from channels.base import Channel, Delivery, Message
from channels.errors import (
    ChannelDown,
    ChannelError,
    ChannelFatal,
    ConnectionFailed,
    DeliveryUnknown,
    NoReply,
    RateLimited,
    TransientError,
)
from channels.ratelimit import LOCAL, Gate, Limit, Limiter, LimiterUnavailable, Meter

log = logging.getLogger(__name__)


class Breaker:
    """Counts consecutive connection failures of one channel; open (failing fast) once ``limit`` is reached.

    A request handed over and never answered (``NoReply``) counts too: a provider that accepts
    connections and then hangs costs each message its full time-out otherwise.
    """

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit
        self.failures = 0
        self.last: ChannelError | None = None

    @property
    def open(self) -> bool:
        return self.failures >= self.limit

    def check(self, channel: str) -> None:
        """Raise ``ChannelDown`` when the channel has stopped answering."""
        if self.open:
            raise ChannelDown(f"{channel} stopped for this run after {self.failures} failures to reach it in a row "
                              f"(last: {self.last}); not tried", code="channel_down", channel=channel)

    def record(self, error: ChannelError | None) -> None:
        """A send's outcome: a connection failure or no reply counts, anything else (an answer) resets the count."""
        if isinstance(error, (ConnectionFailed, NoReply)):
            self.failures += 1
            self.last = error
        elif error is None or not isinstance(error, ChannelDown):
            self.failures = 0


async def send_with_retry(channel: Channel, message: Message, *, rate: float = 0.0, attempts: int = 3,
                          base_delay: float = 0.5, limiter_key: str | None = None,
                          breaker: Breaker | None = None, meter: Meter | None = None,
                          limiter: Limiter | None = None) -> Delivery:
    """Send one message; transient errors are retried up to ``attempts`` times with jittered backoff.

    Each try takes room in the ``meter``'s limits first (``rate`` and ``limiter_key`` stand for a
    meter of one per-second limit), through ``limiter`` (this process's own when None). A
    ``RateLimited`` error pauses the sender's limit for its ``retry_after``, so every send sharing
    it waits, not just this one. Permanent and unknown-delivery errors are raised at once.
    """
    meter = meter or (Meter(Limit.per_second(limiter_key or channel.name, rate)) if rate > 0 else None)
    if meter is None:
        return await _send_one(channel, message, None, None, attempts, base_delay, breaker)
    async with (limiter or LOCAL).connect() as gate:
        return await _send_one(channel, message, meter, gate, attempts, base_delay, breaker)


async def _send_one(channel: Channel, message: Message, meter: Meter | None, gate: Gate | None, attempts: int,
                    base_delay: float, breaker: Breaker | None) -> Delivery:
    breaker = breaker or Breaker(limit=1 << 30)
    needs = meter.needs(message) if meter is not None else ()
    for attempt in range(1, attempts + 1):
        breaker.check(channel.name)
        try:
            delivery = await _metered(channel, message, gate, needs)
        except ChannelError as exc:
            breaker.record(exc)
            if not isinstance(exc, TransientError) or attempt == attempts or breaker.open:
                raise
            delay = base_delay * 2 ** (attempt - 1) * (1 + random.random() / 4)
            if exc.retry_after:
                delay = max(delay, exc.retry_after)
                if isinstance(exc, RateLimited) and gate is not None:
                    await gate.pause(meter.sender.key, exc.retry_after)
            await asyncio.sleep(delay)
            continue
        except Exception as exc:  # noqa: BLE001 - not a ChannelError: a transport bug; maybe handed over
            raise DeliveryUnknown(f"the {channel.name} transport failed unexpectedly: {type(exc).__name__}: {exc}",
                                  channel=channel.name) from exc
        breaker.record(None)
        return delivery
    raise AssertionError("unreachable")


async def _metered(channel: Channel, message: Message, gate: Gate | None, needs) -> Delivery:
    """One try: room taken in every limit before the hand-over, held until the provider has answered."""
    if gate is None:
        return await channel.send(message)
    try:
        hold = await gate.acquire(needs)
    except LimiterUnavailable as exc:
        exc.channel = channel.name
        raise
    try:
        return await channel.send(message)
    finally:
        await _release(gate, hold)


async def _release(gate: Gate, hold) -> None:
    """End a send's hold; a limiter gone meanwhile does not undo a send that happened (the next acquire stops)."""
    try:
        await gate.release(hold)
    except LimiterUnavailable as exc:
        log.warning("%s (after a send: its room is freed when it expires)", exc)


async def send_all(channel: Channel, messages: list[Message], *, concurrency: int = 4, rate: float = 0.0,
                   limiter_key: str | None = None, meter: Meter | None = None, limiter: Limiter | None = None,
                   attempts: int = 3, base_delay: float = 0.5, breaker: Breaker | None = None
                   ) -> list[Delivery | ChannelError]:
    """Send many messages with ``concurrency`` in flight; each result is a Delivery or the error it met.

    ``concurrency`` workers take the next message in turn (no task per message), as a bare client
    loop over that many connections would. A metered channel's workers share one connection to
    the limiter for the call; an unmetered one (email by default) never asks a limiter.
    """
    meter = meter or (Meter(Limit.per_second(limiter_key or channel.name, rate)) if rate > 0 else None)
    results: list[Delivery | ChannelError | None] = [None] * len(messages)
    positions = iter(range(len(messages)))
    fatal: list[ChannelFatal] = []

    async def worker(gate: Gate | None) -> None:
        for index in positions:
            if fatal:  # the channel cannot go on: the rest are not tried
                results[index] = fatal[0]
                continue
            try:
                results[index] = await _send_one(channel, messages[index], meter, gate, attempts, base_delay, breaker)
            except ChannelError as exc:
                results[index] = exc
                if isinstance(exc, ChannelFatal):
                    fatal.append(exc)

    def workers(gate: Gate | None) -> asyncio.Future:
        return asyncio.gather(*(worker(gate) for _ in range(max(1, min(concurrency, len(messages))))))

    try:
        await channel.open()
    except ChannelError as exc:
        return [exc] * len(messages)
    except Exception as exc:  # noqa: BLE001 - before any hand-over: no message of this call was sent
        failed = ConnectionFailed(f"cannot open the {channel.name} channel: {type(exc).__name__}: {exc}",
                                  code="connection_failed", channel=channel.name)
        return [failed] * len(messages)
    if meter is None:
        await workers(None)
        return results  # type: ignore[return-value]
    try:
        async with (limiter or LOCAL).connect() as gate:
            await workers(gate)
    except LimiterUnavailable as exc:  # before any hand-over: the limiter's URL is not one
        exc.channel = channel.name
        return [exc if result is None else result for result in results]
    return results  # type: ignore[return-value]

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
from collections.abc import Callable
from typing import Any

from channels.base import Channel, Delivery, Message
from channels.concurrency import Window
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


async def send_all(channel: Channel, messages: list[Message], *, concurrency: int = 4, ceiling: int | None = None,
                   rate: float = 0.0, limiter_key: str | None = None, meter: Meter | None = None,
                   limiter: Limiter | None = None, attempts: int = 3, base_delay: float = 0.5,
                   breaker: Breaker | None = None) -> list[Delivery | ChannelError]:
    """Send many messages with ``concurrency`` in flight (up to ``ceiling`` as the provider allows); each result is a
    Delivery or the error it met.

    ``send_stream`` over a queue holding every message: ``concurrency`` workers take the next one
    in turn (no task per message), as a bare client loop over that many connections would.
    """
    meter = meter or (Meter(Limit.per_second(limiter_key or channel.name, rate)) if rate > 0 else None)
    results: list[Delivery | ChannelError | None] = [None] * len(messages)
    queue: asyncio.Queue = asyncio.Queue()
    for index, message in enumerate(messages):
        queue.put_nowait((index, message))
    queue.put_nowait(None)
    await send_stream(channel, queue, results.__setitem__, concurrency=max(1, min(concurrency, len(messages))),
                      ceiling=ceiling, meter=meter, limiter=limiter, attempts=attempts, base_delay=base_delay,
                      breaker=breaker)
    return results  # type: ignore[return-value]


async def send_stream(channel: Channel, queue: asyncio.Queue, done: Callable[[Any, Delivery | ChannelError], None], *,
                      concurrency: int = 4, ceiling: int | None = None, meter: Meter | None = None,
                      limiter: Limiter | None = None, attempts: int = 3, base_delay: float = 0.5,
                      breaker: Breaker | None = None) -> Window:
    """Send what arrives on ``queue`` — ``(key, message)`` pairs, then ``None`` — telling ``done(key, result)`` each.

    ``concurrency`` workers take the next message as soon as they are free: no batch waits for its
    slowest message while a producer keeps the queue filled. With a ``ceiling`` above it, the
    number of workers follows the provider (``channels.concurrency.Window``): more while they are
    all busy and it pays, half on pushback. A metered channel's workers share one connection to the
    limiter; an unmetered one (email by default) never asks a limiter. A ``ChannelFatal`` error (a
    full disk) stops the channel: the messages still arriving are not tried and get that error; so
    do all of them when the channel cannot be opened. Returns the window (where its ``limit`` ended).
    """
    fatal: list[ChannelError] = []
    window = Window(concurrency, ceiling)
    workers: set[asyncio.Task] = set()
    alive = [0]  # workers not yet returned (a set of tasks learns of an end only on the next turn of the loop)

    async def worker(gate: Gate | None) -> None:
        try:
            await take_and_send(gate)
        finally:
            alive[0] -= 1

    async def take_and_send(gate: Gate | None) -> None:
        while (entry := await queue.get()) is not None:
            key, message = entry
            if fatal:  # the channel cannot go on: the rest are not tried
                done(key, fatal[0])
                continue
            window.took(backlog=not queue.empty())
            try:
                result: Delivery | ChannelError = await _send_one(channel, message, meter, gate, attempts,
                                                                  base_delay, breaker)
            except ChannelError as exc:
                result = exc
                if isinstance(exc, ChannelFatal):
                    fatal.append(exc)
            done(key, result)
            window.completed(result if isinstance(result, ChannelError) else None)
            if alive[0] > window.limit:
                return  # the window shrank: this worker stops (the others go on)
            start(gate)
        queue.put_nowait(None)  # the end, for the next worker

    def start(gate: Gate | None) -> None:
        for _ in range(window.limit - alive[0]):
            alive[0] += 1
            task = asyncio.ensure_future(worker(gate))
            workers.add(task)
            task.add_done_callback(forget)

    def forget(task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            workers.discard(task)

    async def run_workers(gate: Gate | None) -> None:
        """Until every worker has ended; a worker's own failure (not a send's) stops the others and is raised."""
        start(gate)
        try:
            while workers:
                await asyncio.wait(set(workers), return_when=asyncio.FIRST_EXCEPTION)
                failed = [task for task in workers if task.done() and not task.cancelled() and task.exception()]
                if failed:
                    raise failed[0].exception()
        finally:  # raised, or cancelled from outside: no worker goes on alone
            for task in workers:
                task.cancel()

    async def fail_all(error: ChannelError) -> Window:
        fatal.append(error)
        await take_and_send(None)
        return window

    try:
        await channel.open()
    except ChannelError as exc:
        return await fail_all(exc)
    except Exception as exc:  # noqa: BLE001 - before any hand-over: no message of this stream was sent
        return await fail_all(ConnectionFailed(f"cannot open the {channel.name} channel: {type(exc).__name__}: {exc}",
                                               code="connection_failed", channel=channel.name))
    if meter is None:
        await run_workers(None)
        return window
    try:
        async with (limiter or LOCAL).connect() as gate:
            await run_workers(gate)
    except LimiterUnavailable as exc:  # before any hand-over: the limiter's URL is not one
        exc.channel = channel.name
        await fail_all(exc)
    return window

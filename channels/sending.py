"""Send with the worker's policy: the process-wide rate limit, retries with backoff, provider pauses."""

from __future__ import annotations

import asyncio
import random

from channels.base import Channel, Delivery, Message
from channels.errors import ChannelError, RateLimited, TransientError
from channels.ratelimit import limiter


async def send_with_retry(channel: Channel, message: Message, *, rate: float = 0.0, attempts: int = 3,
                          base_delay: float = 0.5, limiter_key: str | None = None) -> Delivery:
    """Send one message; transient errors are retried up to ``attempts`` times with jittered backoff.

    A ``RateLimited`` error pauses the channel's limiter for its ``retry_after``, so every send in the
    process waits, not just this one. Permanent and unknown-delivery errors are raised at once.
    """
    bucket = limiter(limiter_key or channel.name, rate) if rate > 0 else None
    for attempt in range(1, attempts + 1):
        if bucket is not None:
            await bucket.acquire()
        try:
            return await channel.send(message)
        except TransientError as exc:
            if attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1) * (1 + random.random() / 4)
            if exc.retry_after:
                delay = max(delay, exc.retry_after)
                if isinstance(exc, RateLimited) and bucket is not None:
                    bucket.pause(exc.retry_after)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def send_all(channel: Channel, messages: list[Message], *, concurrency: int = 4, **kwargs
                   ) -> list[Delivery | ChannelError]:
    """Send many messages with ``concurrency`` in flight; each result is a Delivery or the error it met.

    ``concurrency`` workers take the next message in turn (no task per message), as a bare client
    loop over that many connections would.
    """
    results: list[Delivery | ChannelError | None] = [None] * len(messages)
    positions = iter(range(len(messages)))

    async def worker() -> None:
        for index in positions:
            try:
                results[index] = await send_with_retry(channel, messages[index], **kwargs)
            except ChannelError as exc:
                results[index] = exc

    await channel.open()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(messages))))))
    return results  # type: ignore[return-value]

"""Per-channel send rates shared by every send in the process (token buckets), with provider pauses."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """A token bucket: ``rate`` sends per second with bursts of ``burst``; ``pause`` stops it for a while."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be above zero, not {rate}")
        self.rate = rate
        self.burst = burst or max(1, int(rate))
        self._tokens = float(self.burst)
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a provider's retry-after)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        """Wait until a send is allowed."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:  # the bucket outlives event loops; its lock may not
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


_LIMITERS: dict[str, RateLimiter] = {}


def limiter(key: str, rate: float, burst: int | None = None) -> RateLimiter:
    """The process-wide limiter for ``key`` (a channel, or a channel and sender number)."""
    existing = _LIMITERS.get(key)
    if existing is None or existing.rate != rate:
        existing = _LIMITERS[key] = RateLimiter(rate, burst)
    return existing

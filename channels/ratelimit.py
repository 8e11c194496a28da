"""Provider limits held in every window: a sliding-window log per key, shared through Redis or kept in this process.

A ``Limit`` is at most ``count`` units (messages, SMS segments) in any window of ``seconds`` on
one key: a Telegram bot, one chat, a sender number. A send takes room in each of its limits
before it goes (``acquire``) and keeps it while it is in flight; once it is over (``release``)
the room stays taken for one more window, counted from then. The provider receives the message
between the two, so in any window of the provider's own clock it sees at most ``count`` units,
whatever each request's latency — and never a window's worth on top of another, as a full token
bucket lets through in its first second (a token bucket or GCRA bounds the average, not every
window). A message heavier than its limit (an SMS of more segments than the number sends in a
second) goes alone and holds the limit for as many windows as it weighs: the provider's own pace.

``RedisLimiter`` keeps the logs in Redis (``TOUCHFLOW_RATE_LIMIT_URL``), each step one atomic
script on Redis's clock: every process on every machine shares each limit, and a provider's
``retry_after`` (a pause key) stops them all. ``LocalLimiter`` keeps them in this process when no
URL is set: exact for one process; ``share_locally(n)`` gives each of ``n`` local pool processes
1/n of each limit (exact while each share is a unit a second or more; below, e.g. SMS at 1 a
second shared by two, each process sends one per two seconds, and two may land in one second).
A limiter that cannot be used raises ``LimiterUnavailable``, fatal to the channel: nothing is
ever sent unlimited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from channels.base import Message
from channels.errors import ChannelFatal

POLL_SECONDS = 0.02        # how soon to look again when the room is held by sends still in flight
IN_FLIGHT_SECONDS = 60.0   # Redis: a send's room is freed after this even if its process died mid-send
PRUNE_ABOVE = 4096         # in-process windows (one per chat) kept before idle ones are dropped

log = logging.getLogger(__name__)


class LimiterUnavailable(ChannelFatal):
    """The shared rate limiter cannot be reached or used: the channel stops rather than send unlimited."""


@dataclass(frozen=True)
class Limit:
    """At most ``count`` units in any window of ``seconds`` on ``key`` (what the provider meters)."""

    key: str
    count: int
    seconds: float = 1.0

    @classmethod
    def per_second(cls, key: str, rate: float) -> Limit:
        """``rate`` units a second: ``floor(rate)`` in any second, or one in ``1 / rate`` seconds below one."""
        if rate <= 0:
            raise ValueError(f"rate must be above zero, not {rate}")
        return cls(key, int(rate), 1.0) if rate >= 1 else cls(key, 1, 1 / rate)


Need = tuple[Limit, int]  # a limit and the units a send takes from it


@dataclass(frozen=True)
class Meter:
    """The limits one channel's sends count against: the sender's, optionally each recipient's, and their weight.

    ``per_recipient.key`` is a prefix the recipient's address completes (a Telegram chat);
    ``weigh`` gives a message's units (SMS segments), one when unset.
    """

    sender: Limit
    per_recipient: Limit | None = None
    weigh: Callable[[Message], int] | None = None

    def needs(self, message: Message) -> list[Need]:
        weight = self.weigh(message) if self.weigh else 1
        needs = [(self.sender, weight)]
        if self.per_recipient is not None:
            recipient = self.per_recipient
            needs.append((Limit(recipient.key + message.to, recipient.count, recipient.seconds), 1))
        return needs


@dataclass
class Hold:
    """The room one send took: released once the send is over."""

    token: str
    parts: list[Any] = field(default_factory=list)


class Gate(Protocol):
    """A limiter as one ``send_all`` call uses it (its connections live as long as the call)."""

    async def acquire(self, needs: Sequence[Need]) -> Hold:
        """Wait until every need fits, then take the room (atomically across the limits)."""

    async def release(self, hold: Hold) -> None:
        """The send is over: its room stays taken for one window from now."""

    async def pause(self, key: str, seconds: float) -> None:
        """A provider's ``retry_after``: no new send on ``key`` for ``seconds``, in every process sharing it."""


class Limiter(Protocol):
    """Where the limits are kept: this process (``LocalLimiter``) or Redis (``RedisLimiter``)."""

    def connect(self) -> Any:
        """An async context manager giving a ``Gate``."""


# ---------------------------------------------------------------- in this process

class RateLimiter:
    """One key's sliding-window log in this process: ``rate`` units a second, at most ``burst`` in ``burst / rate`` s.

    Without ``burst`` the window is a second (``Limit.per_second``). Each entry is ``[end, weight,
    extra]``: ``end`` is None while its send is in flight; the entry counts until ``end + seconds``.
    """

    def __init__(self, rate: float, burst: int | None = None) -> None:
        limit = Limit.per_second("", rate) if burst is None else Limit("", burst, burst / rate)
        self.rate = rate
        self.count, self.seconds = limit.count, limit.seconds
        self.burst = self.count
        self._entries: list[list] = []
        self._paused_until = 0.0

    @classmethod
    def of(cls, count: int, seconds: float) -> RateLimiter:
        window = cls(count / seconds, count)
        window.count, window.seconds = count, seconds
        return window

    def pause(self, seconds: float) -> None:
        """Take nothing for ``seconds`` (a provider's retry-after)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def idle(self, now: float) -> bool:
        self._forget(now)
        return not self._entries and now >= self._paused_until

    def _forget(self, now: float) -> None:
        self._entries = [e for e in self._entries if e[0] is None or e[0] + self.seconds > now]

    def wait(self, weight: int, now: float) -> float:
        """Seconds until ``weight`` units fit (0: they fit now)."""
        if now < self._paused_until:
            return self._paused_until - now
        self._forget(now)
        over = sum(e[1] for e in self._entries) + min(weight, self.count) - self.count
        if over <= 0:
            return 0.0
        for end, units, _ in sorted(self._entries, key=lambda e: math.inf if e[0] is None else e[0]):
            over -= units
            if over <= 0:
                return POLL_SECONDS if end is None else max(end + self.seconds - now, 1e-6)
        return POLL_SECONDS

    def take(self, weight: int) -> list:
        """An entry for ``weight`` units, in flight (a heavier one than the limit holds it ``weight / count`` windows)."""
        entry = [None, min(weight, self.count), self.seconds * max(0.0, weight / self.count - 1)]
        self._entries.append(entry)
        return entry

    @staticmethod
    def finish(entry: list, now: float) -> None:
        entry[0] = now + entry[2]

    async def acquire(self, weight: int = 1) -> None:
        """Wait until ``weight`` units fit and take them, as ended at once (for callers without a send to wait for)."""
        while True:
            with _LOCK:
                now = time.monotonic()
                wait = self.wait(weight, now)
                if wait <= 0:
                    self.finish(self.take(weight), now)
                    return
            await asyncio.sleep(wait)


_LIMITERS: dict[str, RateLimiter] = {}
_LOCK = threading.Lock()  # a process's threads (a Dask worker's) check and take room one at a time


def limiter(key: str, rate: float, burst: int | None = None) -> RateLimiter:
    """The process-wide window for ``key`` at ``rate`` a second."""
    existing = _LIMITERS.get(key)
    if existing is None or existing.rate != rate:
        existing = _LIMITERS[key] = RateLimiter(rate, burst)
    return existing


def _window(limit: Limit, share: int) -> RateLimiter:
    """The process-wide window for ``limit``, of which this process has ``1 / share``."""
    count, seconds = (limit.count // share, limit.seconds) if limit.count >= share \
        else (1, limit.seconds * share / limit.count)
    existing = _LIMITERS.get(limit.key)
    if existing is None or (existing.count, existing.seconds) != (count, seconds):
        if len(_LIMITERS) >= PRUNE_ABOVE:  # one window per chat: drop the idle ones
            now = time.monotonic()
            for key in [k for k, w in _LIMITERS.items() if w.idle(now)]:
                del _LIMITERS[key]
        existing = _LIMITERS[limit.key] = RateLimiter.of(count, seconds)
    return existing


class LocalLimiter:
    """The limits in this process (no shared limiter): exact for one process, 1/``share`` each for a local pool."""

    def __init__(self) -> None:
        self.share = 1

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[LocalLimiter]:
        yield self

    async def acquire(self, needs: Sequence[Need]) -> Hold:
        with _LOCK:
            windows = [(_window(limit, self.share), weight) for limit, weight in needs]
        while True:
            with _LOCK:
                now = time.monotonic()
                wait = max(window.wait(weight, now) for window, weight in windows)
                if wait <= 0:
                    return Hold("", [(window, window.take(weight)) for window, weight in windows])
            await asyncio.sleep(wait)

    async def release(self, hold: Hold) -> None:
        with _LOCK:
            now = time.monotonic()
            for window, entry in hold.parts:
                window.finish(entry, now)

    async def pause(self, key: str, seconds: float) -> None:
        if key in _LIMITERS:
            _LIMITERS[key].pause(seconds)


LOCAL = LocalLimiter()


def share_locally(processes: int) -> None:
    """This process is one of ``processes`` on this machine sending for one run without a shared limiter.

    Called in each local pool process (before its first send): each then keeps 1/``processes``
    of every limit, so the pool together stays under it.
    """
    LOCAL.share = max(1, int(processes))


# ---------------------------------------------------------------- shared through Redis

# KEYS: per limit, its log and its pause key. ARGV: token, in-flight ms, poll ms, then per limit count,
# window ms, weight.
# Members are "f:<token>:<units>" while in flight (scored far ahead), "d:<token>:<units>" once over
# (scored at the end); an entry counts while its score is within a window of now.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = #KEYS / 2
local wait = 0
for i = 1, n do
  local p = redis.call('PTTL', KEYS[2 * i])
  if p > wait then wait = p end
end
if wait > 0 then return {0, tostring(wait)} end
for i = 1, n do
  local log, count, window = KEYS[2 * i - 1], tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local need = math.min(tonumber(ARGV[3 * i + 3]), count)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  local used = 0
  for j = 1, #entries, 2 do used = used + tonumber(string.match(entries[j], ':(%d+)$')) end
  local over = used + need - count
  if over > 0 then
    local until_free = tonumber(ARGV[3])
    for j = 1, #entries, 2 do
      over = over - tonumber(string.match(entries[j], ':(%d+)$'))
      if over <= 0 then
        if string.sub(entries[j], 1, 2) == 'd:' then until_free = tonumber(entries[j + 1]) + window - now end
        break
      end
    end
    if until_free > wait then wait = until_free end
  end
end
if wait > 0 then return {0, tostring(wait)} end
for i = 1, n do
  local log, window = KEYS[2 * i - 1], tonumber(ARGV[3 * i + 2])
  local need = math.min(tonumber(ARGV[3 * i + 3]), tonumber(ARGV[3 * i + 1]))
  redis.call('ZADD', log, now + tonumber(ARGV[2]), 'f:' .. ARGV[1] .. ':' .. need)
  local ttl = math.ceil(tonumber(ARGV[2]) + window)
  if redis.call('PTTL', log) < ttl then redis.call('PEXPIRE', log, ttl) end
end
return {1, '0'}
"""

# KEYS: the logs. ARGV: token, then per log units, extra ms (a heavier send's), window ms.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, #KEYS do
  local units, extra, window = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  redis.call('ZREM', KEYS[i], 'f:' .. ARGV[1] .. ':' .. units)
  redis.call('ZADD', KEYS[i], now + extra, 'd:' .. ARGV[1] .. ':' .. units)
  local ttl = math.ceil(extra + window) + 1000
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"""

# KEYS: the pause key. ARGV: ms. A pause is only ever lengthened.
_PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
"""


def masked(url: str) -> str:
    """A Redis URL as it may be printed: without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=user + host))


class RedisLimiter:
    """The limits in Redis at ``url``, shared by every process and machine that uses it."""

    def __init__(self, url: str, prefix: str = "touchflow:rate:") -> None:
        self.url = url
        self.prefix = prefix
        self.where = masked(url)

    def unavailable(self, exc: BaseException) -> LimiterUnavailable:
        return LimiterUnavailable(
            f"the rate limiter at {self.where} (TOUCHFLOW_RATE_LIMIT_URL) cannot be used: {type(exc).__name__}: "
            f"{exc}; nothing is sent unlimited, so the channel stops. Start Redis there or correct the URL "
            "(redis://host:6379/0)", code="rate_limiter_unavailable")

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[_RedisGate]:
        """A gate on its own connections, closed when the caller is done."""
        from redis import asyncio as aioredis

        try:
            client = aioredis.from_url(self.url, socket_connect_timeout=5, socket_timeout=5)
        except ValueError as exc:
            raise self.unavailable(exc) from None
        try:
            yield _RedisGate(self, client)
        finally:
            await client.aclose()


class _RedisGate:
    def __init__(self, limiter: RedisLimiter, client: Any) -> None:
        self.limiter = limiter
        self.scripts = {name: client.register_script(source)
                        for name, source in (("acquire", _ACQUIRE), ("release", _RELEASE), ("pause", _PAUSE))}

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await self.scripts[name](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise self.limiter.unavailable(exc) from None

    async def acquire(self, needs: Sequence[Need]) -> Hold:
        prefix, token = self.limiter.prefix, secrets.token_hex(8)
        keys, args = [], [token, int(IN_FLIGHT_SECONDS * 1000), int(POLL_SECONDS * 1000)]
        for limit, weight in needs:
            keys += [f"{prefix}log:{limit.key}", f"{prefix}pause:{limit.key}"]
            args += [limit.count, limit.seconds * 1000, weight]
        while True:
            granted, wait = await self._run("acquire", keys, args)
            if granted:
                return Hold(token, [(f"{prefix}log:{limit.key}", min(weight, limit.count),
                                     limit.seconds * 1000 * max(0.0, weight / limit.count - 1), limit.seconds * 1000)
                                    for limit, weight in needs])
            await asyncio.sleep(float(wait) / 1000)

    async def release(self, hold: Hold) -> None:
        args: list[Any] = [hold.token]
        for _, units, extra, window in hold.parts:
            args += [units, extra, window]
        await self._run("release", [key for key, *_ in hold.parts], args)

    async def pause(self, key: str, seconds: float) -> None:
        await self._run("pause", [f"{self.limiter.prefix}pause:{key}"], [max(1, int(seconds * 1000))])


@lru_cache(maxsize=8)
def limiter_for(url: str | None) -> Limiter:
    """The limiter of ``TOUCHFLOW_RATE_LIMIT_URL``: shared through Redis, or this process's own when unset."""
    return RedisLimiter(url) if url else LOCAL

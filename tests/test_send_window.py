"""How many messages a channel keeps in flight follows the relay: more while it keeps up, fewer when it pushes back."""

from __future__ import annotations

import asyncio

import pytest

import channels.concurrency as concurrency
from channels.base import Delivery, Message
from channels.concurrency import Window
from channels.errors import AddressRejected, ConnectionFailed, TransientError
from channels.sending import Breaker, send_all
from channels.transports.smtp import SmtpConfig, SmtpEmailChannel
from tests.servers import ScriptedSmtp


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(concurrency.time, "monotonic", fake)
    return fake


def round_of(window: Window, clock: Clock, seconds: float, backlog: bool = True) -> None:
    """One round of completions taking ``seconds`` in all."""
    n = max(16, 2 * window.limit)
    for _ in range(n):
        window.took(backlog)
        clock.now += seconds / n
        window.completed(None)


def test_the_window_grows_while_each_step_pays_and_holds_where_it_stops_paying(clock):
    window = Window(4, 64)
    round_of(window, clock, 1.0)                      # first round (16 at 16/s): no comparison yet
    assert window.limit == 6
    round_of(window, clock, 0.5)                      # 16 at 32/s: twice the rate, another step
    assert window.limit == 9
    limit = window.limit
    round_of(window, clock, 18 / 33)                  # 18 at ~ the rate before the step (32/s): hold
    assert window.limit == limit
    for _ in range(concurrency.PROBE_ROUNDS):
        round_of(window, clock, 0.01)                 # however fast, it holds for a while
    assert window.limit == limit
    round_of(window, clock, 0.01)                     # then it probes again
    assert window.limit > limit


def test_the_window_reaches_its_ceiling_while_each_step_pays_in_proportion(clock):
    window = Window(4, 64)
    for _ in range(12):
        round_of(window, clock, max(16, 2 * window.limit) / (window.limit * 12.5))  # 80 ms a message each
    assert window.limit == 64


def test_a_producer_that_cannot_keep_up_does_not_grow_the_window(clock):
    window = Window(4, 64)
    for _ in range(5):
        round_of(window, clock, 1.0, backlog=False)   # the workers waited for messages
    assert window.limit == 4


def test_pushback_halves_the_window_and_a_refused_address_does_not(clock):
    window = Window(32, 64)
    window.completed(AddressRejected("no such user", code=550))
    window.completed(TransientError("mailbox busy", code=450))
    assert window.limit == 32
    window.completed(ConnectionFailed("421 too many connections", code="connection_failed"))
    assert window.limit == 16
    window.completed(TransientError("service busy", code=421))
    assert window.limit == 8
    for _ in range(10):
        window.completed(ConnectionFailed("refused", code="connection_failed"))
    assert window.limit == 1


def messages(n: int) -> list[Message]:
    return [Message(channel="email", to=f"p{i}@mail.ru", subject=f"n{i}", text="Здравствуйте!") for i in range(n)]


def test_a_slow_relay_gets_more_connections_than_the_pool_starts_with():
    async def go():
        async with ScriptedSmtp(content_delay=0.05) as server:  # the network, not the processor, sets the pace
            channel = SmtpEmailChannel(SmtpConfig(port=server.port, pool_size=2, max_connections=16, timeout=5))
            try:
                results = await send_all(channel, messages(300), concurrency=2, ceiling=16)
            finally:
                await channel.close()
            return results, server
    results, server = asyncio.run(go())
    assert all(isinstance(r, Delivery) for r in results)
    assert len(server.contents) == 300
    assert server.peak >= 6, server.peak              # grew past the 2 it started with (2, 3, 4, 6, ...)
    assert server.peak <= 16


def test_a_relay_that_refuses_extra_connections_shrinks_the_window_and_every_message_goes_once():
    async def go():
        async with ScriptedSmtp(content_delay=0.01, max_connections=3) as server:
            channel = SmtpEmailChannel(SmtpConfig(port=server.port, pool_size=2, max_connections=32, timeout=5))
            try:
                results = await send_all(channel, messages(300), concurrency=2, ceiling=32, attempts=3,
                                         base_delay=0.05, breaker=Breaker(5))
            finally:
                await channel.close()
            return results, server
    results, server = asyncio.run(go())
    assert all(isinstance(r, Delivery) for r in results), [r for r in results if not isinstance(r, Delivery)][:3]
    subjects = sorted(m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in server.contents)
    assert subjects == sorted(f"n{i}".encode() for i in range(300))   # each once
    assert server.peak == 3 and 1 <= server.refused <= 12, server.refused

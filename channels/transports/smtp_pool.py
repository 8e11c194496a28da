"""The connections of one SMTP channel to its relay, shared by the sending's workers.

A worker takes an idle connection when there is one (the most recently used), else the right to
open a new one, up to the pool's limit (``SmtpConfig.max_connections``; the sending's window,
``channels.concurrency``, decides how many are used). A relay that refuses a new connection while
others are established has a per-client connection limit (Postfix's
``smtpd_client_connection_count_limit``, "421 too many connections"): the pool's limit drops to
the connections established, for the channel's life, and the worker waits for one of them
instead of failing its message.
"""

from __future__ import annotations

import asyncio
from typing import Any


class ConnectionPool:
    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.idle: list[Any] = []
        self.places = 0       # connections established or being opened, idle or in use
        self.established = 0  # of which connected
        self._changed = asyncio.Condition()

    async def take(self) -> Any | None:
        """An idle connection, or None: open one in the place taken for it."""
        async with self._changed:
            while not self.idle and self.places >= self.limit:
                await self._changed.wait()
            if self.idle:
                return self.idle.pop()
            self.places += 1
            return None

    def connected(self) -> None:
        """The connection opened in a place taken by ``take`` is established."""
        self.established += 1

    def went_stale(self) -> None:
        """An idle connection the server has closed: a new one is opened in its place."""
        self.established -= 1

    async def give(self, client: Any, keep: bool) -> None:
        """An established connection back after a send: idle again, or closed and its place free."""
        async with self._changed:
            if keep and client.is_connected:
                self.idle.append(client)
            else:
                self.places -= 1
                self.established -= 1
            self._changed.notify()

    async def not_opened(self, refused: bool) -> bool:
        """Opening a connection failed (its place is free). When the relay ``refused`` it while others are
        established, the limit drops to those and True says: wait for one of them."""
        async with self._changed:
            self.places -= 1
            self._changed.notify_all()
            if not refused or self.established <= 0:
                return False
            self.limit = self.established
            return True

    def drain(self) -> list[Any]:
        """The idle connections, to close; the pool is empty after."""
        idle, self.idle = self.idle, []
        self.places -= len(idle)
        self.established -= len(idle)
        return idle

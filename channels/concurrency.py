"""How many messages a channel keeps in flight: a window that follows the provider, as Postfix's per-destination
concurrency does.

The window starts at the configured pool size. After each round (as many completions as twice
the window, at least 16) it looks at what the round did:

* the workers found messages waiting (the provider, not the producer, set the pace) and the round
  was faster than the one before the last step up (by 10 %): the window grows by half, up to its
  ceiling; a step that brought nothing is the last until ``PROBE_ROUNDS`` rounds later (the
  relay's capacity, found);
* pushback — a refused connection (``ConnectionFailed``: "421 too many connections"), a rate
  limit, a 421 reply — halves it at once, not below one, and it does not grow again for
  ``PROBE_ROUNDS`` rounds.

A relay's connection limit costs one refused connection: the SMTP pool then stays at the
connections open (``channels.transports.smtp_pool``), and a message waits for one of them.
"""

from __future__ import annotations

import time

from channels.errors import ChannelError, ConnectionFailed, RateLimited, TransientError

GROWTH = 1.5
PROBE_ROUNDS = 20
FASTER = 1.10


class Window:
    """The number of messages a stream's workers may have in flight now (``limit``)."""

    def __init__(self, start: int, ceiling: int | None = None) -> None:
        self.limit = max(1, start)
        self.ceiling = max(self.limit, ceiling or self.limit)
        self._done = 0
        self._waiting = 0
        self._started = time.monotonic()
        self._rate_before_step = 0.0
        self._quiet_rounds = 0

    def took(self, backlog: bool) -> None:
        """A worker took a message; ``backlog``: others were still waiting in the queue."""
        self._waiting += backlog

    def completed(self, error: ChannelError | None) -> None:
        """A send ended; pushback from the provider shrinks the window at once."""
        if _pushback(error):
            if self.limit > 1:
                self.limit = max(1, self.limit // 2)
            self._quiet_rounds = PROBE_ROUNDS
            self._new_round(0.0)
            return
        self._done += 1
        if self._done >= max(16, 2 * self.limit):
            self._end_round()

    def _end_round(self) -> None:
        rate = self._done / max(time.monotonic() - self._started, 1e-6)
        busy = self._waiting >= self._done // 2
        stepped = False
        if self._quiet_rounds:
            self._quiet_rounds -= 1
        elif busy and self.limit < self.ceiling:
            if self._rate_before_step and rate < self._rate_before_step * FASTER:
                self._quiet_rounds = PROBE_ROUNDS      # the last step brought nothing: hold here for a while
            else:
                self.limit = min(self.ceiling, max(self.limit + 1, round(self.limit * GROWTH)))
                stepped = True
        self._new_round(rate if stepped else 0.0)

    def _new_round(self, rate_before_step: float) -> None:
        self._rate_before_step = rate_before_step
        self._done = self._waiting = 0
        self._started = time.monotonic()


def _pushback(error: ChannelError | None) -> bool:
    """The provider asks for less: a connection refused, a rate limit, an SMTP 421 (service busy)."""
    return isinstance(error, (ConnectionFailed, RateLimited)) or (
        isinstance(error, TransientError) and str(error.code) == "421")

"""A campaign's budget: what it has spent, read from its touches, and which claims still fit in it.

The spend is the sum of ``touches.cost`` over the campaign's outgoing touches, across all its
runs, that are not ``skipped``: claimed, deferred (the money is set aside), sending, unknown,
sent, delivered, and failed too, since providers bill an SMS or a call that was attempted (a
failure recorded without an attempt, after a channel stopped answering, counts as well: the
budget errs on the side of spending less). A decision not to contact costs nothing, and a claim
released by a stopped run (``skipped``) gives its money back.

The database settles two claimers of one campaign (two processes of a run, two runs): each claim
of a campaign with a budget takes the campaign's lock first in its transaction, so the spend it
reads includes every claim committed before it, and no other claim of the campaign commits until
it does. On SQLite the write lock every ``write_tx`` takes (``BEGIN IMMEDIATE``) is that lock; on
PostgreSQL a transaction-scoped advisory lock on the campaign's name.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from crm.models import Touch

touches = Touch.__table__
FREE = ("skipped",)  # statuses whose cost is not spent


def lock(conn: Connection, campaign: str) -> None:
    """Hold the campaign's budget until this transaction ends (PostgreSQL; SQLite's write lock already does)."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"touchflow-budget:{campaign}".encode()).digest()
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                     {"key": int.from_bytes(digest[:8], "big", signed=True)})


def spent(conn: Connection, campaign: str) -> Decimal:
    """What the campaign has spent over all its runs (RUB)."""
    total = conn.execute(select(func.coalesce(func.sum(touches.c.cost), 0)).where(
        touches.c.campaign == campaign, touches.c.direction == "out", touches.c.status.not_in(FREE),
        touches.c.cost.is_not(None))).scalar_one()
    return Decimal(str(total))


def fitting(costs: list[Decimal | None], spent_so_far: Decimal, budget: Decimal) -> int:
    """How many of ``costs``, in order, fit in what is left of ``budget``: the first that does not ends it (a run
    stops contacting there, rather than looking further for a cheaper message)."""
    total = spent_so_far
    for index, cost in enumerate(costs):
        total += cost or 0
        if total > budget:
            return index
    return len(costs)


def exhausted(budget: Decimal, spent_so_far: Decimal, cost: Decimal | None) -> str:
    """Why a touch was not claimed, for its decision's detail."""
    return (f"the campaign's budget of {budget:f} RUB is spent: {spent_so_far:f} RUB claimed so far, and this message "
            f"would cost {cost or 0:f} RUB")

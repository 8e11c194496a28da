"""A second process that reads, decides, renders and claims a run's next pages while the run's own process sends.

In one process, preparing a page (its candidates, decisions, messages and claims) and sending
share one interpreter lock: while a page is prepared in a thread, the sending loop waits for the
lock after each socket call, and a relay far away sees a third of the usual rate for a second or
so each page. The preparer takes that work to its own process (its own processor on a machine
with two): the run's process only marks, sends and records. Between two pages the preparer also
seals the history recorded so far (every ``SEAL_EVERY`` seconds), so that the run's closing seal
covers its last seconds only.

The crash rules do not change. The preparer commits its claims before it returns them; a touch
is marked ``sending`` by the sending process, before it is handed over, and its outcome recorded
there. The preparer dies with the run's process (``die_with_parent``), and claims it made that
were never handed over are released by the run's end (``flows.run.finish`` of a failed run) or by
the next run (``reap``). A preparer that dies stops the run (``RunStopped``), as a dead worker
process does; one that cannot open the run (another signing key, a database it cannot see) leaves
the preparing to the run's own process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sqlalchemy.engine import make_url

from crm.db import HISTORY_TABLES, refresh_statistics
from crm.ledger import runs as ledger_runs
from crm.ledger.policy import Candidate, Decision
from flows.batch import Prepared, prepare_slice, select_page, terms_for
from flows.delivery import build_ahead
from flows.run import PREPARED_BY, Run, RunRef
from flows.workers import SEAL_EVERY, die_with_parent, worker_run
from touchflow.errors import ConfigError, RunStopped

log = logging.getLogger(__name__)


CLAIM_SLICE = 1000  # customers the preparer claims in one write transaction


def can_prepare_apart(run: Run, first_page: int) -> bool:
    """Whether another process should prepare ``run``'s pages after the first: switched on, a real run with enough
    customers after the first page to be worth a process, a database that process can open too."""
    settings = run.settings
    if not settings.prepare_apart or run.dry_run or run.journey or run.claim_key_of is not None:
        return False
    rest = (run.total or 0) - first_page
    if rest <= 0 or rest < settings.prepare_apart_from:
        return False
    url = make_url(run.engine.url)
    return not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))


class Preparer:
    """The run's preparing process: started once (it imports and opens the run while the first page is sent here),
    then asked for one page at a time."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.ref = RunRef.local(run)  # the run's own settings: a script's ``settings=`` hold there too
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=die_with_parent)
        self.opened: Future = self.pool.submit(open_run, self.ref)
        self.usable = True
        self.sealing: asyncio.Task | None = None

    async def page(self, ids: list[int]) -> Prepared | None:
        """The page prepared in the preparer (its decisions not to contact recorded, its touches claimed); None when
        the preparer could not start or open the run (the caller prepares here instead)."""
        if not self.usable or not await self._open():
            return None
        if self.sealing is None:
            self.sealing = asyncio.ensure_future(self._seal_behind())
        try:
            return with_offer(self.run, await asyncio.wrap_future(self.pool.submit(prepared_page, self.ref, ids)))
        except BrokenProcessPool as exc:
            raise RunStopped(f"the process preparing run {self.run.run_id}'s pages died ({exc}); the run stopped. "
                             "What it had claimed and not handed over is released for the next run") from None

    async def _open(self) -> bool:
        """Whether the preparer has opened the run; False (once, with a warning) when it cannot: another signing
        key, a database it cannot see, or a process that died starting (a script that runs a campaign must do it
        under ``if __name__ == "__main__":``, as for any process pool: a new process imports the script)."""
        try:
            await asyncio.wrap_future(self.opened)
            return True
        except (ConfigError, BrokenProcessPool) as exc:
            log.warning("pages of run %s are prepared in the sending process: %s", self.run.run_id,
                        exc if isinstance(exc, ConfigError) else f"the preparing process did not start ({exc})")
            self.usable = False
            return False

    async def _seal_behind(self) -> None:
        """Every ``SEAL_EVERY`` seconds, between two pages, the preparer seals the history up to what the run has
        recorded: the run's closing seal then covers its last seconds, not the whole run, and the sending process
        does none of the hashing. A seal that fails is left to the closing one."""
        while True:
            await asyncio.sleep(SEAL_EVERY)
            try:
                await asyncio.wrap_future(self.pool.submit(seal_so_far, self.ref))
            except BrokenProcessPool:
                return  # the next page says so
            except Exception as exc:  # noqa: BLE001 - the run's closing seal seals the same rows
                log.warning("run %s: its preparer could not seal the history so far (%s); the run's end seals it",
                            self.run.run_id, exc)
                return

    async def close(self) -> None:
        """Stop sealing and end the process (a seal under way is finished first)."""
        if self.sealing is not None:
            self.sealing.cancel()
            await asyncio.gather(self.sealing, return_exceptions=True)
        self.pool.shutdown(wait=True, cancel_futures=True)


def open_run(ref: RunRef) -> str:
    """In the preparer: open the run once (imports, database, key); ConfigError if it cannot."""
    return worker_run(ref).run_id


def seal_so_far(ref: RunRef) -> None:
    """In the preparer: seal every chain up to its newest settled row (``crm.ledger.audit.seal``), with the run's key."""
    from crm.ledger.audit import seal

    run = worker_run(ref)
    seal(run.engine, key=run.key)


def prepared_page(ref: RunRef, ids: list[int]) -> Prepared:
    """In the preparer: read, decide, render and claim one page; what the sending process needs to send it."""
    run = worker_run(ref)
    before = Counter(run.counts)
    candidates, decisions = select_page(run, ids)
    prepared = _claimed_in_slices(run, candidates, decisions)
    refresh_statistics(run.engine, HISTORY_TABLES)  # the run's own rows outgrow what the planner knows
    prepared.counts.update(run.counts - before)
    prepared.counts[PREPARED_BY + ledger_runs.owner()] += 1
    if not run.spec.document:  # (a document is attached when the touch is marked ``sending``)
        prepared.built, prepared.rendered = build_ahead(run, prepared.ready, prepared.rendered), {}
    prepared.contexts = _for_fallbacks(run, prepared)
    return prepared


def _claimed_in_slices(run: Run, candidates: list[Candidate], decisions: list[Decision]) -> Prepared:
    """The page rendered and claimed ``CLAIM_SLICE`` customers at a time: short write transactions, so that the
    sending process's marks (SQLite: one writer at a time) wait less for them."""
    terms = terms_for(run, candidates, decisions)
    prepared = Prepared()
    for start in range(0, len(decisions), CLAIM_SLICE):
        part = prepare_slice(run, candidates, decisions[start:start + CLAIM_SLICE], terms)
        prepared.ready += part.ready
        prepared.contexts.update(part.contexts)
        prepared.rendered.update(part.rendered)
        prepared.counts.update(part.counts)
    return prepared


def _for_fallbacks(run: Run, prepared: Prepared) -> dict[int, dict]:
    """The contexts the sending process may need again (to render a fallback), without the run's offer (read-only
    mappings do not travel: the sending process has the same offer and puts it back, ``with_offer``)."""
    if not run.spec.fallback:
        return {}
    keep = {c.decision.customer_id for c in prepared.ready if c.decision.fallbacks}
    return {customer: {k: v for k, v in context.items() if k != "offer"}
            for customer, context in prepared.contexts.items() if customer in keep}


def with_offer(run: Run, prepared: Prepared) -> Prepared:
    """A page from the preparer with the run's offer back in its contexts."""
    for context in prepared.contexts.values():
        context["offer"] = run.offer_values
    return prepared


__all__ = ["Preparer", "can_prepare_apart", "open_run", "prepared_page", "seal_so_far"]

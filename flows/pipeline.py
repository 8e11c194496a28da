"""A run's batches in one process as one pipeline: the next batch is read, decided and claimed while this one is sent.

``process_batch`` sends a batch and waits for its last answer before the next batch is read, so
each batch boundary leaves the network idle while the next page is read, decided and its first
slice claimed (about a second a batch at 64 connections to a relay 10 ms away). ``process_pages``
keeps one ``Sending`` (its streams, their connections and window) for all the run's batches:
once a batch's touches are claimed, the next page is read, decided and claimed while the streams
send the claimed backlog; preparing waits while more than ``AHEAD`` claimed touches are still to
be sent (memory and claims stay bounded). The pages after the first are prepared in a second
process (``flows.preparer``), so that preparing does not take the processor from the sending;
without one (an in-memory database, ``prepare_apart`` off), in a thread while the sending waits on
the network, else here. The crash rules are the streams' own: a touch is committed ``sending``
before it is handed over and its outcome recorded after; a touch claimed and not yet marked when
the process dies is released by the next run (``reap``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from itertools import chain

from crm.db import HISTORY_TABLES, refresh_statistics
from crm.ledger.arbitration import Terms
from crm.ledger.policy import Candidate, Decision
from flows.batch import FIRST_SLICE, SLICE, feed, prepare_slice, process_batch, ramped, select_page, terms_for
from flows.delivery import Sending, responsive_loop
from flows.preparer import Preparer, can_prepare_apart
from flows.run import Run

AHEAD = 2 * SLICE  # claimed touches still to send beyond which the next slice waits to be prepared
AHEAD_APART = 3 * SLICE  # the same with a preparer, which prepares a whole page (5,000) at a time
HEAD = 1000  # customers of the first page prepared here while the preparer starts (about a second)


def process_pages(run: Run, pages: Iterable[list[int]]) -> None:
    """Decide, claim, send and record every page of the run, the next page prepared while this one is sent.

    A dry run sends nothing, so it goes page by page (``process_batch``).
    """
    if run.dry_run:
        for page in pages:
            process_batch(run, page)
            run.advance(len(page))
        return
    if run.runner is None:
        run.runner = asyncio.Runner()
    with responsive_loop():
        run.runner.run(_pipeline(run, iter(pages)))


async def _pipeline(run: Run, pages: Iterator[list[int]]) -> None:
    """One sending for every batch, each page prepared beside the sending of the ones before: in the preparer when
    the run has more than one page and there can be one (it starts with the run; meanwhile the first ``HEAD``
    customers are prepared here, so that the network does not wait for it), else here."""
    sending, preparer, first = Sending(run), None, True
    try:
        while not sending.broken:
            await sending.measured()  # does the sending wait on the network? (learnt on the first page, then known)
            await sending.backlog_below(AHEAD_APART if preparer else AHEAD if sending.waits_on_network else 1)
            page = await _off(sending, next, pages, None)
            if page is None:
                return
            if first and can_prepare_apart(run, len(page)):
                preparer = Preparer(run)
                page, rest = page[:HEAD], page[HEAD:]
                pages = chain([piece for piece in (rest[:HEAD], rest[HEAD:]) if piece], pages)
            prepared = await preparer.page(page) if preparer and not first else None
            if prepared is not None:
                feed(run, sending, prepared)
            else:
                await _here(run, sending, page)
            run.advance(len(page))
            first = False
    finally:
        try:
            await sending.finish()
        finally:
            if preparer is not None:
                await preparer.close()


async def _here(run: Run, sending: Sending, page: list[int]) -> None:
    """Prepare a page in this process (in threads while the sending waits on the network) and feed it slice by slice."""
    candidates, decisions, terms = await _off(sending, _select, run, page)
    await _claim_and_feed(run, sending, candidates, decisions, terms)
    await _off(sending, refresh_statistics, run.engine, HISTORY_TABLES)  # the run's own rows outgrow the planner


async def _off(sending: Sending, function, *args):
    """``function(*args)`` in a thread while the sending waits on the network, else here (a thread would only take
    the processor from the sending)."""
    return await asyncio.to_thread(function, *args) if sending.waits_on_network else function(*args)


def _select(run: Run, page: list[int]) -> tuple[list[Candidate], list[Decision], Terms]:
    """A page's candidates, their decisions and the terms they are claimed under."""
    candidates, decisions = select_page(run, page)
    return candidates, decisions, terms_for(run, candidates, decisions)


async def _claim_and_feed(run: Run, sending: Sending, candidates: list[Candidate], decisions: list[Decision],
                          terms: Terms) -> None:
    """Claim a batch slice by slice and hand each to the sending. Before anything is sent, a small first slice
    (the network waits for it) and a few answers to learn the pace; then, on a network that waits, each slice in a
    thread once the backlog is down to ``AHEAD``; on a fast one, the rest at once here (and the next page once this
    one is sent, as ``process_batch`` does: everything runs on this one thread, so running ahead gains nothing and
    would only take claims from concurrent runs)."""
    if not sending.streams:
        first, decisions = decisions[:FIRST_SLICE], decisions[FIRST_SLICE:]
        feed(run, sending, prepare_slice(run, candidates, first, terms))
        if decisions and not sending.broken:
            await sending.measured()
    if not decisions or sending.broken:
        return
    if not sending.waits_on_network:
        feed(run, sending, prepare_slice(run, candidates, decisions, terms))
        return
    for part in ramped(decisions) if sending.backlog < FIRST_SLICE else _slices(decisions):
        await sending.backlog_below(AHEAD)
        if sending.broken:
            return
        feed(run, sending, await asyncio.to_thread(prepare_slice, run, candidates, part, terms))


def _slices(decisions: list[Decision]) -> list[list[Decision]]:
    """Slices of ``SLICE``: with a backlog to send, the next slice need not start small."""
    return [decisions[i:i + SLICE] for i in range(0, len(decisions), SLICE)]


__all__ = ["AHEAD", "AHEAD_APART", "process_pages"]

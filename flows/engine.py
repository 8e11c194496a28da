"""The campaign engine as plain functions: start → deferred → batches → finish, with or without Prefect.

Its stages live in ``flows.run`` (a run's lease and summary), ``flows.batch`` (decide, render,
claim), ``flows.delivery`` (send and record), ``flows.pipeline`` (a run's batches overlapping in
one process) and ``flows.workers`` (batches in several processes); ``run_campaign`` chains them,
and the Prefect flows (``flows.campaign``) do the same with one task per batch. Tests call the stages directly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Engine

from flows.batch import process_batch, process_deferred, segment_pages
from flows.delivery import channel_for
from flows.pipeline import process_pages
from flows.run import Run, RunRef, finish, start
from flows.spec import CampaignSpec
from flows.workers import run_in_workers
from touchflow.settings import Settings

__all__ = ["Run", "RunRef", "channel_for", "finish", "process_batch", "process_deferred", "process_pages",
           "run_campaign", "segment_pages", "start"]


def run_campaign(engine: Engine, spec: CampaignSpec, *, dry_run: bool = False, now: datetime | None = None,
                 as_of: date | None = None, page_size: int = 5000, settings: Settings | None = None,
                 workers: int = 1, progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """Run a campaign without Prefect (the flow does the same with one task per batch).

    ``workers`` > 1 shares the batches among that many processes (the database keeps them from
    contacting anyone twice, as it does for any concurrent runs); in one process the batches run as
    one pipeline (``flows.pipeline``): no batch waits for the one before it to be sent.
    """
    run = start(engine, spec, dry_run=dry_run, now=now, as_of=as_of, settings=settings)
    if progress is not None:
        run.listeners.append(progress)
    try:
        process_deferred(run)
        if workers > 1 and not dry_run:
            run_in_workers(run, page_size, workers)
        else:
            process_pages(run, segment_pages(run, page_size))  # the next page prepared while this one is sent
    except BaseException:
        finish(run, "failed")
        raise
    return finish(run)

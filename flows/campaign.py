"""Prefect flows: a campaign (one task per batch of customers) and the daily reminders.

Tasks receive ids, not payloads, and keep no results; the logic is ``flows.engine``.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from flows.prefect_env import configure

configure()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from crm.db import make_engine, require_schema  # noqa: E402
from flows import engine as campaign_engine  # noqa: E402
from flows.spec import campaign_files, load_spec  # noqa: E402
from touchflow.settings import get_settings  # noqa: E402

CAMPAIGNS_DIR = Path(__file__).resolve().parents[1] / "campaigns"


@lru_cache(maxsize=4)
def _engine(url: str):
    engine = make_engine(url)
    require_schema(engine)
    return engine


@task(name="campaign-batch", persist_result=False, cache_policy=NO_CACHE)
def campaign_batch(run: campaign_engine.Run, ids: list[int]) -> dict[str, int]:
    """Decide, claim, send and record one batch (1k–10k customers)."""
    return campaign_engine.process_batch(run, ids)


@task(name="campaign-batch-in-worker", persist_result=False, cache_policy=NO_CACHE)
def campaign_worker_batch(ref: campaign_engine.RunRef, ids: list[int]) -> dict[str, int]:
    """One batch in a process of the flow's pool (``workers`` > 1); the process keeps its run's connections."""
    return campaign_engine.pooled_batch(ref, ids)


def _batches_in_processes(run: campaign_engine.Run, batch_size: int, workers: int) -> None:
    """One task per batch on a process pool; at most two batches per process wait (memory stays flat)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.task_runners import ProcessPoolTaskRunner

    ref = campaign_engine.RunRef.of(run)
    with get_client(sync_client=True) as client:
        api = str(client.api_url)  # this flow's server; a temporary one has no address in the settings
    # the pool's processes report to the same server instead of each starting a temporary one
    with temporary_settings(updates={PREFECT_API_URL: api}), ProcessPoolTaskRunner(max_workers=workers) as runner:
        campaign_engine.feed_pool(run, batch_size, workers,
                                  lambda page: runner.submit(campaign_worker_batch, {"ref": ref, "ids": page}))


@flow(name="campaign", persist_result=False, log_prints=False)
def campaign_flow(spec_path: str, dry_run: bool = False, as_of: str | None = None, batch_size: int = 5000,
                  workers: int = 1) -> dict[str, Any]:
    """Run one campaign spec end to end; returns its summary.

    ``workers`` > 1 runs the batches on a pool of that many processes (one task per batch still);
    the database keeps them from contacting anyone twice, as for any concurrent runs.
    """
    spec = load_spec(spec_path)
    engine = _engine(get_settings().database_url)
    now = datetime.now().astimezone()
    run = campaign_engine.start(engine, spec, dry_run=dry_run, now=now,
                                as_of=date.fromisoformat(as_of) if as_of else None)
    try:
        campaign_engine.process_deferred(run)
        if workers > 1 and not dry_run:
            _batches_in_processes(run, batch_size, workers)
        else:
            for page in campaign_engine.segment_pages(run, batch_size):
                campaign_batch(run, page)
    except BaseException:
        campaign_engine.finish(run, "failed")
        raise
    return campaign_engine.finish(run)


@flow(name="reminders", persist_result=False)
def reminders_flow(directory: str | None = None, as_of: str | None = None) -> list[dict[str, Any]]:
    """Run every spec of kind ``reminder`` (replenishment, service intervals, birthdays, N months since)."""
    folder = Path(directory) if directory else CAMPAIGNS_DIR
    summaries = []
    for path in campaign_files(folder):
        if load_spec(path).kind == "reminder":
            summaries.append(campaign_flow(str(path), as_of=as_of))
    return summaries

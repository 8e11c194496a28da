"""Prefect flows: a campaign (its batches as one pipeline task, or one task per batch on a pool) and the reminders.

Tasks receive ids, not payloads, and keep no results; the logic is ``flows.engine``. A campaign's
batches run in the flow's process (one task, the batches overlapping as in ``flows.pipeline``), on
a pool of local processes (``workers``, one task per batch), or on an existing
Dask cluster (``dask_address``, through prefect-dask's ``DaskTaskRunner``), whose workers may be
on other machines and read their own settings (``flows.run.RunRef``).
"""

from __future__ import annotations

import dataclasses
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from flows.prefect_env import configure

configure()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from crm.db import make_engine, require_schema  # noqa: E402
from flows import engine as campaign_engine  # noqa: E402
from flows import reporting  # noqa: E402
from flows.workers import (  # noqa: E402
    counted_batch, dask_threads, feed_pool, pooled_batch, reap_temporary_prefect_server, release_everywhere,
    settle_lost_batches)
from flows.run import local_now  # noqa: E402
from flows.spec import campaign_files, load_spec  # noqa: E402
from touchflow.errors import ConfigError, UsageError  # noqa: E402
from touchflow.settings import campaigns_dir, get_settings  # noqa: E402

DASK_CONNECT_SECONDS = 10  # how long to try reaching the scheduler before saying it is unreachable


@lru_cache(maxsize=4)
def _engine(url: str):
    engine = make_engine(url)
    require_schema(engine)
    return engine


@task(name="campaign-batch", persist_result=False, cache_policy=NO_CACHE)
def campaign_batch(run: campaign_engine.Run, ids: list[int]) -> dict[str, int]:
    """Decide, claim, send and record one batch (1k–10k customers): a dry run's, batch by batch."""
    return campaign_engine.process_batch(run, ids)


@task(name="campaign-pages", persist_result=False, cache_policy=NO_CACHE)
def campaign_pages(run: campaign_engine.Run, batch_size: int) -> None:
    """Every batch of the run in the flow's process as one pipeline (``flows.pipeline``): the next batch is prepared
    (in a second process, ``flows.preparer``) while this one is sent. One task run, not one per batch: a task run
    costs the flow's server round trips that a batch boundary in one process need not pay; the run's progress
    artifact follows the batches."""
    campaign_engine.process_pages(run, campaign_engine.segment_pages(run, batch_size))


@task(name="campaign-batch-in-worker", persist_result=False, cache_policy=NO_CACHE)
def campaign_worker_batch(ref: campaign_engine.RunRef, ids: list[int]) -> dict[str, int]:
    """One batch in a process of the flow's pool (``workers`` > 1); the process keeps its run's connections."""
    return pooled_batch(ref, ids)


@task(name="campaign-batch-on-dask", persist_result=False, cache_policy=NO_CACHE)
def campaign_dask_batch(ref: campaign_engine.RunRef, ids: list[int]) -> dict[str, int]:
    """One batch on a Dask worker, perhaps on another machine: its own secrets and database, the run's choices."""
    return counted_batch(ref, ids)


def _flow_api_url() -> str:
    """This flow's Prefect API (a temporary server has no address in the settings)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


def _batches_in_processes(run: campaign_engine.Run, batch_size: int, count: int) -> None:
    """One task per batch on a process pool; at most two batches per process wait (memory stays flat)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.task_runners import ProcessPoolTaskRunner

    ref = dataclasses.replace(campaign_engine.RunRef.of(run), local_processes=count)
    # the pool's processes report to the same server instead of each starting a temporary one
    with temporary_settings(updates={PREFECT_API_URL: _flow_api_url()}), \
            ProcessPoolTaskRunner(max_workers=count) as runner:
        feed_pool(run, batch_size, count,
                  lambda page: runner.submit(campaign_worker_batch, {"ref": ref, "ids": page}))


def _require_shared_limits(run: campaign_engine.Run, address: str) -> None:
    """Dask workers on several machines keep a provider's limit only through a shared limiter: refuse without one."""
    from channels.registry import DEV_TRANSPORTS, rate_of, transport_of

    if run.settings.rate_limit_url:
        return
    limited = [name for name in run.spec.channels
               if transport_of(name, run.settings) not in DEV_TRANSPORTS and rate_of(name, run.settings) > 0]
    if limited:
        raise ConfigError(f"{', '.join(limited)} on the Dask cluster {address}: each worker would keep the provider's "
                          "whole rate limit; set TOUCHFLOW_RATE_LIMIT_URL (a Redis every worker reaches, e.g. "
                          "redis://host:6379/0) for the flow and every worker")


def _batches_on_dask(run: campaign_engine.Run, batch_size: int, address: str) -> None:
    """One task per batch on an existing Dask cluster; at most two batches per worker thread wait.

    The workers report their task runs to this flow's Prefect API; once every batch is done,
    each releases what it kept for the run, and what a worker that died mid-batch left in
    flight is settled.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    _require_shared_limits(run, address)
    ref = campaign_engine.RunRef.of(run)
    api = _flow_api_url()
    with temporary_settings(updates={PREFECT_API_URL: api}), \
            DaskTaskRunner(address=address, client_kwargs={"timeout": DASK_CONNECT_SECONDS}) as runner:
        threads = dask_threads(runner, address, api)
        try:
            feed_pool(run, batch_size, threads,
                      lambda page: runner.submit(campaign_dask_batch, {"ref": ref, "ids": page}))
        finally:
            release_everywhere(runner.client, run.run_id)
    settle_lost_batches(run)


@flow(name="campaign", persist_result=False, log_prints=False)
def campaign_flow(spec_path: str, dry_run: bool = False, as_of: str | None = None, batch_size: int = 5000,
                  workers: int = 1, dask_address: str | None = None) -> dict[str, Any]:
    """Run one campaign spec end to end; returns its summary.

    In one process the batches run as one task, overlapping (``campaign-pages``); ``workers`` > 1 runs them on a
    pool of that many processes (one task per batch);
    ``dask_address`` (``tcp://scheduler:8786``) runs them on the workers of that Dask cluster
    instead. The database keeps them from contacting anyone twice, as for any concurrent runs. A
    dry run decides everything in the flow's process.
    """
    if dask_address and workers > 1:
        raise UsageError(f"workers={workers} and dask_address={dask_address}: choose one (the Dask cluster's workers "
                         "share the batches)")
    reap_temporary_prefect_server()  # a killed run leaves no Prefect server behind
    spec = load_spec(spec_path)
    engine = _engine(get_settings().database_url)
    now = local_now(spec)
    run = campaign_engine.start(engine, spec, dry_run=dry_run, now=now,
                                as_of=date.fromisoformat(as_of) if as_of else None)
    run.listeners.append(reporting.ProgressArtifact(spec.name))
    try:
        campaign_engine.process_deferred(run)
        if dask_address and not dry_run:
            _batches_on_dask(run, batch_size, dask_address)
        elif workers > 1 and not dry_run:
            _batches_in_processes(run, batch_size, workers)
        elif not dry_run:
            campaign_pages(run, batch_size)
        else:
            for page in campaign_engine.segment_pages(run, batch_size):
                campaign_batch(run, page)
                run.advance(len(page))
    except BaseException:
        campaign_engine.finish(run, "failed")
        raise
    return _ended(campaign_engine.finish(run))


def _ended(summary: dict[str, Any]):
    """The run's summary as an artifact; a run whose sends mostly failed ends Failed (with the summary)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.states import Completed, Failed

    create_markdown_artifact(reporting.markdown(summary), key=f"campaign-{summary['campaign']}".replace("_", "-"),
                             description=f"run {summary['run_id']}")
    failure = reporting.outcome(summary)
    if failure is not None:
        return Failed(message=failure, data=summary)
    return Completed(data=summary)


@flow(name="reminders", persist_result=False)
def reminders_flow(directory: str | None = None, as_of: str | None = None) -> list[dict[str, Any]]:
    """Run every spec of kind ``reminder`` (replenishment, service intervals, birthdays, N months since)."""
    folder = Path(directory) if directory else campaigns_dir()
    summaries = []
    for path in campaign_files(folder):
        spec = load_spec(path)
        if spec.kind == "reminder":
            result = campaign_flow(str(path), as_of=as_of, return_state=True).result(raise_on_failure=False)
            summaries.append(result if isinstance(result, dict) else {"campaign": spec.name, "error": str(result)})
    return summaries

"""Sharing a run's batches among processes: a pool fed once from the segment, on this machine or a Dask cluster.

The parent pages the segment once and hands the pages to the pool, at most two waiting per
process (memory stays flat); the database keeps the processes from contacting anyone twice, as
it does for any concurrent runs. A worker process keeps its run (engine, channels, signing key)
across batches (``worker_run``), built from a ``RunRef``: a Dask worker reads its own settings (no
secret travels), a local pool's process gets the run's (``RunRef.local``). While the pool works,
the parent seals the history behind it (``sealing_behind``). A local pool's process ends itself
as soon as its parent is gone (``die_with_parent``): a worker left sending after its run was
killed would race the next run. A Dask worker outlives
runs: the flow releases what it kept when the run's batches are done (``release_everywhere``),
and settles what a worker that died mid-batch left in flight (``settle_lost_batches``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from crm.ledger import runs as ledger_runs
from flows.run import BATCH_BY, Run, RunRef
from touchflow.errors import ConfigError, RunStopped

log = logging.getLogger(__name__)

SEAL_EVERY = 2.0  # seconds between seals of what a run has recorded so far (``sealing_behind``, the preparer)

_WORKER_RUNS: dict[tuple[str, int], tuple[Run, Any]] = {}  # (run id, thread) → the run and its finalizer
_RUNS_LOCK = threading.Lock()
_WATCHED = False


def die_with_parent(poll_seconds: float = 0.2) -> None:
    """End this process when its parent dies (Linux: at once, by the kernel; elsewhere: within ``poll_seconds``)."""
    global _WATCHED
    if _WATCHED:
        return
    _WATCHED = True
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            threading.Event().wait(poll_seconds)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


_REAPER = """
import os, signal, sys, time
pid, fd, mark = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.read(fd, 1)                        # returns when the watched process has died: the kernel closed its end
try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if mark.encode() not in f.read():  # gone already, or the pid now belongs to someone else
            sys.exit(0)
    os.kill(pid, signal.SIGTERM)
    for _ in range(20):
        time.sleep(0.1)
        os.kill(pid, 0)
    os.kill(pid, signal.SIGKILL)
except (OSError, ProcessLookupError):
    pass
"""
_REAPED: dict[int, int] = {}  # pid → the write end this process keeps open while it lives


def reap_with_this_process(pid: int, mark: str) -> None:
    """End process ``pid`` (whose command line holds ``mark``) when this process dies, a SIGKILL included.

    For children this process did not start itself and cannot arm with a parent-death signal, such
    as Prefect's temporary server: a small reaper process waits on a pipe whose write end only this
    process holds; the kernel closes it when this process dies, however it dies, and the reaper
    stops ``pid``. On a normal exit the owner has already stopped it and the reaper finds it gone.
    """
    if pid in _REAPED or not sys.platform.startswith("linux"):
        return
    import subprocess

    read, write = os.pipe()
    subprocess.Popen([sys.executable, "-c", _REAPER, str(pid), str(read), mark], pass_fds=(read,),
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    os.close(read)
    _REAPED[pid] = write


def reap_temporary_prefect_server() -> None:
    """If this process started Prefect's temporary server, make sure that server dies with it.

    Only a process that started one has imported Prefect's server module (a second of imports
    otherwise, for a run that reports to a running server).
    """
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return
    for server in list(server_module.SubprocessASGIServer._instances.values()):
        process = getattr(server, "server_process", None)
        if process is not None and process.poll() is None:
            reap_with_this_process(process.pid, "prefect.server.api.server")


def release(run: Run) -> None:
    """Close a worker's channels and database connections."""
    from flows.delivery import close_channels

    try:
        close_channels(run)
    finally:
        run.engine.dispose()


def worker_run(ref: RunRef) -> Run:
    """The ``Run`` this thread keeps for ``ref`` across batches (connection pools stay open).

    Made on the thread's first batch of the run (a Dask worker may run several threads: a ``Run``
    is not shared between threads); released when the process exits, when the thread gets a batch
    of another run, or by ``forget_run``.
    """
    import multiprocessing.util

    key = (ref.run_id, threading.get_ident())
    with _RUNS_LOCK:
        kept = _WORKER_RUNS.get(key)
        older = [k for k in _WORKER_RUNS if k[1] == key[1] and k != key] if kept is None else []
        finalizers = [_WORKER_RUNS.pop(k)[1] for k in older]
    for finalize in finalizers:
        finalize()  # a finalizer runs once: release the older run now
    if kept is None:
        run = ref.open()
        kept = (run, multiprocessing.util.Finalize(None, release, args=(run,), exitpriority=10))
        with _RUNS_LOCK:
            _WORKER_RUNS[key] = kept
    return kept[0]


def forget_run(run_id: str) -> int:
    """Release what this process kept for ``run_id`` (every thread's); how many runs that was.

    Called on every Dask worker once the run's batches are all done: a worker outlives runs,
    and should not hold SMTP connections and a database pool until the next one.
    """
    with _RUNS_LOCK:
        finalizers = [_WORKER_RUNS.pop(k)[1] for k in list(_WORKER_RUNS) if k[0] == run_id]
    for finalize in finalizers:
        finalize()
    _drain_prefect_logs()
    return len(finalizers)


def _drain_prefect_logs() -> None:
    """Send the task runs' logs this process still holds while the flow's Prefect server is up (a temporary one
    stops with the flow, and the logs would be lost with an error printed)."""
    handlers = sys.modules.get("prefect.logging.handlers")
    if handlers is not None:
        try:
            handlers.APILogWorker.drain_all(timeout=5)
        except Exception:  # noqa: BLE001 - logs only
            pass


def counted_batch(ref: RunRef, ids: list[int]) -> dict[str, int]:
    """One batch with the run this process keeps; its counts, and one batch to this process's name (host:pid)."""
    from flows.batch import process_batch

    counts = process_batch(worker_run(ref), ids)
    counts[BATCH_BY + ledger_runs.owner()] = 1
    return counts


def pooled_batch(ref: RunRef, ids: list[int]) -> dict[str, int]:
    """One batch in a local pool process, which dies with its parent (``die_with_parent``)."""
    die_with_parent()
    return counted_batch(ref, ids)


def feed_pool(run: Run, page_size: int, workers: int, submit: Callable[[list[int]], Any]) -> None:
    """Hand the segment's pages to a pool (``submit(page)`` returns a future) and add up their counts.

    Used by the direct pool (``run_in_workers``) and by the Prefect flow's process pool and Dask
    runner. A pool process that dies is a ``RunStopped`` error naming it, never a hang; Dask runs a
    dead worker's batch on another worker, and stops the run only when a batch killed workers
    again and again (``KilledWorker``) or the scheduler dropped it.
    """
    from flows.batch import segment_pages

    pending: deque = deque()  # (future, customers in its page)
    try:
        with sealing_behind(run):
            _feed(run, segment_pages(run, page_size), workers, submit, pending)
    finally:
        for future, _ in pending:  # a batch failed: let the others end before the run is closed
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the first failure is the one raised
                pass


def _feed(run: Run, pages: Iterable[list[int]], workers: int, submit: Callable[[list[int]], Any],
          pending: deque) -> None:
    """Submit every page, at most two waiting per process, and collect each batch's counts as it ends."""
    for page in pages:
        run.check_lease()
        if len(pending) >= 2 * workers:
            _collect(run, *pending.popleft())
        pending.append((submit(page), len(page)))
    while pending:
        _collect(run, *pending.popleft())


@contextmanager
def sealing_behind(run: Run) -> Iterator[None]:
    """While the pool works, this process (it only hands out pages) seals the history every ``SEAL_EVERY`` seconds in
    a thread: the run's closing seal then covers its last seconds, not the whole run. A seal that fails is left to
    the closing one."""
    from crm.ledger.audit import seal

    if run.dry_run:  # it writes nothing
        yield
        return
    stop = threading.Event()

    def seal_until_stopped() -> None:
        while not stop.wait(SEAL_EVERY):
            try:
                seal(run.engine, key=run.key)
            except Exception as exc:  # noqa: BLE001 - the run's closing seal seals the same rows
                log.warning("run %s: the history so far could not be sealed (%s); the run's end seals it",
                            run.run_id, exc)
                return

    sealer = threading.Thread(target=seal_until_stopped, name="sealer", daemon=True)
    sealer.start()
    try:
        yield
    finally:
        stop.set()
        sealer.join()


def _collect(run: Run, future: Any, customers: int) -> None:
    run.counts.update(_result(future))
    run.advance(customers)


def _result(future: Any) -> dict[str, int]:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise RunStopped(f"a worker process of the run died ({exc}); the run stopped. Touches it was sending are "
                         "settled as unknown by the next run once this run's lease expires") from None
    except Exception as exc:
        lost = _lost_on_dask(exc)
        if lost is None:
            raise
        raise RunStopped(lost) from None


def _lost_on_dask(exc: Exception) -> str | None:
    """What a Dask failure that is no batch's own error means for the run (None for any other error)."""
    name = type(exc).__name__
    if name == "KilledWorker":
        return (f"a batch was tried on Dask workers that died each time ({exc}); the run stopped. See the workers' "
                "logs (memory, crashes); touches they were sending are settled as unknown")
    if name == "FuturesCancelledError" or (name == "CancelledError" and "distributed" in sys.modules):
        return (f"the Dask scheduler dropped a batch ({exc or name}): it restarted or lost this flow's connection; "
                "the run stopped and what it had claimed is released for the next run")
    return None


class DaskUnavailable(ConfigError):
    """The Dask cluster a run was pointed at cannot take its batches (unreachable, no worker, unreachable API)."""


def dask_threads(runner: Any, address: str, api_url: str, wait_seconds: float = 30.0) -> int:
    """How many batches the cluster runs at once (its workers' threads), once it is known able to run them.

    DaskUnavailable when the scheduler does not answer, no worker joins within ``wait_seconds``,
    or workers on other machines could not report to this flow's Prefect API (a temporary server
    on this machine's loopback).
    """
    try:
        client = runner.client
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: not an address (a scheme Dask does not know)
        raise DaskUnavailable(f"cannot reach the Dask scheduler at {address} ({exc}); start it with `dask scheduler` "
                              f"and workers with `dask worker {address} --nthreads 1`, or correct --dask "
                              "(the dask_address parameter of a deployment; tcp://host:8786)") from None
    try:
        client.wait_for_workers(1, timeout=wait_seconds)
    except TimeoutError:
        raise DaskUnavailable(f"the Dask scheduler at {address} has no worker (waited {wait_seconds:g} s); start "
                              f"some with `dask worker {address} --nthreads 1` on the machines that should send") \
            from None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    remote = remote_workers(api_url, workers)
    if remote:
        raise DaskUnavailable(f"Dask workers on other machines ({', '.join(sorted(remote))}) cannot report to this "
                              f"flow's Prefect API at {api_url} (this machine's loopback: a temporary server); "
                              "start a Prefect server they can reach (`prefect server start --host 0.0.0.0`) and set "
                              "PREFECT_API_URL to it on the flow's machine and on every worker")
    return sum(int(info.get("nthreads", 1)) for info in workers.values())


def remote_workers(api_url: str, workers: Iterable[str]) -> list[str]:
    """The workers (``tcp://host:port``) not on this machine, when the Prefect API listens on loopback only."""
    import ipaddress
    from urllib.parse import urlparse

    host = urlparse(api_url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return []
    local = _local_addresses()
    return [worker for worker in workers if (urlparse(worker).hostname or "") not in local]


def _local_addresses() -> set[str]:
    """This machine's addresses: loopback, its name, every interface's."""
    import socket

    import psutil  # comes with distributed

    found = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
    for addresses in psutil.net_if_addrs().values():
        found.update(a.address.split("%", 1)[0] for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6))
    return found


def release_everywhere(client: Any, run_id: str, timeout: float = 30.0) -> int:
    """Release what each Dask worker kept for the run (``forget_run``); how many runs were released.

    One small task per worker, pinned to it. Best effort: a worker that does not answer keeps its
    connections until it gets another run's batch or exits, which sends nothing.
    """
    futures = [client.submit(forget_run, run_id, workers=[address], allow_other_workers=False, pure=False)
               for address in client.scheduler_info(n_workers=-1)["workers"]]
    released = 0
    for future in futures:
        try:
            released += future.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - best effort (see above)
            future.cancel()
    return released


def settle_lost_batches(run: Run) -> None:
    """After every batch is done: touches still in flight were left by a worker that died mid-batch.

    Dask runs such a batch again elsewhere (the run's own locks then turn its people away), so the
    run finishes; what the dead worker had handed to a provider becomes unknown (never resent
    blindly), what it had only claimed is released for the next run.
    """
    unknown, released = ledger_runs.settle(run.engine, run.run_id, reason="worker_lost")
    if unknown or released:
        run.counts.update({"unknown_from_lost_workers": unknown, "released_from_lost_workers": released})


def run_in_workers(run: Run, page_size: int, workers: int) -> None:
    """Process the segment's batches in ``workers`` processes and add up their counts."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ref = RunRef.local(run, workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent) as pool:
        feed_pool(run, page_size, workers, lambda page: pool.submit(pooled_batch, ref, page))

"""End-to-end email campaign throughput: select, decide, claim, render, send to a loopback SMTP sink, record.

    python benchmarks/campaign_bench.py [--customers 100000] [--connections 4] [--postgres URL]
                                        [--skip-sqlite] [--workers 2] [--repeat 3] [--prefect-sample 5000]
                                        [--dask 2]

For each database: a fresh base of N customers with an email and a marketing consent is written
straight into the tables; the campaign runs through ``flows.engine.run_campaign`` (the engine the
Prefect flow drives) against postfix's ``smtp-sink``; then a bare aiosmtplib loop sends N
pre-rendered messages to the same sink over the same number of connections. Reported: touches/s,
the bare rate, their ratio, and peak memory (RSS) of the run. ``--prefect-sample`` also runs a
smaller base through the Prefect flow (ephemeral server) and the engine directly to show the
flow's overhead. ``--dask N`` instead starts a Prefect server, a local Dask scheduler and N ``dask
worker --nthreads 1`` processes and compares, on each database, ``touchflow campaign run --dask``
(the flow's batches on those workers) with ``campaign run --direct`` (the engine in one process)
and ``--direct --workers N`` (a local pool): touches/s, the ratios, peak RSS and CPU seconds per
process (sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.email_bench import bare_run, free_port, start_sink  # noqa: E402
import crm.ledger.audit  # noqa: E402
from crm.ledger.audit import seal  # noqa: E402
from crm.db import make_engine, normalize_url, upgrade  # noqa: E402
from flows.engine import run_campaign  # noqa: E402
from flows.spec import CampaignSpec  # noqa: E402
from touchflow.settings import Settings  # noqa: E402

DATA = Path(__file__).with_name("data")
NOON = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def load(engine, n: int) -> None:
    stamp = datetime.now(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    customers = ((i, f"B{i:07d}", f"Клиент {i}", f"Имя{i}", '{"bench": "yes"}', i, stamp, stamp) for i in range(1, n + 1))
    contacts = ((i, i, "email", f"c{i}@example.com", f"c{i}@example.com", "active", stamp, stamp)
                for i in range(1, n + 1))
    consents = ((i, i, "email", "marketing", True, "2025-01-01 10:00:00.000000", "bench", stamp)
                for i in range(1, n + 1))
    tables = {
        "customers": ("id, external_id, name, first_name, attributes, person_id, created_at, updated_at", customers),
        "contact_points": ("id, customer_id, kind, raw, value, status, created_at, updated_at", contacts),
        "consents": ("id, customer_id, channel, purpose, granted, at, source, recorded_at", consents),
    }
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for table, (columns, rows) in tables.items():
            if engine.dialect.name == "postgresql":
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            else:
                marks = ", ".join("?" for _ in columns.split(","))
                while True:
                    chunk = list(itertools.islice(rows, 50000))
                    if not chunk:
                        break
                    cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", chunk)
        if engine.dialect.name == "postgresql":
            cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def spec() -> CampaignSpec:
    return CampaignSpec(name="bench", rule={"attribute": "bench", "equals": "yes"}, purpose="marketing",
                        offer="bench-1", template="winback", channels=["email"], keep_body=False,
                        policy={"quiet_hours": "off"}, offer_values={"discount_percent": 15})


def fresh(url: str | None, label: str, n: int):
    if url is None:
        db = DATA / f"campaign-{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        engine = make_engine(f"sqlite:///{db}")
        cleanup = None
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        engine = make_engine(f"{normalize_url(url)}?options=-csearch_path%3D{schema}")

        def cleanup():
            engine.dispose()
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    upgrade(engine)
    load(engine, n)
    seal(engine)  # as an import does: the campaign's own seal then covers only what the campaign wrote
    return engine, cleanup


@contextmanager
def timed_seal(times: list[float]):
    """Record how long the run's closing seal (``crm.ledger.audit.seal``, called by ``finish``) takes."""
    original = crm.ledger.audit.seal

    def seal_and_time(engine, **kwargs):
        started = time.perf_counter()
        try:
            return original(engine, **kwargs)
        finally:
            times.append(time.perf_counter() - started)
    crm.ledger.audit.seal = seal_and_time
    try:
        yield
    finally:
        crm.ledger.audit.seal = original


def measure(url: str | None, label: str, n: int, connections: int, port: int, workers: int = 1,
            repeat: int = 1, pipelining: bool = False, default_pool: bool = False) -> dict:
    """Run the campaign on a fresh base and the bare loop, ``repeat`` times in turn; keep the best of each."""
    best_seconds = best_bare = float("inf")
    sent = 0
    sealing: list[float] = []
    for _ in range(repeat):
        engine, cleanup = fresh(url, label, n)
        pool = {} if default_pool else {"smtp_pool_size": max(1, connections // workers),
                                        "smtp_max_connections": max(1, connections // workers)}
        settings = Settings(email_transport="smtp", smtp_host="127.0.0.1", smtp_port=port, send_attempts=1,
                            smtp_pipelining=pipelining, **pool, database_url=engine.url.render_as_string(hide_password=False))
        started = time.perf_counter()
        with timed_seal(sealing):
            summary = run_campaign(engine, spec(), now=NOON, settings=settings, page_size=5000, workers=workers)
        elapsed = time.perf_counter() - started
        if elapsed < best_seconds:
            best_seconds, best_seal = elapsed, sealing[-1]
        sent = summary["channels"].get("email", {}).get("sent", 0)
        best_bare = min(best_bare, asyncio.run(bare_run(port, n, connections)))
        if cleanup:
            cleanup()
    peak = round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                     resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)
    return {"customers": n, "workers": workers, "repeat": repeat, "pipelining": pipelining,
            "campaign_connections": "default (4, up to 64)" if default_pool else connections, "sent": sent, "seconds": round(best_seconds, 1),
            "touches_per_second": round(sent / best_seconds), "bare_per_second": round(n / best_bare),
            "ratio": round((sent / best_seconds) / (n / best_bare), 3), "closing_seal_seconds": round(best_seal, 1),
            "peak_rss_mb_after_run": peak}


def prefect_overhead(n: int, port: int, connections: int, workers: int = 1, batch: int = 5000,
                     repeat: int = 1) -> dict:
    """The same campaign on SQLite through the engine directly and through the Prefect flow, ``repeat`` times in
    turn (each on a fresh base of its own), best of each: the flow reads the environment, as a user's does."""
    import os
    import tempfile

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="touchflow-bench-prefect-"))
    from flows.campaign import campaign_flow
    from touchflow.settings import get_settings, reset_settings

    pool = max(1, connections // workers)
    spec_path = DATA / "bench-spec.yaml"
    spec_path.write_text("name: bench\npurpose: marketing\noffer: bench-1\ntemplate: winback\nchannels: [email]\n"
                         "rule: {attribute: bench, equals: 'yes'}\nkeep_body: false\npolicy: {quiet_hours: 'off'}\n",
                         encoding="utf-8")
    from prefect import flow

    started = time.perf_counter()
    flow(name="bench-warm-up")(lambda: None)()  # starts the temporary server (if none runs), kept for the process
    server_start = time.perf_counter() - started
    direct, through_flow = [], []
    for turn in range(repeat):
        for label, times in (("direct", direct), ("flow", through_flow)):
            engine, _ = fresh(None, f"prefect-{label}-{turn}", n)  # a file of its own: the flow keeps its engine
            os.environ.update({"TOUCHFLOW_DATABASE_URL": str(engine.url), "TOUCHFLOW_EMAIL_TRANSPORT": "smtp",
                               "TOUCHFLOW_SMTP_PORT": str(port), "TOUCHFLOW_SMTP_POOL_SIZE": str(pool),
                               "TOUCHFLOW_SEND_ATTEMPTS": "1"})
            reset_settings()
            started = time.perf_counter()
            if label == "direct":
                run_campaign(engine, spec(), now=NOON, settings=get_settings(), page_size=batch, workers=workers)
            else:
                campaign_flow(str(spec_path), batch_size=batch, workers=workers)
            times.append(time.perf_counter() - started)
            print(f"prefect sample, {label} {turn + 1}: {times[-1]:.1f} s", flush=True)
            engine.dispose()
    best_direct, best_flow = min(direct), min(through_flow)
    bare = asyncio.run(bare_run(port, n, connections))
    return {"customers": n, "workers": workers, "repeat": repeat, "direct_seconds": round(best_direct, 1),
            "direct_touches_per_second": round(n / best_direct), "flow_seconds": round(best_flow, 1),
            "flow_touches_per_second": round(n / best_flow), "bare_per_second": round(n / bare),
            "direct_ratio": round(bare / best_direct, 3), "flow_ratio": round(bare / best_flow, 3),
            "overhead_seconds": round(best_flow - best_direct, 1),
            "overhead_share": round((best_flow - best_direct) / best_direct, 3),
            "all_direct_seconds": [round(t, 1) for t in direct], "all_flow_seconds": [round(t, 1) for t in through_flow],
            "server_start_seconds": round(server_start, 1), "batch_size": batch, "batches": -(-n // batch)}


class Peaks:
    """Peak RSS (MB) per named process (and, apart, its children), sampled every 0.2 s while a phase runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil  # comes with distributed

        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peaks: dict[str, float] = {}
        self.cpu: dict[str, list[float]] = {}  # CPU seconds (user + system) at the first and the last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for name, process in self.processes.items():
                found = {}
                try:
                    found[name] = process.memory_info().rss
                    children = process.children(recursive=True)
                    times = process.cpu_times()
                except Exception:  # noqa: BLE001 - not started yet, or ended
                    continue
                self.cpu.setdefault(name, [times.user + times.system] * 2)[1] = times.user + times.system
                for child in children:
                    try:
                        found[f"{name} (children)"] = found.get(f"{name} (children)", 0) + child.memory_info().rss
                    except Exception:  # noqa: BLE001 - a child that just ended
                        pass
                for key, rss in found.items():
                    self.peaks[key] = max(self.peaks.get(key, 0), rss / 2**20)
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> "Peaks":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, int]:
        return {name: round(mb) for name, mb in sorted(self.peaks.items())}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time each named process used during the phase (its children not counted)."""
        return {name: round(last - first, 1) for name, (first, last) in sorted(self.cpu.items())}


@contextmanager
def prefect_server():
    """A Prefect server on a free port in 8000–8999 (``prefect server start``), its API URL; stopped on the way out."""
    import httpx

    port = next(p for p in range(8000 + os.getpid() % 900, 9000) if _free(p))
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHFLOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=tempfile.mkdtemp(prefix="touchflow-bench-prefect-"), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"the Prefect server at {api} did not start")
            time.sleep(0.5)
        yield api, server.pid
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@contextmanager
def dask_cluster(n: int, port: int, connections: int, api: str):
    """A local scheduler and ``n`` workers (``--nthreads 1``), each sending to the sink over its share of connections.

    The workers' environment names no database: they use the run's (the same machine). Every
    process is ended on the way out.
    """
    from distributed import Client

    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHFLOW_", "PREFECT_"))}
    base.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_API_URL=api,
                PREFECT_HOME=tempfile.mkdtemp(prefix="touchflow-bench-dask-"))
    workers_env = {**base, "TOUCHFLOW_EMAIL_TRANSPORT": "smtp", "TOUCHFLOW_SMTP_PORT": str(port),
                   "TOUCHFLOW_SMTP_POOL_SIZE": str(max(1, connections // n)), "TOUCHFLOW_SEND_ATTEMPTS": "1"}
    scheduler_port = free_port()
    address = f"tcp://127.0.0.1:{scheduler_port}"
    command = [sys.executable, "-m", "dask"]
    started = [subprocess.Popen([*command, "scheduler", "--host", "127.0.0.1", "--port", str(scheduler_port),
                                 "--no-dashboard"], env=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for i in range(n):
            folder = tempfile.mkdtemp(prefix=f"touchflow-bench-worker{i}-")
            started.append(subprocess.Popen([*command, "worker", address, "--nthreads", "1", "--no-nanny",
                                             "--no-dashboard", "--local-directory", folder], cwd=folder,
                                            env=workers_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(n, timeout=120)
        yield address, {"scheduler": started[0].pid, **{f"worker{i}": p.pid for i, p in enumerate(started[1:], 1)}}
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def dask_versus_direct(url: str | None, label: str, n: int, connections: int, port: int, workers: int,
                       repeat: int = 1) -> dict:
    """``campaign run`` on ``workers`` Dask workers against ``campaign run --direct`` (one process); best of each.

    All as a user runs them (a fresh base each, the CLI in a process of its own, wall-clock
    including its start), the flow reporting to a running Prefect server (no temporary one). The
    local pool (``--direct --workers N``) is measured between them, for comparison.
    """
    spec_path = DATA / "bench-spec.yaml"
    spec_path.write_text("name: bench\npurpose: marketing\noffer: bench-1\ntemplate: winback\nchannels: [email]\n"
                         "rule: {attribute: bench, equals: 'yes'}\nkeep_body: false\npolicy: {quiet_hours: 'off'}\n",
                         encoding="utf-8")
    best: dict[str, dict] = {}
    with prefect_server() as (api, server_pid), dask_cluster(workers, port, connections, api) as (address, pids):
        for _ in range(repeat):
            for name, option in (("direct", ["--direct"]), ("pool", ["--direct", "--workers", str(workers)]),
                                 ("dask", ["--dask", address])):
                engine, cleanup = fresh(url, f"{label}-{name}", n)
                env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHFLOW_", "PREFECT_"))}
                env.update(TOUCHFLOW_DATABASE_URL=engine.url.render_as_string(hide_password=False),
                           TOUCHFLOW_EMAIL_TRANSPORT="smtp", TOUCHFLOW_SMTP_PORT=str(port),
                           TOUCHFLOW_SMTP_POOL_SIZE=str(connections // workers if name == "pool" else connections),
                           TOUCHFLOW_SEND_ATTEMPTS="1",
                           PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
                started = time.perf_counter()
                process = subprocess.Popen([sys.executable, "-m", "touchflow.cli", "campaign", "run", str(spec_path),
                                            "--batch-size", "5000", "--json", *option], env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                roots = {"campaign run": process.pid, **({**pids, "prefect server": server_pid} if name == "dask"
                                                         else {})}
                with Peaks(roots) as peaks:
                    out, err = process.communicate()
                seconds = time.perf_counter() - started
                if process.returncode != 0:
                    raise RuntimeError(f"campaign run {' '.join(option)} failed: {err[-2000:]}")
                _keep_best(best, name, json.loads(out), seconds, peaks)
                if cleanup:
                    cleanup()
                engine.dispose()
    return {"customers": n, "dask_workers": workers, "repeat": repeat, **best,
            "ratio": round(best["dask"]["touches_per_second"] / best["direct"]["touches_per_second"], 3),
            "pool_ratio": round(best["pool"]["touches_per_second"] / best["direct"]["touches_per_second"], 3)}


def _keep_best(best: dict, name: str, summary: dict, seconds: float, peaks: Peaks) -> None:
    sent = summary["channels"].get("email", {}).get("sent", 0)
    result = {"sent": sent, "seconds": round(seconds, 1), "touches_per_second": round(sent / seconds),
              "peak_rss_mb": peaks.report(), "cpu_seconds": peaks.cpu_seconds(),
              "batches_by_worker": summary["other"].get("batches_by_worker")}
    print(name, result, flush=True)
    if name not in best or seconds < best[name]["seconds"]:
        best[name] = result


def start_relay(sink_port: int, delay_ms: float) -> tuple[subprocess.Popen, int]:
    """``delayproxy`` in front of the sink (a relay ``delay_ms`` away each way); its process and port."""
    binary = DATA / "delayproxy"
    source = Path(__file__).resolve().parents[2] / "shared" / "tools" / "delayproxy.c"
    if not binary.exists():
        subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    port = free_port()
    process = subprocess.Popen([str(binary), "127.0.0.1", str(port), "127.0.0.1", str(sink_port),
                                str(int(delay_ms))])
    time.sleep(0.3)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--postgres")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--prefect-sample", type=int, default=0,
                        help="also run this many customers through the Prefect flow and the engine directly")
    parser.add_argument("--prefect-batch", type=int, default=5000, help="customers per task in the Prefect sample")
    parser.add_argument("--prefect-server", action="store_true",
                        help="run the Prefect sample against a running server (as `prefect server start` keeps one), "
                             "not a temporary one")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (connections are shared)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternate campaign and bare runs this many times; best of each (the machine is noisy)")
    parser.add_argument("--dask", type=int, default=0, metavar="N",
                        help="start a local Dask scheduler and N workers (--nthreads 1); compare the flow on them "
                             "with the engine in one process")
    parser.add_argument("--delay-ms", type=float, default=0,
                        help="put a relay this many ms away (each way) in front of the sink: ../shared/tools/"
                             "delayproxy, built into benchmarks/data on first use")
    parser.add_argument("--pipelining", action="store_true",
                        help="the campaign sends with SMTP pipelining (TOUCHFLOW_SMTP_PIPELINING); the bare loop "
                             "stays aiosmtplib's, which cannot pipeline")
    parser.add_argument("--default-pool", action="store_true",
                        help="the campaign with the default SMTP settings (4 connections growing up to 64), the bare "
                             "loop with --connections")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    port = free_port()
    sink = start_sink("smtp-sink", port)
    relay = None
    if args.delay_ms:
        relay, port = start_relay(port, args.delay_ms)
    report: dict = {"delay_ms_each_way": args.delay_ms, "connections": args.connections}
    try:
        if args.dask:  # the flow on N Dask workers against the engine in one process, on each database
            databases = ([("sqlite", None)] if not args.skip_sqlite else []) + \
                ([("postgresql", args.postgres)] if args.postgres else [])
            for name, url in databases:
                report[f"dask_{name}"] = dask_versus_direct(url, f"dask-{name}", args.customers, args.connections,
                                                            port, args.dask, args.repeat)
                print(name, json.dumps(report[f"dask_{name}"]), flush=True)
        elif not args.skip_sqlite:
            report["sqlite"] = measure(None, "sqlite", args.customers, args.connections, port, args.workers,
                                       args.repeat, args.pipelining, args.default_pool)
            print("sqlite", report["sqlite"], flush=True)
        if args.postgres and not args.dask:
            report["postgresql"] = measure(args.postgres, "pg", args.customers, args.connections, port, args.workers,
                                           args.repeat, args.pipelining, args.default_pool)
            print("postgresql", report["postgresql"], flush=True)
        if args.prefect_sample and not args.dask and args.prefect_server:
            with prefect_server() as (api, _):
                os.environ["PREFECT_API_URL"] = api
                report["prefect_running_server"] = prefect_overhead(args.prefect_sample, port, args.connections,
                                                                   args.workers, args.prefect_batch, args.repeat)
        elif args.prefect_sample and not args.dask:
            report["prefect"] = prefect_overhead(args.prefect_sample, port, args.connections, args.workers,
                                                args.prefect_batch, args.repeat)
    finally:
        sink.kill()
        if relay is not None:
            relay.kill()
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

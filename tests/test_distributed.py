"""A campaign's batches on a Dask cluster: a real scheduler and two real workers, each standing for a machine.

Each worker runs in its own folder with its own environment: the database URL, its own SMTP relay
and password, nothing inherited from the flow. The flow (``touchflow campaign run --dask``, its
own temporary Prefect server) pages the segment and feeds the workers; what travels to them is a
``RunRef``, which holds no secret and no database password.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crm.models import CampaignRun, Touch
from tests.servers import SmtpBehaviour, SmtpServer, free_port
from tests.test_concurrency import build

ROOT = Path(__file__).resolve().parents[1]
SPEC = ("name: spread\npurpose: marketing\noffer: spread-1\ntemplate: winback\nchannels: [email]\n"
        "rule: {field: name, contains: Клиент}\npolicy: {quiet_hours: 'off'}\n")
SIGNING_KEY = "a-signing-key-all-machines-share"


def _machine_env(home: Path, **settings: str) -> dict[str, str]:
    """An environment standing for another machine: no touchflow or Prefect variable of this one, its own homes."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TOUCHFLOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               HOME=str(home))
    env.update({f"TOUCHFLOW_{key.upper()}": value for key, value in settings.items()})
    return env


def _stop(process: subprocess.Popen) -> None:
    """End a process this test started, and its own process group (started in a session of its own)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextmanager
def dask_cluster(root: Path, workers: list[dict[str, str]]):
    """``dask scheduler`` and one ``dask worker --nthreads 1`` per environment, each in its own folder.

    Yields (address, worker processes); every process is ended on the way out, pass or fail.
    """
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    started: list[subprocess.Popen] = []
    try:
        home = root / "scheduler"
        home.mkdir(parents=True)
        started.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            cwd=home, env=_machine_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        for i, env in enumerate(workers):
            home = root / f"worker-{i}"
            home.mkdir()
            started.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--name", f"machine-{i}", "--local-directory", str(home / "dask")],
                cwd=home, env={**_machine_env(home), **env}, stdout=(home / "log").open("wb"),
                stderr=subprocess.STDOUT, start_new_session=True))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(len(workers), timeout=90)
        yield address, started[1:]
    finally:
        for process in reversed(started):
            _stop(process)


def _flow_env(db_url: str, **settings: str) -> dict[str, str]:
    env = _machine_env(Path(tempfile.mkdtemp(prefix="touchflow-dask-flow-")), database_url=db_url, **settings)
    return env


def test_a_campaign_on_two_dask_workers_contacts_each_customer_once(engine, db_url, tmp_path):
    """Each worker sends through its own relay with its own password; both run batches; the summary is the history's."""
    build(engine, tmp_path, 400)
    spec = tmp_path / "spread.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    secrets = ["worker-zero-smtp-password", "worker-one-smtp-password"]
    with SmtpServer(SmtpBehaviour(login=("touchflow", secrets[0]))) as relay0, \
            SmtpServer(SmtpBehaviour(login=("touchflow", secrets[1]))) as relay1:
        relays = [relay0, relay1]
        machines = [{f"TOUCHFLOW_{k.upper()}": v for k, v in {
            "database_url": db_url, "email_transport": "smtp", "smtp_host": "127.0.0.1",
            "smtp_port": str(relay.port), "smtp_username": "touchflow", "smtp_password": secret,
            "send_attempts": "1", "secret_key": SIGNING_KEY}.items()} for relay, secret in zip(relays, secrets)]
        with dask_cluster(tmp_path / "machines", machines) as (address, workers):
            # the flow's own password is wrong for both relays: had its settings travelled, no mail would go
            env = _flow_env(db_url, email_transport="smtp", smtp_port=str(relay0.port), smtp_username="touchflow",
                            smtp_password="the-flow-machines-own-password", send_attempts="1",
                            secret_key=SIGNING_KEY)
            done = subprocess.run([sys.executable, "-m", "touchflow.cli", "campaign", "run", str(spec), "--dask",
                                   address, "--batch-size", "100", "--json"], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=300)
            pids = [process.pid for process in workers]
        per_relay = [Counter(rcpt for envelope in relay.messages for rcpt in envelope.rcpt_tos) for relay in relays]
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    per_recipient = per_relay[0] + per_relay[1]
    assert len(per_recipient) == 400 and set(per_recipient.values()) == {1}        # each customer exactly once
    assert all(per_relay), "a worker sent nothing"                                  # both machines sent mail
    split = summary["other"]["batches_by_worker"]
    assert sorted(int(worker.rsplit(":", 1)[1]) for worker in split) == sorted(pids)  # both workers ran batches
    assert sum(split.values()) == 4
    for i in range(2):   # Prefect task runs, one per batch, on each machine; their logs reached the flow's server
        log = (tmp_path / "machines" / f"worker-{i}" / "log").read_text(encoding="utf-8", errors="replace")
        assert "Task run 'campaign-batch-on-dask" in log and "Error logging to API" not in log, log[-2000:]
    with engine.connect() as conn:
        touches = Touch.__table__
        statuses = Counter(dict(conn.execute(select(touches.c.status, func.count())
                                             .where(touches.c.run_id == summary["run_id"])
                                             .group_by(touches.c.status)).all()))
        run = conn.execute(select(CampaignRun.__table__).where(CampaignRun.__table__.c.id == summary["run_id"])).one()
    assert statuses == {"sent": 400}                                                # the history
    assert summary["selected"] == 400 and summary["channels"] == {"email": {"sent": 400}}
    assert run.status == "finished" and run.summary["channels"] == summary["channels"]
    assert sum(per_relay[0].values()) == sum(n for worker, n in split.items() if worker.endswith(f":{pids[0]}")) * 100


def test_a_worker_killed_mid_batch_leaves_nobody_mailed_twice_nor_stuck(engine, db_url, tmp_path):
    """SIGKILL a worker mid-send: Dask gives its batch to the other worker, the run finishes with the dead worker's
    touches settled (sent ones unknown, claimed ones released), and the next run mails exactly the released ones."""
    build(engine, tmp_path, 400)
    spec = tmp_path / "spread.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    with SmtpServer(SmtpBehaviour(stall_seconds=0.05)) as relay0, SmtpServer(SmtpBehaviour()) as relay1:
        relays = [relay0, relay1]
        machines = [{f"TOUCHFLOW_{k.upper()}": v for k, v in {
            "database_url": db_url, "email_transport": "smtp", "smtp_port": str(relay.port), "smtp_pool_size": "1",
            "send_attempts": "1"}.items()} for relay in relays]
        with dask_cluster(tmp_path / "machines", machines) as (address, workers):
            command = [sys.executable, "-m", "touchflow.cli", "campaign", "run", str(spec), "--dask", address,
                       "--batch-size", "100", "--json"]
            env = _flow_env(db_url)
            flow = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            try:
                deadline = time.time() + 120
                while len(relay0.messages) < 10 and time.time() < deadline and flow.poll() is None:
                    time.sleep(0.02)
                os.kill(workers[0].pid, signal.SIGKILL)
                out, err = flow.communicate(timeout=300)
            finally:
                if flow.poll() is None:
                    flow.kill()
                    flow.wait(10)
            assert flow.returncode == 0, err[-3000:]
            first = json.loads(out)
            with engine.connect() as conn:
                touches = Touch.__table__
                left = conn.execute(select(func.count()).where(touches.c.run_id == first["run_id"],
                                                               touches.c.status.in_(["claimed", "sending"])))
                assert left.scalar_one() == 0                               # nothing stuck in flight
            again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        per_recipient = Counter(rcpt for relay in relays for envelope in relay.messages for rcpt in envelope.rcpt_tos)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 10 <= sum(1 for e in relay0.messages) < 100
    assert first["other"]["released_from_lost_workers"] >= 1
    second = json.loads(again.stdout)
    assert second["channels"]["email"]["sent"] == first["other"]["released_from_lost_workers"]
    assert set(per_recipient.values()) == {1}                              # nobody mailed twice
    with engine.connect() as conn:
        final = Counter(conn.execute(select(touches.c.status).where(touches.c.status.in_(["sent", "unknown"])))
                        .scalars())
        people = conn.execute(select(func.count(func.distinct(touches.c.customer_id)))
                              .where(touches.c.status.in_(["sent", "unknown"]))).scalar_one()
    assert people == 400 and sum(final.values()) == 400                    # each ends with one live touch
    assert final["sent"] <= len(per_recipient) <= 400                      # unknown ones may or may not have arrived


def test_an_unreachable_scheduler_is_a_clear_error_and_the_run_ends_failed(tmp_path):
    """Nobody listens at the address: the command says so and how to fix it; the run is closed as failed."""
    from crm.db import make_engine, upgrade

    db_url = f"sqlite:///{tmp_path / 'touchflow.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    build(engine, tmp_path, 5)
    spec = tmp_path / "spread.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    address = f"tcp://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "touchflow.cli", "campaign", "run", str(spec), "--dask", address],
                          env=_flow_env(db_url), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"cannot reach the Dask scheduler at {address}" in done.stderr and "dask scheduler" in done.stderr
    with engine.connect() as conn:
        assert conn.execute(select(CampaignRun.__table__.c.status)).scalars().all() == ["failed"]
        assert conn.execute(select(func.count()).select_from(Touch.__table__)).scalar_one() == 0
    engine.dispose()


# RunRef: what travels to a worker, and what a worker takes from its own configuration

PLANTED = {"smtp_password": "planted-smtp-password-1", "twilio_auth_token": "planted-twilio-token-2",
           "telegram_bot_token": "123456:planted-telegram-token-3", "telegram_webhook_secret": "planted-hook-4",
           "secret_key": "planted-signing-key-5", "inbound_email_secret": "planted-inbound-8",
           "imap_password": "planted-imap-9"}


def _run_on(engine, settings, run_id: str = "r" * 32):
    from flows.run import Run, default_policy
    from tests.test_campaigns import spec

    campaign = spec(name="travel")
    return Run(engine=engine, spec=campaign, run_id=run_id, now=datetime(2026, 1, 5, 9, tzinfo=timezone.utc),
               as_of=date(2026, 1, 5), policy=campaign.contact_policy(default_policy(settings)),
               settings=settings, key=settings.secret_key.get_secret_value().encode())


def test_a_run_ref_pickles_without_a_secret_or_the_database_password(tmp_path):
    from sqlalchemy import create_engine

    from flows.run import RunRef
    from touchflow.settings import SECRETS, Settings

    assert set(PLANTED) == set(SECRETS)   # every secret setting is planted
    url = "postgresql+psycopg://mailer:planted-db-password-6@db.example:5432/crm?sslpassword=planted-ssl-7"
    settings = Settings(database_url=url, outbox_dir=str(tmp_path / "outbox"), send_attempts=2, **PLANTED)
    ref = RunRef.of(_run_on(create_engine(url), settings))
    data = pickle.dumps(ref)
    for value in [*PLANTED.values(), "planted-db-password-6", "planted-ssl-7"]:
        assert value.encode() not in data, value
    assert ref.database == "postgresql+psycopg://mailer@db.example:5432/crm"
    assert ref.chosen["outbox_dir"] == str(tmp_path / "outbox") and ref.chosen["send_attempts"] == 2


def test_a_worker_takes_secrets_and_database_from_its_own_configuration(engine, db_url, tmp_path, monkeypatch):
    """The run's choices travel; secrets are the worker's; a worker on another database or key refuses to work."""
    from crm.db import make_engine, upgrade
    from crm.ledger.runs import open_run
    from flows.run import RunRef
    from touchflow.errors import ConfigError
    from touchflow.settings import Settings, reset_settings

    settings = Settings(email_transport="file", outbox_dir=str(tmp_path / "outbox"), **PLANTED)
    run = _run_on(engine, settings)
    open_run(engine, run.run_id, run.spec.name, dry_run=False, now=run.now, lease_seconds=60)
    ref = pickle.loads(pickle.dumps(RunRef.of(run)))
    monkeypatch.setenv("TOUCHFLOW_SMTP_PASSWORD", "the-workers-own-password")
    monkeypatch.setenv("TOUCHFLOW_SECRET_KEY", PLANTED["secret_key"])
    monkeypatch.delenv("TOUCHFLOW_DATABASE_URL", raising=False)
    reset_settings()
    try:
        opened = ref.open()      # no database configured here: the run's own (this machine's pool)
        assert opened.settings.outbox_dir == str(tmp_path / "outbox")
        assert opened.settings.smtp_password.get_secret_value() == "the-workers-own-password"
        assert opened.settings.twilio_auth_token is None and opened.key == run.key
        opened.engine.dispose()

        other = f"sqlite:///{tmp_path / 'other.db'}"
        upgrade(make_engine(other))
        monkeypatch.setenv("TOUCHFLOW_DATABASE_URL", other)   # this worker's configuration names another database
        reset_settings()
        with pytest.raises(ConfigError, match=f"run {run.run_id} of travel is not running in this worker's database"):
            ref.open()
        monkeypatch.setenv("TOUCHFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
        reset_settings()
        with pytest.raises(ConfigError, match="does not exist here; set TOUCHFLOW_DATABASE_URL"):
            ref.open()
        assert not (tmp_path / "nowhere" / "x.db").exists()

        monkeypatch.setenv("TOUCHFLOW_DATABASE_URL", db_url)
        monkeypatch.setenv("TOUCHFLOW_SECRET_KEY", "another-key")
        reset_settings()
        with pytest.raises(ConfigError, match="signs unsubscribe links with another key"):
            ref.open()
    finally:
        reset_settings()


def test_workers_on_other_machines_need_a_prefect_api_they_can_reach():
    """A temporary server listens on loopback: the flow refuses workers elsewhere instead of failing each batch."""
    from flows.workers import remote_workers

    here, there = "tcp://127.0.0.1:40001", "tcp://203.0.113.7:40002"   # 203.0.113.0/24: documentation addresses
    assert remote_workers("http://127.0.0.1:8123/api", [here, there]) == [there]
    assert remote_workers("http://localhost:8123/api", [here]) == []
    assert remote_workers("http://prefect.internal:4200/api", [here, there]) == []

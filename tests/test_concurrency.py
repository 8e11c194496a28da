"""Concurrent runs over overlapping segments, and a run killed with SIGKILL mid-send against a real SMTP server."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from crm.importing import import_file
from crm.models import CampaignRun, Touch
from crm.persons import refresh_persons
from tests.helpers import write_csv
from tests.servers import SmtpBehaviour, SmtpServer

ROOT = Path(__file__).resolve().parents[1]


def build(engine, tmp_path: Path, n: int) -> None:
    rows = [[f"K{i:03d}", f"Клиент {i}", f"k{i}@mail.ru", "a" if i % 2 else "b"] for i in range(n)]
    consents = [[f"K{i:03d}", "email", "marketing", "granted", "2025-01-01 10:00"] for i in range(n)]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "attr.group"],
                                               rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def _worker(url: str, name: str, rule: dict, outbox: str, barrier) -> None:
    from datetime import datetime, timezone

    from crm.db import make_engine
    from flows.engine import run_campaign
    from flows.spec import CampaignSpec
    from touchflow.settings import Settings

    engine = make_engine(url)
    spec = CampaignSpec(name=name, rule=rule, purpose="marketing", offer="shared-offer", template="winback",
                        channels=["email"], policy={"quiet_hours": "off"}, offer_values={"discount_percent": 5})
    barrier.wait()
    run_campaign(engine, spec, now=datetime.now(timezone.utc), page_size=7,
                 settings=Settings(email_transport="file", outbox_dir=outbox, send_attempts=1))


def test_concurrent_processes_over_overlapping_segments_contact_each_person_once(engine, db_url, tmp_path):
    build(engine, tmp_path, 60)
    rules = [{"attribute": "group", "in": ["a", "b"]}, {"attribute": "group", "equals": "a"},
             {"attribute": "group", "in": ["b", "a"]}, {"field": "name", "contains": "Клиент"}]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(rules))
    workers = [ctx.Process(target=_worker, args=(db_url, f"campaign-{i}", rule, str(tmp_path / "outbox"), barrier))
               for i, rule in enumerate(rules)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * len(rules)
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.__table__)).all()
    sent = Counter(row.customer_id for row in rows if row.status == "sent")
    assert len(sent) == 60 and set(sent.values()) == {1}
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 60
    others = Counter(row.reason for row in rows if row.status == "skipped")
    assert set(others) <= {"cooling_down", "same_person"} and sum(others.values()) == 60 * 4 - 60 - 30


def test_a_run_killed_mid_send_never_sends_twice(engine, db_url, tmp_path):
    """SIGKILL mid-send; a rerun at once leaves the dead run's people alone; one after its lease ran out settles them."""
    build(engine, tmp_path, 40)
    spec = tmp_path / "mail.yaml"
    spec.write_text("name: mail\npurpose: marketing\noffer: mail-1\ntemplate: winback\nchannels: [email]\n"
                    "rule: {field: name, contains: Клиент}\npolicy: {quiet_hours: 'off'}\n", encoding="utf-8")
    with SmtpServer(SmtpBehaviour(stall_seconds=0.15)) as server:
        env = {**os.environ, "TOUCHFLOW_DATABASE_URL": db_url, "TOUCHFLOW_EMAIL_TRANSPORT": "smtp",
               "TOUCHFLOW_SMTP_HOST": "127.0.0.1", "TOUCHFLOW_SMTP_PORT": str(server.port),
               "TOUCHFLOW_SMTP_POOL_SIZE": "1", "TOUCHFLOW_SEND_ATTEMPTS": "1", "TOUCHFLOW_RUN_LEASE_SECONDS": "8"}
        command = [sys.executable, "-m", "touchflow.cli", "campaign", "run", str(spec), "--direct",
                   "--batch-size", "100", "--json"]
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while len(server.messages) < 5 and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = time.time()
        delivered_before = len(server.messages)
        assert 5 <= delivered_before < 40
        at_once = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert at_once.returncode == 0, at_once.stderr
        assert len(server.messages) == delivered_before  # the dead run still held its people: nobody mailed
        assert time.time() < killed_at + 8, "the rerun took longer than the lease: make the lease longer"
        time.sleep(max(0.0, killed_at + 8.5 - time.time()))
        again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        per_recipient = Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)
    assert set(per_recipient.values()) == {1}
    settled = json.loads(again.stdout)["other"]
    assert settled["unknown_from_earlier_runs"] >= 1 and settled["released_from_earlier_runs"] >= 1
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.__table__.c.customer_id, Touch.__table__.c.status)).all()
        runs = dict(conn.execute(select(CampaignRun.__table__.c.id, CampaignRun.__table__.c.status)).all())
    assert sorted(runs.values()) == ["finished", "finished", "interrupted"]
    final = {}
    for customer_id, status in rows:
        if status in ("sent", "unknown"):
            assert customer_id not in final, "a person has two live touches"
            final[customer_id] = status
    statuses = Counter(final.values())
    # what was handed to the server when the run died is "unknown" (reported, never resent); what was only
    # claimed was released and sent by the run after the lease ran out; everyone ends with one live touch
    assert len(final) == 40 and statuses["unknown"] >= 1
    assert len(per_recipient) >= statuses["sent"] and len(per_recipient) <= 40
    assert len(per_recipient) >= 40 - statuses["unknown"]


def test_a_campaign_shared_among_worker_processes_contacts_each_person_once(engine, db_url, tmp_path):
    from datetime import datetime, timezone

    from flows.engine import run_campaign
    from flows.spec import CampaignSpec
    from touchflow.settings import Settings

    build(engine, tmp_path, 50)
    spec = CampaignSpec(name="parallel", rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                        offer="p-1", template="winback", channels=["email"], policy={"quiet_hours": "off"},
                        offer_values={"discount_percent": 5})
    summary = run_campaign(engine, spec, now=datetime.now(timezone.utc), page_size=7, workers=2,
                           settings=Settings(email_transport="file", outbox_dir=str(tmp_path / "out"),
                                             send_attempts=1, database_url=db_url))
    assert summary["selected"] == 50 and summary["channels"]["email"]["sent"] == 50
    assert len(list((tmp_path / "out" / "email").glob("*.eml"))) == 50
    with engine.connect() as conn:
        sent = Counter(conn.execute(select(Touch.__table__.c.customer_id)
                                    .where(Touch.__table__.c.status == "sent")).scalars())
    assert len(sent) == 50 and set(sent.values()) == {1}


def _call_worker(url: str, name: str, offer: str, barrier) -> None:
    from datetime import datetime, timezone

    from crm.db import make_engine
    from flows.engine import run_campaign
    from flows.spec import CampaignSpec
    from touchflow.settings import Settings

    engine = make_engine(url)
    spec = CampaignSpec(name=name, rule={"field": "name", "contains": "Клиент"}, purpose="service", offer=offer,
                        template="isp_tv_package", channels=["call"])
    barrier.wait()
    run_campaign(engine, spec, now=datetime.now(timezone.utc), page_size=5, settings=Settings(send_attempts=1))


def test_concurrent_call_campaigns_leave_one_open_task_per_person(engine, db_url, tmp_path):
    from sqlalchemy import func, insert

    from crm.models import CallTask, Manager

    rows = [[f"C{i:02d}", f"Клиент {i}", f"+7916100{i:04d}", "rep1" if i % 2 else "rep2"] for i in range(30)]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "phone", "manager"], rows))
    refresh_persons(engine)
    with engine.begin() as conn:
        conn.execute(insert(Manager.__table__).values(code="rep3", name="Третий", active=True))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    workers = [ctx.Process(target=_call_worker, args=(db_url, f"calls-{i}", f"offer-{i}", barrier)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    with engine.connect() as conn:
        per_person = conn.execute(select(CallTask.__table__.c.person_id, func.count())
                                  .group_by(CallTask.__table__.c.person_id)).all()
        skipped = Counter(conn.execute(select(Touch.__table__.c.reason)
                                       .where(Touch.__table__.c.status == "skipped")).scalars())
    assert len(per_person) == 30 and {count for _, count in per_person} == {1}
    assert skipped == {"open_call_task": 60}


def test_the_flow_with_workers_reports_to_its_own_temporary_server(engine, db_url, tmp_path):
    """``campaign run --workers 2`` through Prefect: one temporary server for the flow and its pool, one mail each."""
    import json
    import tempfile

    build(engine, tmp_path, 250)
    spec = tmp_path / "pooled.yaml"
    spec.write_text("name: pooled\npurpose: marketing\noffer: pooled-1\ntemplate: winback\nchannels: [email]\n"
                    "rule: {field: name, contains: Клиент}\npolicy: {quiet_hours: 'off'}\n", encoding="utf-8")
    with SmtpServer(SmtpBehaviour()) as server:
        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env.update({"TOUCHFLOW_DATABASE_URL": db_url, "TOUCHFLOW_EMAIL_TRANSPORT": "smtp",
                    "TOUCHFLOW_SMTP_HOST": "127.0.0.1", "TOUCHFLOW_SMTP_PORT": str(server.port),
                    "TOUCHFLOW_SEND_ATTEMPTS": "1", "PREFECT_HOME": tempfile.mkdtemp(prefix="touchflow-pool-"),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
        done = subprocess.run([sys.executable, "-m", "touchflow.cli", "campaign", "run", str(spec), "--workers", "2",
                               "--batch-size", "100", "--json"], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        per_recipient = Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["channels"] == {"email": {"sent": 250}}
    assert len(per_recipient) == 250 and set(per_recipient.values()) == {1}
    assert done.stderr.count("Starting temporary server") == 1, done.stderr
    assert done.stderr.count("campaign-batch-in-worker") >= 3  # one task per batch of 100, run in the pool


def _same_campaign_worker(url: str, port: int, barrier) -> None:
    from datetime import datetime, timezone

    from crm.db import make_engine
    from flows.engine import run_campaign
    from flows.spec import CampaignSpec
    from touchflow.settings import Settings

    spec = CampaignSpec(name="one-campaign", rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                        offer="one-offer", template="winback", channels=["email"], policy={"quiet_hours": "off"},
                        offer_values={"discount_percent": 5})
    barrier.wait()
    run_campaign(make_engine(url), spec, now=datetime.now(timezone.utc), page_size=5,
                 settings=Settings(email_transport="smtp", smtp_port=port, smtp_pool_size=2, send_attempts=1))


def test_four_runs_of_one_campaign_at_once_mail_each_person_once_and_record_it_truly(engine, db_url, tmp_path):
    """A schedule overlapping manual runs: each live run leaves the others' touches alone."""
    build(engine, tmp_path, 60)
    with SmtpServer(SmtpBehaviour(stall_seconds=0.01)) as server:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(4)
        runs = [ctx.Process(target=_same_campaign_worker, args=(db_url, server.port, barrier)) for _ in range(4)]
        for process in runs:
            process.start()
        for process in runs:
            process.join(180)
        per_recipient = Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)
    assert [p.exitcode for p in runs] == [0, 0, 0, 0]
    assert len(per_recipient) == 60 and set(per_recipient.values()) == {1}
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.__table__.c.customer_id, Touch.__table__.c.status,
                                   Touch.__table__.c.reason, Touch.__table__.c.address)).all()
        statuses = Counter(conn.execute(select(CampaignRun.__table__.c.status)).scalars())
    sent = Counter(row.address for row in rows if row.status == "sent")
    assert sent == per_recipient                                 # every delivered message is recorded as sent
    assert Counter(row.status for row in rows) == {"sent": 60, "skipped": 180}
    assert {row.reason for row in rows if row.status == "skipped"} <= {"cooling_down", "same_person"}
    assert statuses == {"finished": 4}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_a_pooled_run(db_url: str, tmp_path: Path, extra: list[str], env_extra: dict) -> tuple[int, int, int, int]:
    """SIGKILL ``campaign run --workers 2`` mid-send.

    Return (messages at the kill, a while later, its workers alive, its temporary Prefect servers alive).
    """
    spec = tmp_path / "pooled.yaml"
    spec.write_text("name: pooled\npurpose: marketing\noffer: pooled-1\ntemplate: winback\nchannels: [email]\n"
                    "rule: {field: name, contains: Клиент}\npolicy: {quiet_hours: 'off'}\n", encoding="utf-8")
    with SmtpServer(SmtpBehaviour(stall_seconds=0.05)) as server:
        env = {**os.environ, "TOUCHFLOW_DATABASE_URL": db_url, "TOUCHFLOW_EMAIL_TRANSPORT": "smtp",
               "TOUCHFLOW_SMTP_PORT": str(server.port), "TOUCHFLOW_SMTP_POOL_SIZE": "1",
               "TOUCHFLOW_SEND_ATTEMPTS": "1", "TOUCHFLOW_RUN_LEASE_SECONDS": "2", **env_extra}
        command = [sys.executable, "-m", "touchflow.cli", "campaign", "run", str(spec), "--workers", "2",
                   "--batch-size", "100", *extra]
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while len(server.messages) < 20 and time.time() < deadline:
            time.sleep(0.02)
        commands = {pid: (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
                    for pid in _children(process.pid)}
        workers = [pid for pid, line in commands.items() if "spawn_main" in line]
        servers = [pid for pid, line in commands.items() if "prefect.server.api.server" in line]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        at_kill = len(server.messages)
        time.sleep(1.5)
        later = len(server.messages)
        alive = sum(1 for pid in workers if _alive(pid))
        gone_by = time.time() + 5  # the server is stopped (SIGTERM, then SIGKILL after 2 s) once its owner is gone
        while any(_alive(pid) for pid in servers) and time.time() < gone_by:
            time.sleep(0.1)
        servers_alive = sum(1 for pid in servers if _alive(pid))
        for pid in servers:  # whatever the outcome, leave no server behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1.5)  # the lease (2 s) runs out
        again = subprocess.run([*command, "--direct"] if "--direct" not in command else command, env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr
        per_recipient = Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)
    assert len(workers) == 2 and set(per_recipient.values()) == {1}
    return at_kill, later, alive, servers_alive


def test_killing_a_run_kills_its_worker_processes(engine, db_url, tmp_path):
    """SIGKILL of ``--direct --workers 2``: its pool processes die at once, so nothing is sent behind its back."""
    build(engine, tmp_path, 200)
    at_kill, later, alive, _ = _kill_a_pooled_run(db_url, tmp_path, ["--direct"], {})
    assert alive == 0 and later - at_kill <= 2   # at most what was already on the wire


def test_killing_a_prefect_run_kills_its_pool_processes(engine, db_url, tmp_path):
    """The same through the Prefect flow's process pool; its temporary Prefect server does not outlive it either."""
    build(engine, tmp_path, 200)
    prefect = {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "DO_NOT_TRACK": "1"}
    at_kill, later, alive, servers_alive = _kill_a_pooled_run(db_url, tmp_path, [], prefect)
    assert alive == 0 and later - at_kill <= 2
    assert servers_alive == 0

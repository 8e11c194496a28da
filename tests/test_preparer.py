"""A run's pages prepared in a second process (``flows.preparer``) while the run's own process sends.

Against a real SMTP server (aiosmtpd) that takes its time over each message: the pages after
the first are read, decided, rendered and claimed by another process and everyone is mailed
once; a run killed with SIGKILL takes its preparer with it and the run after it mails nobody
twice; a preparer killed with SIGKILL while it prepares stops its run, and the next run mails
nobody twice; one killed before it has opened the run leaves the preparing to the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from crm.models import CampaignRun, Touch
from tests.servers import SmtpBehaviour, SmtpServer
from tests.test_concurrency import ROOT, build
from tests.test_pipeline import RUN, run_against_slow_smtp


def test_the_pages_after_the_first_are_prepared_in_another_process(engine, db_url, tmp_path):
    summary, per_recipient = run_against_slow_smtp(engine, db_url, tmp_path, name="apart", stall_seconds=0.05,
                                                   prepare_apart_from=0)
    assert summary["selected"] == 80 and summary["channels"]["email"]["sent"] == 80
    assert len(per_recipient) == 80 and set(per_recipient.values()) == {1}
    prepared_by = summary["other"]["pages_prepared_by"]  # host:pid → pages
    assert sum(prepared_by.values()) == 3  # the first page here, the three after it there
    assert all(int(who.rsplit(":", 1)[1]) != os.getpid() for who in prepared_by)
    with engine.connect() as conn:
        statuses = Counter(conn.execute(select(Touch.__table__.c.status)).scalars())
    assert statuses == {"sent": 80}


def test_the_preparer_works_with_the_settings_the_run_was_given(engine, db_url, tmp_path, monkeypatch):
    """A script's ``run_campaign(..., settings=...)`` whose environment names another database and another key: the
    preparer still opens the run (its database, its key) and prepares the pages, rather than the run doing it."""
    monkeypatch.setenv("TOUCHFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.setenv("TOUCHFLOW_SECRET_KEY", "not-the-run-s-key")
    summary, per_recipient = run_against_slow_smtp(engine, db_url, tmp_path, name="given", stall_seconds=0.02,
                                                   prepare_apart_from=0, secret_key="the-run-s-own-key")
    assert len(per_recipient) == 80 and set(per_recipient.values()) == {1}
    assert sum(summary["other"]["pages_prepared_by"].values()) == 3
    assert not (tmp_path / "elsewhere.db").exists()


def test_a_small_run_prepares_its_pages_itself(engine, db_url, tmp_path):
    """Below ``prepare_apart_from`` customers after the first page, no second process is started."""
    from flows.engine import run_campaign
    from flows.spec import CampaignSpec
    from touchflow.settings import Settings

    build(engine, tmp_path, 30)
    spec = CampaignSpec(name="small", rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                        offer="o-2", template="winback", channels=["email"], policy={"quiet_hours": "off"},
                        offer_values={"discount_percent": 5})
    outbox = tmp_path / "outbox"
    settings = Settings(email_transport="file", outbox_dir=str(outbox), send_attempts=1, database_url=db_url,
                        prepare_apart_from=25)
    summary = run_campaign(engine, spec, now=datetime.now(timezone.utc), page_size=10, settings=settings)
    assert summary["channels"]["email"]["sent"] == 30
    assert "pages_prepared_by" not in summary["other"]


def _env(db_url: str, port: int) -> dict[str, str]:
    return {**os.environ, "TOUCHFLOW_DATABASE_URL": db_url, "TOUCHFLOW_EMAIL_TRANSPORT": "smtp",
            "TOUCHFLOW_SMTP_HOST": "127.0.0.1", "TOUCHFLOW_SMTP_PORT": str(port), "TOUCHFLOW_SMTP_POOL_SIZE": "2",
            "TOUCHFLOW_SMTP_MAX_CONNECTIONS": "2", "TOUCHFLOW_SEND_ATTEMPTS": "1",
            "TOUCHFLOW_RUN_LEASE_SECONDS": "6", "TOUCHFLOW_PREPARE_APART_FROM": "0"}


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def _preparer_of(pid: int, deadline: float) -> int:
    """The run's preparer: its child running the pool's worker (the spawn's resource tracker is another child)."""
    while time.time() < deadline:
        for child in _children(pid):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in command:
                return child
        time.sleep(0.02)
    raise AssertionError("the run started no preparer")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _mailed_once(engine, server, total: int) -> dict[int, str]:
    """Nobody got two messages, and everyone ends with one live touch (sent, or unknown after a crash)."""
    per_recipient = Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)
    assert set(per_recipient.values()) == {1}
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.__table__.c.customer_id, Touch.__table__.c.status)).all()
    final: dict[int, str] = {}
    for customer_id, status in rows:
        if status in ("sent", "unknown"):
            assert customer_id not in final, "a person has two live touches"
            final[customer_id] = status
    assert len(final) == total
    return final


def test_a_run_killed_takes_its_preparer_with_it_and_nobody_is_mailed_twice(engine, db_url, tmp_path):
    build(engine, tmp_path, 40)
    with SmtpServer(SmtpBehaviour(stall_seconds=0.1)) as server:
        env = _env(db_url, server.port)
        command = [sys.executable, "-c", RUN]  # pages of 6: the first here, the rest in the preparer
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        preparer = _preparer_of(process.pid, time.time() + 60)
        deadline = time.time() + 60
        while len(server.messages) < 15 and time.time() < deadline:  # pages sent by the preparer's claims
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = time.time()
        while _alive(preparer) and time.time() < killed_at + 5:
            time.sleep(0.02)
        assert not _alive(preparer)  # it died with the run: nothing claims or sends for a dead run
        assert 15 <= len(server.messages) < 40
        time.sleep(max(0.0, killed_at + 6.5 - time.time()))
        again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        final = _mailed_once(engine, server, 40)
    settled = json.loads(again.stdout.splitlines()[-1])["other"]
    assert settled["unknown_from_earlier_runs"] >= 1
    assert len(server.messages) >= 40 - Counter(final.values())["unknown"]


def _touches(engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(Touch.__table__.c.id)).all())


def test_a_preparer_killed_while_it_prepares_stops_its_run_and_the_next_run_mails_nobody_twice(engine, db_url,
                                                                                               tmp_path):
    build(engine, tmp_path, 300)  # 50 pages of 6: the preparer is busy for a while after it opens the run
    with SmtpServer(SmtpBehaviour(stall_seconds=0.02)) as server:
        env = _env(db_url, server.port)
        command = [sys.executable, "-c", RUN]
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        preparer = _preparer_of(process.pid, time.time() + 60)
        deadline = time.time() + 60
        while _touches(engine) <= 6 and time.time() < deadline:  # the first page is this process's; then its claims
            time.sleep(0.01)
        os.kill(preparer, signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode != 0, stderr
        assert "the process preparing" in stderr and "died" in stderr, stderr
        assert len(server.messages) < 300
        again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        final = _mailed_once(engine, server, 300)
    with engine.connect() as conn:
        runs = sorted(conn.execute(select(CampaignRun.__table__.c.status)).scalars())
    assert runs == ["failed", "finished"]  # the first run ended itself: what it had claimed was released at once
    assert len(server.messages) >= 300 - Counter(final.values())["unknown"]


def test_a_preparer_that_dies_starting_leaves_the_preparing_to_the_run(engine, db_url, tmp_path):
    """Killed before it has opened the run (as a process that cannot start would die): the run prepares its pages
    itself, says why, and mails everyone once."""
    build(engine, tmp_path, 40)
    with SmtpServer(SmtpBehaviour(stall_seconds=0.1)) as server:
        env = _env(db_url, server.port)
        process = subprocess.Popen([sys.executable, "-c", RUN], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        os.kill(_preparer_of(process.pid, time.time() + 60), signal.SIGKILL)  # while it imports
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        assert "prepared in the sending process" in stderr and "did not start" in stderr, stderr
        summary = json.loads(stdout.splitlines()[-1])
        per_recipient = Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)
    assert summary["channels"]["email"]["sent"] == 40 and "pages_prepared_by" not in summary["other"]
    assert len(per_recipient) == 40 and set(per_recipient.values()) == {1}

"""A run's batches as one pipeline (``flows.pipeline``): the next batch goes out while the one before is in flight.

Against a real SMTP server (aiosmtpd) that takes its time over each message: the messages of a
page reach the server while the page before still has messages in flight, every customer is
mailed exactly once, and a run killed with SIGKILL in the overlap never has anyone mailed twice.
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

from sqlalchemy import func, select

from crm.models import CampaignRun, Touch, TouchEvent
from tests.servers import SmtpBehaviour, SmtpServer
from tests.test_concurrency import ROOT, build


def run_against_slow_smtp(engine, db_url, tmp_path, *, name: str, stall_seconds: float, workers: int = 1,
                          **settings) -> tuple[dict, Counter]:
    """80 customers mailed by campaign ``name`` in pages of 20 (by ``workers`` processes), over 4 connections to an
    aiosmtpd that takes ``stall_seconds`` over each message; the run's summary and the messages each recipient got."""
    from flows.engine import run_campaign
    from flows.spec import CampaignSpec
    from touchflow.settings import Settings

    build(engine, tmp_path, 80)
    spec = CampaignSpec(name=name, rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                        offer="o-1", template="winback", channels=["email"], policy={"quiet_hours": "off"},
                        offer_values={"discount_percent": 5})
    with SmtpServer(SmtpBehaviour(stall_seconds=stall_seconds)) as server:
        config = Settings(email_transport="smtp", smtp_host="127.0.0.1", smtp_port=server.port, smtp_pool_size=4,
                          smtp_max_connections=4, send_attempts=1, database_url=db_url, **settings)
        summary = run_campaign(engine, spec, now=datetime.now(timezone.utc), page_size=20, settings=config,
                               workers=workers)
        return summary, Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)


def test_the_next_page_is_sent_while_the_page_before_is_in_flight(engine, db_url, tmp_path):
    summary, per_recipient = run_against_slow_smtp(engine, db_url, tmp_path, name="overlap", stall_seconds=0.1)
    assert summary["selected"] == 80 and summary["channels"]["email"]["sent"] == 80
    assert len(per_recipient) == 80 and set(per_recipient.values()) == {1}
    touches, events = Touch.__table__.c, TouchEvent.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(select(touches.id, touches.customer_id, touches.status)).all()
        moves = conn.execute(select(events.id, events.touch_id, events.status)).all()
    assert Counter(row.status for row in rows) == {"sent": 80}
    page_of = {row.id: rank // 20 for rank, row in enumerate(sorted(rows, key=lambda r: r.customer_id))}
    first_sending = {page: min(m.id for m in moves if m.status == "sending" and page_of[m.touch_id] == page)
                     for page in range(4)}
    last_sent = {page: max(m.id for m in moves if m.status == "sent" and page_of[m.touch_id] == page)
                 for page in range(4)}
    # the ledger's order: a page's first touches were committed `sending` before the page before had all its
    # outcomes recorded (a batch that waited for the one before would record them all first)
    assert all(first_sending[page] < last_sent[page - 1] for page in range(1, 4)), (first_sending, last_sent)
    assert all(first_sending[page] < min(m.id for m in moves if m.status == "sent" and page_of[m.touch_id] == page)
               for page in range(4))  # and each touch is `sending` before it is sent


RUN = """
import json
from crm.db import make_engine
from flows.engine import run_campaign
from flows.spec import CampaignSpec
from touchflow.settings import get_settings

settings = get_settings()
spec = CampaignSpec(name="mail", rule={"field": "name", "contains": "Клиент"}, purpose="marketing", offer="mail-1",
                    template="winback", channels=["email"], policy={"quiet_hours": "off"},
                    offer_values={"discount_percent": 5})
print(json.dumps(run_campaign(make_engine(settings.database_url), spec, page_size=6, settings=settings), default=str))
"""


def test_a_run_killed_in_the_overlap_never_sends_twice(engine, db_url, tmp_path):
    """SIGKILL while a page is sent and the next ones are claimed; the run after the lease settles everyone once.

    The server takes 0.3 s over each message (about 7 a second on 2 connections, chunks of 4), so that preparing
    pages stays ahead of sending even on a loaded machine; the run is killed once the ledger shows touches
    claimed and not yet handed over."""
    build(engine, tmp_path, 40)
    with SmtpServer(SmtpBehaviour(stall_seconds=0.3)) as server:
        env = {**os.environ, "TOUCHFLOW_DATABASE_URL": db_url, "TOUCHFLOW_EMAIL_TRANSPORT": "smtp",
               "TOUCHFLOW_SMTP_HOST": "127.0.0.1", "TOUCHFLOW_SMTP_PORT": str(server.port),
               "TOUCHFLOW_SMTP_POOL_SIZE": "2", "TOUCHFLOW_SMTP_MAX_CONNECTIONS": "2",
               "TOUCHFLOW_SEND_ATTEMPTS": "1", "TOUCHFLOW_RUN_LEASE_SECONDS": "6"}
        command = [sys.executable, "-c", RUN]  # pages of 6 (the CLI takes batches of 100 at least)
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not (len(server.messages) >= 9 and _claimed(engine) >= 8) and time.time() < deadline:
            time.sleep(0.02)  # pages sent, and more than two chunks claimed ahead
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = time.time()
        delivered_before = len(server.messages)
        assert 9 <= delivered_before < 40
        time.sleep(max(0.0, killed_at + 6.5 - time.time()))
        again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        per_recipient = Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)
    assert set(per_recipient.values()) == {1}  # nobody mailed twice
    settled = json.loads(again.stdout.splitlines()[-1])["other"]
    # in flight when it died: `unknown`, never resent; claimed for the pages ahead, not handed over: released, sent once
    assert settled["unknown_from_earlier_runs"] >= 1 and settled["released_from_earlier_runs"] >= 1
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.__table__.c.customer_id, Touch.__table__.c.status)).all()
        runs = sorted(conn.execute(select(CampaignRun.__table__.c.status)).scalars())
    assert runs == ["finished", "interrupted"]
    final: dict[int, str] = {}
    for customer_id, status in rows:
        if status in ("sent", "unknown"):
            assert customer_id not in final, "a person has two live touches"
            final[customer_id] = status
    assert len(final) == 40  # everyone the segment selects ends with one live touch
    assert len(per_recipient) >= 40 - Counter(final.values())["unknown"]


def _claimed(engine) -> int:
    """Touches claimed and not yet marked ``sending``."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(Touch.__table__.c.status == "claimed")).scalar_one()

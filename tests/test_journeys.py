"""Journeys: steps per person through the contact policy — waits, branches, reruns, concurrent runners, a SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from crm.importing import import_file
from crm.models import CallTask, JourneyState, Touch
from crm.persons import refresh_persons
from flows.journeys import run_journey, wait_until
from flows.spec import SpecError, load_spec
from tests.helpers import run_json, write_csv
from tests.servers import SmtpBehaviour, SmtpServer
from touchflow.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MSK = ZoneInfo("Europe/Moscow")
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=MSK)

JOURNEY = """\
name: follow
kind: journey
rule: {field: name, contains: Клиент}
purpose: marketing
offer: follow-1
template: winback
channels: [email, sms]
offer_values: {discount_percent: 10}
policy: {quiet_hours: "off", cap_max: 5}
steps:
  - {id: email, send: {channels: [email]}}
  - {id: three_days, wait: {days: 3, at: "10:00"}}
  - {branch: {purchased: exit, opted_out: exit}}
  - {id: sms, send: {channels: [sms]}}
  - {id: seven_days, wait: {days: 7}}
  - {branch: {purchased: exit}}
  - {id: call, send: {channels: [call], template: isp_tv_package}}
"""


def build(engine, tmp_path: Path, n: int = 8) -> None:
    rows = [[f"J{i:02d}", f"Клиент {i}", f"j{i}@mail.ru", f"+7916{i:07d}", "R1"] for i in range(n)]
    consents = [[f"J{i:02d}", channel, "marketing", "granted", "2025-01-01 10:00"]
                for i in range(n) for channel in ("email", "sms", "call")]
    import_file(engine, "managers", write_csv(tmp_path / "m.csv", ["code", "name"], [["R1", "Анна Иванова"]]))
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone", "manager"],
                                               rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def journey_file(tmp_path: Path, text: str = JOURNEY) -> Path:
    folder = tmp_path / "campaigns"
    folder.mkdir(exist_ok=True)
    path = folder / "follow.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def settings(tmp_path: Path) -> Settings:
    return Settings(email_transport="file", sms_transport="file", outbox_dir=str(tmp_path / "outbox"),
                    send_attempts=1, campaigns_dir=str(tmp_path / "campaigns"))


def tick(engine, tmp_path: Path, now: datetime) -> dict:
    return run_journey(engine, load_spec(tmp_path / "campaigns" / "follow.yaml"), now=now, settings=settings(tmp_path))


def received(tmp_path: Path, channel: str) -> Counter:
    """Messages per recipient in the file outbox of ``channel``."""
    folder = tmp_path / "outbox" / channel
    if channel == "email":
        return Counter(next(line for line in path.read_text(encoding="utf-8").splitlines()
                            if line.startswith("To:"))[3:].strip() for path in folder.glob("*.eml"))
    import json
    return Counter(json.loads(path.read_text(encoding="utf-8"))["to"] for path in folder.glob("*.json"))


def buy(engine, tmp_path: Path, customer: str, day: str) -> None:
    import_file(engine, "purchases", write_csv(tmp_path / f"p-{customer}.csv",
                                               ["customer", "date", "product", "amount"],
                                               [[customer, day, "Тариф", "500"]]))


def opt_out(engine, tmp_path: Path, customer: str, at: str) -> None:
    import_file(engine, "consents", write_csv(tmp_path / f"o-{customer}.csv",
                                              ["customer", "channel", "purpose", "status", "at"],
                                              [[customer, "all", "marketing", "revoked", at]]))


def test_a_journey_sends_waits_branches_and_ends(engine, tmp_path):
    build(engine, tmp_path)
    journey_file(tmp_path)
    first = tick(engine, tmp_path, T0)
    assert first["counts"]["entered"] == 8 and first["counts"]["sent:email"] == 8
    assert first["status"]["at_step"] == {"three_days": {"people": 8, "due": 0}}
    assert received(tmp_path, "email") == Counter({f"j{i}@mail.ru": 1 for i in range(8)})
    assert tick(engine, tmp_path, T0 + timedelta(days=1))["counts"] == {}          # nobody is due
    buy(engine, tmp_path, "J01", "2026-11-25")
    opt_out(engine, tmp_path, "J02", "2026-11-26 09:00")
    third = tick(engine, tmp_path, T0 + timedelta(days=3))
    assert third["counts"]["left:purchased"] == 1 and third["counts"]["left:opted_out"] == 1
    assert third["counts"]["sent:sms"] == 6 and len(received(tmp_path, "sms")) == 6
    assert "+79160000001" not in received(tmp_path, "sms") and "+79160000002" not in received(tmp_path, "sms")
    assert tick(engine, tmp_path, T0 + timedelta(days=9))["counts"] == {}
    last = tick(engine, tmp_path, T0 + timedelta(days=10, hours=1))
    assert last["counts"]["sent:call"] == 6 and last["counts"]["done"] == 6
    with engine.connect() as conn:
        tasks = conn.execute(select(CallTask.__table__)).all()
    assert len(tasks) == 6 and all("+7916" in (t.phone or "") for t in tasks)
    status = last["status"]
    assert (status["done"], status["left"], status["active"]) == (6, 2, 0)
    assert status["left_because"] == {"purchased": 1, "opted_out": 1}
    assert max(received(tmp_path, "email").values()) == 1 and max(received(tmp_path, "sms").values()) == 1
    shown = run_json_for(tmp_path, engine, "journey", "status", "follow", "--json")
    assert shown["done"] == 6 and shown["left_because"] == {"purchased": 1, "opted_out": 1}


def run_json_for(tmp_path: Path, engine, *args: str) -> dict:
    os.environ["TOUCHFLOW_CAMPAIGNS_DIR"] = str(tmp_path / "campaigns")
    os.environ["TOUCHFLOW_DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
    try:
        from touchflow.settings import reset_settings

        reset_settings()
        return run_json(*args)
    finally:
        del os.environ["TOUCHFLOW_CAMPAIGNS_DIR"], os.environ["TOUCHFLOW_DATABASE_URL"]


def test_the_policy_holds_a_step_back_then_the_person_leaves(engine, tmp_path):
    """A step the policy refuses (another campaign's message within the gap) is tried again the next days."""
    from flows.engine import run_campaign
    from flows.spec import CampaignSpec

    build(engine, tmp_path, 3)
    journey_file(tmp_path)
    other = CampaignSpec(name="news", rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                         offer="news-1", template="winback", channels=["email"],
                         policy={"quiet_hours": "off", "min_gap_hours": 72}, offer_values={"discount_percent": 5})
    run_campaign(engine, other, now=T0 - timedelta(hours=1), settings=settings(tmp_path))
    held = tick(engine, tmp_path, T0)
    assert held["counts"]["retry:email:min_gap"] == 3 and "sent:email" not in held["counts"]
    assert tick(engine, tmp_path, T0 + timedelta(days=1))["counts"]["retry:email:min_gap"] == 3
    final = tick(engine, tmp_path, T0 + timedelta(days=2))
    assert final["counts"]["left:held_back:min_gap"] == 3
    with engine.connect() as conn:
        reasons = Counter(r for r, in conn.execute(select(Touch.__table__.c.reason)
                                                   .where(Touch.__table__.c.campaign == "follow")))
    assert reasons == {"min_gap": 9}                                   # every "no" is in the history


def test_waits_by_days_and_by_the_time_of_day_in_the_customers_zone():
    spec = load_spec_text(JOURNEY)
    three_days = spec.steps[1]
    at_night = datetime(2026, 11, 24, 23, 30, tzinfo=MSK)
    assert wait_until(three_days, at_night, "Europe/Moscow") == datetime(2026, 11, 28, 10, 0, tzinfo=MSK)
    vladivostok = wait_until(three_days, T0, "Asia/Vladivostok")    # 17:00 there: the 10:00 after three days
    assert vladivostok == datetime(2026, 11, 28, 10, 0, tzinfo=ZoneInfo("Asia/Vladivostok"))
    assert wait_until(spec.steps[4], T0, "Europe/Moscow") == T0 + timedelta(days=7)


def load_spec_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "j.yaml"
        path.write_text(text, encoding="utf-8")
        return load_spec(path)


@pytest.mark.parametrize("broken, message", [
    (JOURNEY.replace("  - {id: three_days, wait: {days: 3, at: \"10:00\"}}\n", ""), None),
    (JOURNEY.replace("{purchased: exit, opted_out: exit}", "{purchased: nowhere}"), "no step 'nowhere'"),
    (JOURNEY.replace("{purchased: exit, opted_out: exit}", "{bought: exit}"), "unknown condition 'bought'"),
    (JOURNEY.replace("  - {id: seven_days, wait: {days: 7}}\n", "").replace("{branch: {purchased: exit}}",
                                                                          "{branch: {purchased: sms}}"),
     "can come back to itself without a wait"),
    (JOURNEY.replace("kind: journey\n", ""), "only a journey has them"),
])
def test_a_wrong_journey_is_refused_naming_the_step(broken, message):
    if message is None:
        assert load_spec_text(broken).steps[1].kind == "branch"            # fine: no wait is needed
        return
    with pytest.raises(SpecError, match=message):
        load_spec_text(broken)


def _tick_in_process(url: str, spec_path: str, tmp: str, barrier) -> None:
    from crm.db import make_engine

    engine = make_engine(url)
    barrier.wait()
    run_journey(engine, load_spec(spec_path), now=T0, settings=settings(Path(tmp)))


def test_two_concurrent_runners_and_a_rerun_send_each_step_once(engine, db_url, tmp_path):
    build(engine, tmp_path, 30)
    path = journey_file(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_tick_in_process, args=(db_url, str(path), str(tmp_path), barrier))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    again = tick(engine, tmp_path, T0)
    assert again["counts"] == {}
    assert received(tmp_path, "email") == Counter({f"j{i}@mail.ru": 1 for i in range(30)})
    with engine.connect() as conn:
        states = conn.execute(select(JourneyState.__table__)).all()
        keys = Counter(k for k, in conn.execute(select(Touch.__table__.c.claim_key)
                                                .where(Touch.__table__.c.claim_key.like("journey:%"))))
    assert len(states) == 30 and {s.step for s in states} == {"three_days"}
    assert len(keys) == 30 and set(keys.values()) == {1}


def test_a_journey_killed_mid_send_resumes_without_a_second_message(engine, db_url, tmp_path):
    build(engine, tmp_path, 24)
    path = journey_file(tmp_path)
    with SmtpServer(SmtpBehaviour(stall_seconds=0.15)) as server:
        env = {**os.environ, "TOUCHFLOW_DATABASE_URL": db_url, "TOUCHFLOW_EMAIL_TRANSPORT": "smtp",
               "TOUCHFLOW_SMTP_HOST": "127.0.0.1", "TOUCHFLOW_SMTP_PORT": str(server.port),
               "TOUCHFLOW_SMTP_POOL_SIZE": "1", "TOUCHFLOW_SEND_ATTEMPTS": "1", "TOUCHFLOW_RUN_LEASE_SECONDS": "1",
               "TOUCHFLOW_CAMPAIGNS_DIR": str(tmp_path / "campaigns"), "TOUCHFLOW_OUTBOX_DIR": str(tmp_path / "out")}
        command = [sys.executable, "-m", "touchflow.cli", "journey", "run", "follow", "--json"]
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while len(server.messages) < 4 and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        before = len(server.messages)
        assert 4 <= before < 24
        time.sleep(6)  # the dead runner's leases (5 × the run lease) run out
        resumed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        per_recipient = Counter(rcpt for envelope in server.messages for rcpt in envelope.rcpt_tos)
    assert set(per_recipient.values()) == {1}                              # nobody twice
    with engine.connect() as conn:
        states = conn.execute(select(JourneyState.__table__)).all()
        live = Counter(row.status for row in conn.execute(select(Touch.__table__.c.status).where(
            Touch.__table__.c.claim_key.like("journey:follow:email:%"))))
    assert len(states) == 24 and {s.step for s in states} == {"three_days"}    # everyone moved on, once
    assert live["sent"] + live["unknown"] == 24, live
    assert live["unknown"] >= 1
    assert len(per_recipient) >= live["sent"]

"""The communication plan's arbitration: the minimum gap, offer groups and priorities, settled by the database."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from crm.importing import import_file
from crm.models import Touch
from crm.persons import refresh_persons
from flows import engine as campaign_engine
from flows.spec import load_spec
from tests.helpers import write_csv
from touchflow.settings import Settings

TEN_MSK = datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc)  # 10:00 in Moscow, when the plan's campaigns fire


def build(engine, tmp_path: Path, n: int) -> None:
    rows = [[f"K{i:03d}", f"Клиент {i}", f"k{i}@mail.ru", f"+7916{i:07d}", "a" if i % 2 else "b"] for i in range(n)]
    consents = [[f"K{i:03d}", channel, "marketing", "granted", "2025-01-01 10:00"]
                for i in range(n) for channel in ("email", "sms")]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone",
                                                                    "attr.group"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def write_spec(folder: Path, name: str, *, offer: str | None = None, priority: int = 50, group: str | None = None,
               schedule: bool = True, channels: str = "[email]", rule: str = "{field: name, contains: Клиент}",
               purpose: str = "marketing") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}", f"purpose: {purpose}", f"offer: {offer or name}", "template: winback",
             f"channels: {channels}", f"rule: {rule}", f"priority: {priority}", "policy: {quiet_hours: 'off'}",
             "offer_values: {discount_percent: 5}"]
    if group:
        lines.append(f"offer_group: {group}")
    if schedule:
        lines.append('schedule: {cron: "0 10 * * *", timezone: Europe/Moscow}')
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def settings(tmp_path: Path, **kwargs) -> Settings:
    values = dict(email_transport="memory", sms_transport="memory", send_attempts=1,
                  outbox_dir=str(tmp_path / "outbox"), campaigns_dir=str(tmp_path / "campaigns"))
    return Settings(**(values | kwargs))


def run(engine, path: Path, tmp_path: Path, *, now=TEN_MSK, dry_run=False, **kwargs):
    return campaign_engine.run_campaign(engine, load_spec(path), now=now, dry_run=dry_run, page_size=7,
                                        settings=settings(tmp_path, **kwargs))


def touches(engine, campaign: str | None = None) -> list:
    query = select(Touch.__table__).order_by(Touch.__table__.c.id)
    if campaign:
        query = query.where(Touch.__table__.c.campaign == campaign)
    with engine.connect() as conn:
        return conn.execute(query).all()


def sent(engine) -> Counter:
    return Counter(row.customer_id for row in touches(engine) if row.status == "sent")


def test_a_second_marketing_touch_within_the_gap_waits_for_it(engine, tmp_path):
    build(engine, tmp_path, 6)
    folder = tmp_path / "campaigns"
    first = write_spec(folder, "first", schedule=False)
    second = write_spec(folder, "second", schedule=False, channels="[sms]")
    run(engine, first, tmp_path)
    summary = run(engine, second, tmp_path, now=TEN_MSK + timedelta(hours=23))
    assert summary["not_contacted"] == {"min_gap": 6}
    detail = {row.detail for row in touches(engine, "second")}
    assert detail == {f"first contacted this person at {TEN_MSK:%Y-%m-%d %H:%M} UTC; the plan keeps 24 h between "
                      "marketing touches"}
    later = run(engine, second, tmp_path, now=TEN_MSK + timedelta(hours=25))
    assert later["channels"]["sms"]["sent"] == 6
    service = write_spec(folder, "service", purpose="service", schedule=False)
    assert run(engine, service, tmp_path, now=TEN_MSK + timedelta(hours=26))["channels"]["email"]["sent"] == 6


def test_offers_of_one_group_count_as_one_offer(engine, tmp_path):
    build(engine, tmp_path, 4)
    folder = tmp_path / "campaigns"
    by_call = write_spec(folder, "isp_call", offer="isp_tv_call", group="isp_tv", schedule=False)
    by_sms = write_spec(folder, "isp_sms", offer="isp_tv_sms", group="isp_tv", schedule=False, channels="[sms]")
    run(engine, by_call, tmp_path)
    week = run(engine, by_sms, tmp_path, now=TEN_MSK + timedelta(days=7))
    assert week["not_contacted"] == {"offer_group": 4}
    assert {row.detail for row in touches(engine, "isp_sms")} == {
        f"offer group isp_tv (offer isp_tv_call) already given to this person by isp_call on {TEN_MSK:%Y-%m-%d}"}
    month = run(engine, by_sms, tmp_path, now=TEN_MSK + timedelta(days=31))
    assert month["channels"]["sms"]["sent"] == 4


def test_the_higher_priority_campaign_wins_whoever_runs_first(engine, tmp_path):
    build(engine, tmp_path, 8)
    folder = tmp_path / "campaigns"
    birthday = write_spec(folder, "birthday", priority=30)
    winback = write_spec(folder, "winback", priority=80, rule="{attribute: group, equals: a}")  # 4 of the 8
    low = run(engine, birthday, tmp_path)          # runs first, but winback is due at 10:00 too
    assert low["channels"]["email"]["sent"] == 4 and low["not_contacted"] == {"outranked": 4}
    assert {row.detail for row in touches(engine, "birthday") if row.status == "skipped"} == {
        "outranked by winback (priority 80, due 2026-11-24 10:00 MSK), which would contact this person"}
    high = run(engine, winback, tmp_path)
    assert high["channels"]["email"]["sent"] == 4 and not high["not_contacted"]
    assert set(sent(engine).values()) == {1} and len(sent(engine)) == 8


def test_a_holder_of_higher_priority_outranks_a_later_run(engine, tmp_path):
    build(engine, tmp_path, 3)
    folder = tmp_path / "campaigns"
    high = write_spec(folder, "high", priority=90, schedule=False)
    low = write_spec(folder, "low", priority=10, schedule=False)
    run(engine, high, tmp_path)
    later = run(engine, low, tmp_path, now=TEN_MSK + timedelta(hours=2))
    assert later["not_contacted"] == {"outranked": 3}
    assert all(row.detail.startswith("outranked by high (priority 90 over 10)") for row in touches(engine, "low"))


def test_a_rival_in_its_own_cooldown_does_not_hold_a_person_back(engine, tmp_path):
    build(engine, tmp_path, 4)
    folder = tmp_path / "campaigns"
    rival = write_spec(folder, "rival", priority=90)
    run(engine, rival, tmp_path, now=TEN_MSK - timedelta(days=3))   # its offer cools down for 30 days
    low = write_spec(folder, "low", priority=10)
    summary = run(engine, low, tmp_path)
    assert summary["channels"]["email"]["sent"] == 4                # the rival would not contact them today


def test_a_dry_run_reports_the_arbitration(engine, tmp_path):
    build(engine, tmp_path, 4)
    folder = tmp_path / "campaigns"
    low = write_spec(folder, "low", priority=10)
    write_spec(folder, "high", priority=90, rule="{attribute: group, equals: b}")
    summary = run(engine, low, tmp_path, dry_run=True)
    assert summary["not_contacted"] == {"outranked": 2}
    assert summary["channels"]["email"]["would_send"] == 2
    assert touches(engine) == []


def _runner(url: str, path: str, tmp: str, barrier) -> None:
    from crm.db import make_engine

    engine = make_engine(url)
    barrier.wait()
    campaign_engine.run_campaign(engine, load_spec(path), now=TEN_MSK, page_size=5,
                                 settings=settings(Path(tmp), email_transport="file"))


@pytest.mark.parametrize("priorities", [(50, 50, 50, 50), (20, 90, 50, 10)], ids=["equal", "ranked"])
def test_concurrent_runs_of_different_campaigns_contact_each_person_once(engine, db_url, tmp_path, priorities):
    build(engine, tmp_path, 40)
    folder = tmp_path / "campaigns"
    paths = [write_spec(folder, f"c{i}", priority=p, rule=rule) for i, (p, rule) in enumerate(zip(
        priorities, ["{field: name, contains: Клиент}", "{attribute: group, in: [a, b]}",
                     "{attribute: group, equals: a}", "{field: name, contains: Клиент}"]))]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(paths))
    workers = [ctx.Process(target=_runner, args=(db_url, str(p), str(tmp_path), barrier)) for p in paths]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * len(paths)
    counts = sent(engine)
    assert len(counts) == 40 and set(counts.values()) == {1}
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 40
    reasons = Counter(row.reason for row in touches(engine) if row.status == "skipped")
    assert sum(reasons.values()) == 40 * 3 + 20 - 40
    if priorities[1] == 90:   # c1 wants everyone and outranks the rest: it contacts all, whoever ran first
        assert {row.campaign for row in touches(engine) if row.status == "sent"} == {"c1"}
        assert set(reasons) == {"outranked"}
    else:
        assert set(reasons) <= {"min_gap", "outranked", "same_person"} and reasons["min_gap"] > 0

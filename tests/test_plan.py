"""The plan: `plan show`, and the simulator — its first day against the real runs, an overloaded rep."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from crm.importing import import_file
from crm.models import CallTask, Touch
from crm.persons import refresh_persons
from flows import engine as campaign_engine
from flows.plan import load_plan
from flows.simulate import schedule, simulate
from tests.helpers import run_json, write_csv
from touchflow.settings import Settings

MSK = ZoneInfo("Europe/Moscow")
MIDNIGHT = datetime(2026, 11, 24, 0, 0, tzinfo=MSK)
CONTACTED = ("claimed", "sending", "sent", "delivered", "unknown")


def build(engine, tmp_path: Path, n: int = 40, *, capacity: int = 40) -> None:
    """n customers in groups a / b: emails with consent (one in ten only SMS, one opted out), two reps."""
    rows, consents = [], []
    for i in range(n):
        email = f"k{i}@mail.ru" if i % 10 else ""
        rows.append([f"K{i:03d}", f"Клиент {i}", email, f"+7916{i:07d}", "a" if i % 2 else "b",
                     "R1" if i < n // 2 else "R2"])
        for channel in ("email", "sms"):
            consents.append([f"K{i:03d}", channel, "marketing", "revoked" if i == 7 else "granted", "2025-01-01 10:00"])
    import_file(engine, "managers", write_csv(tmp_path / "m.csv", ["code", "name", "capacity"],
                                              [["R1", "Анна Иванова", capacity], ["R2", "Пётр Петров", capacity]]))
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone",
                                                                    "attr.group", "manager"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def write_spec(folder: Path, name: str, cron: str, *, priority: int = 50, channels: str = "[email]",
               rule: str = "{field: name, contains: Клиент}", purpose: str = "marketing", extra: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    template = "car_service_reminder" if channels == "[call]" else "winback"
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\npurpose: {purpose}\noffer: {name}\ntemplate: {template}\nchannels: {channels}\n"
        f"rule: {rule}\npriority: {priority}\nschedule: {{cron: \"{cron}\", timezone: Europe/Moscow}}\n"
        f"offer_values: {{discount_percent: 5}}\n{extra}", encoding="utf-8")


def settings(tmp_path: Path, **kwargs) -> Settings:
    values = dict(email_transport="memory", sms_transport="memory", send_attempts=1,
                  outbox_dir=str(tmp_path / "outbox"), campaigns_dir=str(tmp_path / "campaigns"))
    return Settings(**(values | kwargs))


def a_plan(folder: Path) -> None:
    write_spec(folder, "alpha", "0 10 * * *", priority=80, rule="{attribute: group, equals: a}")
    write_spec(folder, "beta", "0 10 * * *", priority=50, channels="[email, sms]", extra="holdout_percent: 20\n")
    write_spec(folder, "gamma", "0 11 * * *", priority=40, channels="[sms]", extra="offer_group: g\n")
    write_spec(folder, "delta", "0 11 * * *", priority=40, channels="[sms]", extra="offer_group: g\n")
    write_spec(folder, "epsilon", "0 11 * * *", priority=40, channels="[sms]")
    write_spec(folder, "calls", "0 9 * * *", channels="[call]", purpose="service",
               rule="{attribute: group, equals: b}")


def real_outcomes(engine) -> Counter:
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.__table__)).all()
    return Counter((row.campaign, row.customer_id, "contacted" if row.status in CONTACTED else
                    "deferred" if row.status == "deferred" else row.reason,
                    row.channel if row.status in CONTACTED + ("deferred",) else None) for row in rows)


def test_the_simulated_first_day_is_what_the_real_runs_do(engine, tmp_path):
    build(engine, tmp_path)
    a_plan(tmp_path / "campaigns")
    plan = load_plan(tmp_path / "campaigns")
    result = simulate(engine, plan, start=MIDNIGHT, days=1, settings=settings(tmp_path), keep_decisions=True)
    simulated = Counter((d["campaign"], d["customer_id"], d["outcome"], d["channel"]) for d in result["decisions"])
    assert real_outcomes(engine) == Counter()                                   # the simulator wrote nothing
    for at, spec in schedule(plan, MIDNIGHT, 1):
        campaign_engine.run_campaign(engine, spec, now=at, settings=settings(tmp_path))
    assert real_outcomes(engine) == simulated
    outcomes = Counter(outcome for _, _, outcome, _ in simulated)
    assert {"contacted", "outranked", "min_gap", "offer_group", "holdout", "opted_out"} <= set(outcomes)
    assert result["campaigns"]["alpha"]["contacted"] == 19        # group a, less the one who opted out
    assert {(c["campaign"], c["winner"], c["reason"]) for c in result["conflicts"]} >= {
        ("beta", "alpha", "outranked"), ("gamma", "delta", "offer_group"), ("epsilon", "delta", "min_gap")}


def test_the_simulator_follows_gaps_and_cooldowns_over_the_days(engine, tmp_path):
    build(engine, tmp_path)
    a_plan(tmp_path / "campaigns")
    result = simulate(engine, load_plan(tmp_path / "campaigns"), start=MIDNIGHT, days=5,
                      settings=settings(tmp_path), keep_decisions=True)
    contacted = [d for d in result["decisions"] if d["outcome"] == "contacted" and d["campaign"] != "calls"]
    by_person: dict[int, list[datetime]] = {}
    for d in contacted:
        by_person.setdefault(d["customer_id"], []).append(datetime.fromisoformat(d["at"]))
    gaps = [b - a for times in by_person.values() for a, b in zip(sorted(times), sorted(times)[1:])]
    assert gaps and min(gaps) >= timedelta(hours=24)                          # the minimum gap, across campaigns
    assert max(Counter((d["campaign"], d["customer_id"]) for d in contacted).values()) == 1   # 30-day cooldowns
    assert result["daily"][1]["channels"]["email"] > 0    # beta reaches on day two whom alpha had on day one
    assert max(len(times) for times in by_person.values()) == 3                # the cap: 3 in 7 days
    assert result["totals"]["held_back"]["capped"] > 0
    assert result["campaigns"]["calls"]["runs"] == 5 and result["campaigns"]["calls"]["contacted"] == 20


def test_an_overloaded_rep_is_reported(engine, tmp_path, cli_env, monkeypatch):
    build(engine, tmp_path, capacity=4)
    folder = tmp_path / "campaigns"
    write_spec(folder, "calls", "0 9 * * *", channels="[call]", purpose="service")
    monkeypatch.setenv("TOUCHFLOW_CAMPAIGNS_DIR", str(folder))
    report = run_json("plan", "simulate", "--days", "3", "--start", "2026-11-24", "--json")
    reps = {rep["rep"]: rep for rep in report["reps"]}
    assert set(reps) == {"R1", "R2"}
    assert all(rep["overloaded"] and rep["peak_load"] == 20 and rep["capacity"] == 4 for rep in reps.values())
    assert reps["R1"]["days"][0] == {"date": "2026-11-24", "load": 20, "worked": 4, "waiting": 16,
                                     "over_capacity": True}
    assert reps["R1"]["waiting_at_end"] == 20 - 3 * 4
    with engine.connect() as conn:
        assert conn.execute(select(CallTask.__table__)).all() == []


def test_a_rep_within_capacity_is_not_reported_overloaded(engine, tmp_path):
    build(engine, tmp_path, capacity=25)
    write_spec(tmp_path / "campaigns", "calls", "0 9 * * *", channels="[call]", purpose="service")
    result = simulate(engine, load_plan(tmp_path / "campaigns"), start=MIDNIGHT, days=2, settings=settings(tmp_path))
    assert [rep["overloaded"] for rep in result["reps"]] == [False, False]


def test_plan_show_lists_the_schedule(engine, tmp_path, cli_env, monkeypatch):
    build(engine, tmp_path)
    a_plan(tmp_path / "campaigns")
    (tmp_path / "campaigns" / "broken.yaml").write_text("name: broken\n", encoding="utf-8")
    monkeypatch.setenv("TOUCHFLOW_CAMPAIGNS_DIR", str(tmp_path / "campaigns"))
    shown = run_json("plan", "show", "--weeks", "1", "--start", "2026-11-24", "--json")
    rows = {row["name"]: row for row in shown["entries"]}
    assert list(rows) == ["alpha", "beta", "calls", "delta", "epsilon", "gamma"]   # by priority, then name
    assert rows["gamma"]["offer_group"] == "g" and rows["gamma"]["runs"] == 7
    assert rows["alpha"]["selected"] == 7 * 20 and rows["alpha"]["next_run"] == "2026-11-24T10:00:00+03:00"
    assert rows["beta"]["channels"] == ["email", "sms"] and rows["beta"]["cron"] == "0 10 * * *"


def test_the_first_fire_of_a_day_is_in_the_campaigns_zone():
    plan_dir = Path(__file__).resolve().parents[1] / "campaigns"
    fired = schedule(load_plan(plan_dir), MIDNIGHT, 1)
    assert fired and all(MIDNIGHT <= at < MIDNIGHT + timedelta(days=1) for at, _ in fired)
    assert all(at.utcoffset() == timedelta(hours=3) for at, _ in fired)


def test_journeys_are_walked_step_by_step_in_the_simulation(engine, tmp_path):
    from flows.journeys import run_journey
    from tests.test_journeys import JOURNEY
    from tests.test_journeys import build as build_journey_base

    build_journey_base(engine, tmp_path, 6)
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "follow.yaml").write_text(JOURNEY + 'schedule: {cron: "0 * * * *", timezone: Europe/Moscow}\n',
                                        encoding="utf-8")
    plan = load_plan(folder)
    result = simulate(engine, plan, start=MIDNIGHT, days=12, settings=settings(tmp_path))
    days = {day["date"]: day["channels"] for day in result["daily"]}
    assert days["2026-11-24"] == {"email": 6}                      # entered at the first tick, mailed at once
    assert days["2026-11-27"] == {"sms": 6}                        # three days later, at 10:00
    assert days["2026-12-04"] == {"call": 6}                       # seven days after that
    assert result["campaigns"]["follow"]["contacted"] == 18
    first = run_journey(engine, plan.spec("follow"), now=MIDNIGHT, settings=settings(tmp_path))
    assert first["counts"]["sent:email"] == days["2026-11-24"]["email"]   # the real first tick does the same

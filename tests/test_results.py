"""Closing the loop: attribution, revenue, spend, holdout uplift (flows.results), article 001's metrics per slice,
and the same report through `touchflow campaign report`, the API and the console, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from statistics import NormalDist, fmean, variance

import httpx
import pytest
from sqlalchemy import insert, select

from crm import accounts
from crm.models import Customer, Purchase, Touch
from flows import results
from flows.spec import CampaignSpec, SpecError, load_spec
from flows.stats import newcombe, t_quantile, welch, wilson
from segments.metrics import compute, prorate
from tests import console_base, segbase
from tests.helpers import run_cli, run_json
from touchflow.settings import Settings, reset_settings

customers, purchases, touches = Customer.__table__, Purchase.__table__, Touch.__table__
D0 = date(2026, 11, 2)
AS_OF = date(2026, 12, 7)
ZONE = "Europe/Moscow"
SPECS = {"promo": "attribution_days: 7\nbudget: 1000\n", "other": "attribution_days: 3\n",
         "trial": "attribution_days: 7\nholdout_percent: 50\n"}


def at(day: date, hour: int = 9) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc)


def add_customer(conn, cid: int, *, person: int | None = None, region: str | None = None) -> None:
    now = at(date(2026, 1, 1))
    conn.execute(insert(customers).values(id=cid, external_id=f"C{cid}", name=f"Клиент {cid}", region=region,
                                          person_id=person or cid, attributes={}, created_at=now, updated_at=now))


def add_touch(conn, cid: int, campaign: str, day: date, *, status: str = "sent", channel: str | None = "email",
              cost: float | None = None, run: str = "r1", reason: str | None = None, hour: int = 9) -> int:
    return conn.execute(insert(touches).values(
        person_key=str(cid), customer_id=cid, campaign=campaign, run_id=run, offer=campaign, purpose="marketing",
        channel=channel, status=status, reason=reason, created_at=at(day, hour), updated_at=at(day, hour),
        direction="out", cost=cost).returning(touches.c.id)).scalar_one()


def add_purchase(conn, cid: int, day: date, amount: float, product: str = "Товар", key: str | None = None) -> None:
    conn.execute(insert(purchases).values(source_key=key or f"{cid}-{day}-{amount}-{product}", customer_id=cid,
                                          purchased_on=day, product=product, category="goods", quantity=1,
                                          amount=amount, currency="RUB", created_at=at(day)))


def write_specs(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    for name, extra in SPECS.items():
        (directory / f"{name}.yaml").write_text(
            f"name: {name}\npurpose: marketing\noffer: {name}-1\ntemplate: winback\nchannels: [email, sms]\n"
            f"segment: lapsed_customers\n{extra}", encoding="utf-8")
    return directory


@pytest.fixture
def attributed(engine):
    """Four people and two campaigns, every purchase's fate known (see the test below)."""
    ids = {}
    with engine.begin() as conn:
        for cid in (1, 2, 4, 5, 6):
            add_customer(conn, cid)
        add_customer(conn, 3, person=2)                                    # B: records 2 and 3 are one person
        add_touch(conn, 1, "promo", D0, cost=1.5)                          # A
        add_purchase(conn, 1, D0 + timedelta(days=3), 100)                 # 3 days after: promo, email
        add_purchase(conn, 1, D0 + timedelta(days=10), 50)                 # 10 days: outside promo's 7
        add_touch(conn, 2, "promo", D0, status="delivered", channel="sms", cost=3.0)   # B
        add_touch(conn, 3, "other", D0 + timedelta(days=2))               # B's other record, another campaign
        add_purchase(conn, 3, D0 + timedelta(days=4), 200)                 # other's, 2 days after its touch
        add_purchase(conn, 2, D0 + timedelta(days=6), 80)                  # other's 4 > 3 days: promo's sms, 6 ≤ 7
        add_touch(conn, 4, "promo", D0, status="failed", cost=1.5)        # C: the touch failed
        add_touch(conn, 4, "promo", D0, status="skipped", channel=None, reason="holdout")
        add_purchase(conn, 4, D0 + timedelta(days=1), 500)                 # nobody's
        add_touch(conn, 5, "promo", D0, cost=1.5)                          # D: two runs
        ids["late"] = add_touch(conn, 5, "promo", D0 + timedelta(days=5), cost=1.5, run="r2")
        add_purchase(conn, 5, D0 + timedelta(days=6), 70)                  # the later touch's
        ids["night"] = add_touch(conn, 6, "promo", D0 + timedelta(days=2), hour=22)  # E: 01:00 Moscow, D0 + 3
        add_purchase(conn, 6, D0 + timedelta(days=10), 40)                 # 7 days in Moscow (8 in UTC): promo
    return ids


def promo_report(engine):
    specs = {name: CampaignSpec(name=name, segment="lapsed_customers", purpose="marketing", offer=name,
                                template="winback", channels=["email", "sms"],
                                **({"attribution_days": 7, "budget": 1000} if name == "promo" else
                                   {"attribution_days": 3}))
             for name in ("promo", "other")}
    return results.report(engine, specs["promo"], windows={"other": 3}, as_of=AS_OF, zone=ZONE)


def test_the_last_touch_within_its_window_gets_the_purchase(engine, attributed):
    found = results.attribute(engine, "promo", windows={"promo": 7, "other": 3}, until=AS_OF, zone=ZONE)
    got = {(f["customer_id"], f["purchased_on"]): (f["channel"], f["amount"], f["touch"]) for f in found}
    assert set(got) == {(1, D0 + timedelta(days=3)), (2, D0 + timedelta(days=6)), (5, D0 + timedelta(days=6)),
                        (6, D0 + timedelta(days=10))}
    assert got[(2, D0 + timedelta(days=6))][0] == "sms"
    assert got[(5, D0 + timedelta(days=6))][2] == attributed["late"]       # the later of D's two touches
    assert got[(6, D0 + timedelta(days=10))][2] == attributed["night"]     # the business's days, not UTC's
    in_utc = results.attribute(engine, "promo", windows={"promo": 7, "other": 3}, until=AS_OF)
    assert 6 not in {f["customer_id"] for f in in_utc}
    other = results.attribute(engine, "other", windows={"promo": 7, "other": 3}, until=AS_OF, zone=ZONE)
    assert [(f["customer_id"], f["amount"]) for f in other] == [(3, 200.0)]


def test_revenue_spend_cost_per_lead_and_return_per_campaign_and_channel(engine, attributed):
    report = promo_report(engine)
    assert report["attribution"]["rule"] == "last touch" and report["attribution"]["window_days"] == 7
    total = report["total"]
    assert (total["purchases"], total["leads"], total["revenue"]) == (4, 4, 290.0)
    assert total["people_contacted"] == 4 and total["conversion"] == 1.0  # A, B, D, E; C's touch failed
    assert total["spend"] == 1.5 + 3.0 + 1.5 + 1.5 + 1.5                  # the failed touch was paid for too
    assert total["cost_per_lead"] == round(9.0 / 4, 2) and total["return_on_spend"] == round(290 / 9.0, 4)
    assert total["touches_without_cost"] == 1                              # E's touch
    assert report["budget"] == 1000 and report["budget_used"] == round(9.0 / 1000, 4)
    email, sms = report["channels"]["email"], report["channels"]["sms"]
    assert (email["revenue"], email["purchases"], email["leads"], email["spend"]) == (210.0, 3, 3, 6.0)
    assert (sms["revenue"], sms["leads"], sms["spend"], sms["cost_per_lead"]) == (80.0, 1, 3.0, 3.0)
    assert email["return_on_spend"] == 35.0 and (email["touches"], email["contacted"]) == (5, 4)


@pytest.fixture
def trial(engine):
    """Run r1 on 10-01: 40 contacted (30 Москва, 10 Татарстан), 40 holdout (32, 8); r2 on 12-05 still open."""
    day = date(2026, 10, 1)
    with engine.begin() as conn:
        for i in range(80):
            cid = 100 + i
            region = "Москва" if (i < 30 or 40 <= i < 72) else "Татарстан"
            add_customer(conn, cid, region=region)
            if i < 40:
                add_touch(conn, cid, "trial", day)
                if i < 20:                                                 # 10 spend 100, 10 spend 300
                    add_purchase(conn, cid, day + timedelta(days=3), 100 if i < 10 else 300)
            else:
                add_touch(conn, cid, "trial", day, status="skipped", channel=None, reason="holdout")
                if i < 50:
                    add_purchase(conn, cid, day + timedelta(days=7), 100)  # the window's last day counts
        add_purchase(conn, 179, day + timedelta(days=8), 999)              # a day too late
        add_purchase(conn, 178, day - timedelta(days=1), 999)              # before the run
        add_customer(conn, 300, region="Москва")
        add_touch(conn, 300, "trial", AS_OF - timedelta(days=2), run="r2")
    return engine


def by_hand_wilson(k: int, n: int) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.975)
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_the_interval_helpers_match_published_values():
    assert round(t_quantile(0.975, 10), 3) == 2.228 and round(t_quantile(0.975, 1), 3) == 12.706
    diff, low, high = newcombe(56, 70, 48, 80)                             # Newcombe (1998), table II, example (a)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339) and round(diff, 4) == 0.2
    assert round(wilson(0, 10)[0], 12) == 0.0 and round(wilson(0, 10)[1], 4) == 0.2775


def test_uplift_and_its_intervals_by_hand_per_segment_and_region(engine, trial, cli_env, tmp_path, monkeypatch):
    report = results.holdout_uplift(engine, "trial", window=7, as_of=AS_OF, zone=ZONE, segment="lapsed_customers")
    assert report["runs_still_open"] == 1
    rows = {row["slice"]: row for row in report["slices"]}
    whole = rows["lapsed_customers"]
    assert (whole["contacted"]["people"], whole["contacted"]["converted"]) == (40, 20)
    assert (whole["holdout"]["people"], whole["holdout"]["converted"]) == (40, 10)
    (l1, u1), (l0, u0) = by_hand_wilson(20, 40), by_hand_wilson(10, 40)
    low = 0.25 - math.sqrt((0.5 - l1) ** 2 + (u0 - 0.25) ** 2)
    high = 0.25 + math.sqrt((u1 - 0.5) ** 2 + (0.25 - l0) ** 2)
    uplift = whole["uplift"]
    assert uplift["conversion"] == 0.25 and uplift["conversion_ci"] == [round(low, 4), round(high, 4)]
    assert uplift["significant"] is (low > 0)
    contacted, holdout = [100.0] * 10 + [300.0] * 10 + [0.0] * 20, [100.0] * 10 + [0.0] * 30
    va, vb = variance(contacted) / 40, variance(holdout) / 40
    df = (va + vb) ** 2 / (va ** 2 / 39 + vb ** 2 / 39)
    half = t_quantile(0.975, df) * math.sqrt(va + vb)
    assert uplift["revenue_per_person"] == 75.0 == fmean(contacted) - fmean(holdout)
    assert uplift["revenue_per_person_ci"] == [round(75 - half, 2), round(75 + half, 2)]
    assert whole["contacted"]["revenue_per_person"] == 100.0 and whole["holdout"]["revenue_per_person"] == 25.0
    moscow, tatarstan = rows["region: Москва"], rows["region: Татарстан"]
    assert (moscow["contacted"]["people"], moscow["holdout"]["people"]) == (30, 32)
    assert moscow["uplift"]["conversion"] == round(20 / 30 - 10 / 32, 4)
    assert tatarstan["uplift"] is None and tatarstan["note"].startswith("not enough data")
    assert "holdout has 8 people" in tatarstan["note"]
    monkeypatch.setenv("TOUCHFLOW_CAMPAIGNS_DIR", str(write_specs(tmp_path / "campaigns")))
    monkeypatch.setenv("TOUCHFLOW_DEFAULT_TIMEZONE", ZONE)
    reset_settings()
    shown = run_cli("campaign", "report", "trial", "--as-of", AS_OF.isoformat())
    assert shown.exit_code == 0, shown.output
    assert f"conversion uplift +0.2500 [{low:+.4f}, {high:+.4f}]" in shown.stdout
    assert "region: Татарстан: contacted 0/10 (0.0), holdout 0/8 (0.0); not enough data" in shown.stdout


def test_too_small_groups_give_no_number():
    result = results.compare([1.0, None], [None], min_group=2)
    assert result["uplift"] is None and "holdout has 1 person" in result["note"]
    assert result["contacted"]["conversion"] == 0.5
    diff, low, high, _ = welch([5.0, 5.0], [5.0, 5.0])                   # no spread: the interval is the point
    assert diff == low == high == 0


def test_attribution_days_is_checked_in_the_spec(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\npurpose: marketing\noffer: o\ntemplate: winback\nchannels: [email]\n"
                    "segment: lapsed_customers\nattribution_days: -3\n", encoding="utf-8")
    with pytest.raises(SpecError, match="attribution_days"):
        load_spec(path)
    path.write_text(path.read_text(encoding="utf-8").replace("-3", "14"), encoding="utf-8")
    assert load_spec(path).attribution_days == 14
    assert CampaignSpec(name="x", segment="s", purpose="marketing", offer="o", template="t",
                        channels=["email"]).attribution_days == 7


def test_a_real_run_with_a_holdout_then_purchases(engine, tmp_path):
    from tests.test_campaigns import NOON, build_base, run, spec

    build_base(engine, tmp_path)
    the_spec = spec(holdout_percent=50, attribution_days=5)
    run(engine, the_spec, tmp_path)
    with engine.connect() as conn:
        rows = conn.execute(select(touches.c.customer_id, touches.c.status, touches.c.reason, touches.c.cost)
                            .where(touches.c.campaign == "promo")).all()
        person = dict(conn.execute(select(customers.c.id, customers.c.person_id)).all())
    contacted = sorted({person[r.customer_id] for r in rows if r.status == "sent"})
    held = sorted({person[r.customer_id] for r in rows if r.reason == "holdout"})
    assert contacted and held                                              # 12 people, half held out
    day = NOON.date()
    with engine.begin() as conn:
        for cid in contacted + held:
            add_purchase(conn, cid, day + timedelta(days=2), 10 * cid)
        add_purchase(conn, contacted[0], day + timedelta(days=6), 1000)     # after the 5-day window
    report = results.report(engine, the_spec, as_of=AS_OF, zone=ZONE, min_group=2)
    total = report["total"]
    assert total["people_contacted"] == len(contacted) and total["leads"] == len(contacted)
    assert total["revenue"] == sum(10 * cid for cid in contacted) and total["purchases"] == len(contacted)
    spend = sum(float(r.cost) for r in rows if r.status == "sent")       # each claimed touch records its price
    assert spend > 0 and total["spend"] == pytest.approx(spend)
    assert total["cost_per_lead"] == pytest.approx(spend / len(contacted), abs=0.01)
    assert total["touches_without_cost"] == 0
    delivered = report["engagement"]                                      # folded in from crm.ledger.engagement
    assert sum(line["sent"] for line in delivered.values()) == len([r for r in rows if r.status == "sent"])
    whole = report["holdout"]["slices"][0]
    assert whole["contacted"]["people"] == len(contacted) and whole["holdout"]["people"] == len(held)
    assert whole["contacted"]["conversion"] == whole["holdout"]["conversion"] == 1.0
    if len(contacted) >= 2 and len(held) >= 2:
        assert whole["uplift"]["conversion"] == 0.0


def test_the_budget_is_prorated_across_slices_and_sums_to_it(engine, tmp_path):
    segbase.build(engine, tmp_path)
    rows = compute(engine, by="region", until=date(2026, 4, 4), budget=1000)["rows"]
    shares = [row["budget_share"] for row in rows]
    assert round(sum(shares), 2) == 1000 and len(rows) == 4
    total = sum(row["customers"] for row in rows)
    for row in rows:
        assert abs(row["budget_share"] - 1000 * row["customers"] / total) < 0.01
        assert row["cost_per_lead"] == (round(row["budget_share"] / row["buyers"], 4) if row["buyers"] else None)
    moscow = next(row for row in rows if row["slice"] == "Москва")
    assert moscow["budget_share"] == 571.43 and moscow["cost_per_lead"] == round(571.43 / 3, 4)
    assert prorate(0.03, [1, 1, 1, 1]) == [0.01, 0.01, 0.01, 0.0]          # kopecks never invented
    (one,) = compute(engine, until=date(2026, 4, 4), budget=1000)["rows"]
    assert one["budget_share"] == 1000 and one["cost_per_lead"] == 200.0   # 5 buyers


def test_aipt_in_the_articles_form_four_purchases_a_month_is_a_quarter_month(engine):
    with engine.begin() as conn:
        add_customer(conn, 1, region="Москва")
        for day in (1, 8, 15, 22):
            add_purchase(conn, 1, date(2026, 11, day), 500)
    (row,) = compute(engine, by="customer", since=date(2026, 11, 1), until=date(2026, 11, 30))["rows"]
    assert row["slice"] == "C1" and row["aipt"] == 0.25 and row["aipt_days"] == 7.5


def test_slices_by_product_and_customer_and_ald_from_contracts(engine, tmp_path, cli_env):
    segbase.build(engine, tmp_path)
    products = {r["slice"]: r for r in compute(engine, by="product", until=date(2026, 4, 4), budget=100)["rows"]}
    assert (products["Трансляция матча"]["buyers"], products["Трансляция матча"]["purchases"]) == (2, 4)
    assert products["Визитки 1000 шт"]["revenue"] == 3200.0
    assert round(sum(r["budget_share"] for r in products.values()), 2) == 100
    people = {r["slice"]: r for r in compute(engine, by="customer", until=date(2026, 4, 4))["rows"]}
    assert (people["CARD"]["purchases"], people["CARD"]["revenue"]) == (3, 4000.0)
    assert people["CARD"]["ald_days"] == (date(2026, 3, 2) - date(2026, 1, 1)).days         # purchases
    assert people["ISP1"]["ald_days"] == (date(2025, 1, 20) - date(2021, 2, 15)).days       # contracts
    assert people["INJ"]["buyers"] == 0 and people["INJ"]["aipt"] is None
    assert run_json("metrics", "--by", "product", "--until", "2026-04-04")["by"] == "product"


def test_the_cli_the_api_and_the_console_show_the_same_report(engine, attributed, tmp_path, cli_env, monkeypatch):
    directory = write_specs(tmp_path / "campaigns")
    monkeypatch.setenv("TOUCHFLOW_CAMPAIGNS_DIR", str(directory))
    monkeypatch.setenv("TOUCHFLOW_DEFAULT_TIMEZONE", ZONE)
    reset_settings()
    from_cli = run_json("campaign", "report", "promo", "--as-of", AS_OF.isoformat())
    assert from_cli["total"]["revenue"] == 290.0 and from_cli["attribution"]["window_days"] == 7
    text = run_cli("campaign", "report", "promo", "--as-of", AS_OF.isoformat())
    assert text.exit_code == 0 and "last touch, window 7 days" in text.stdout
    missing = run_cli("campaign", "report", "nope")
    assert missing.exit_code != 0 and "no campaign 'nope'" in missing.output
    accounts.add_user(engine, "mark", "marketing", console_base.PASSWORD)
    accounts.add_user(engine, "olga", "compliance", console_base.PASSWORD)
    url, stop = console_base.serve(engine, Settings(campaigns_dir=str(directory), default_timezone=ZONE))
    try:
        _, token = accounts.create_token(engine, "mark")
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        from_api = api.get("/api/v1/campaigns/promo/report", params={"as_of": AS_OF.isoformat()})
        assert from_api.status_code == 200 and from_api.json() == from_cli
        assert api.get("/api/v1/campaigns/nope/report").status_code == 404
        _, olga = accounts.create_token(engine, "olga")
        assert httpx.get(f"{url}/api/v1/campaigns/promo/report",
                         headers={"Authorization": f"Bearer {olga}"}).status_code == 403
        page = console_base.login(url, "mark").get("/campaigns/promo/report", params={"day": AS_OF.isoformat()})
        assert page.status_code == 200
        assert '<dd id="revenue">290.0</dd>' in page.text and '<b id="window">7</b>' in page.text
        assert 'data-channel="sms"' in page.text and "not enough data" in page.text
        assert "Стоимость лида" in page.text                                 # the configured language (ru)
        assert console_base.login(url, "olga").get("/campaigns/promo/report").status_code == 403
    finally:
        stop()

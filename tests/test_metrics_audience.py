"""Metrics of article 001, audience export of article 003, and the segment commands."""

from __future__ import annotations

import csv
import hashlib
from datetime import date

import pytest
from sqlalchemy import select

from crm.models import CustomerStats
from segments import load_library, resolve
from segments.audience import ad_identifier, export
from segments.metrics import compute
from tests import segbase
from tests.helpers import run_cli, run_json, write_csv


@pytest.fixture
def base(engine, tmp_path):
    segbase.build(engine, tmp_path)
    return engine


def test_overall_metrics_have_the_article_definitions(base):
    (row,) = compute(base, until=date(2026, 4, 4))["rows"]
    assert (row["customers"], row["buyers"], row["purchases"]) == (7, 5, 12)
    assert row["revenue"] == 229_000.0
    assert row["average_check"] == round(229_000 / 12, 4)
    assert row["purchase_frequency"] == 2.4
    assert row["clv"] == round(229_000 / 5, 4)
    # the mean gap between purchase days of buyers with two or more: CARD 30, ISP1 10, OLD 164 days
    assert row["purchase_gap_days"] == round((30 + 10 + 164) / 3, 2)
    # AIPT in the article's form: days observed (first purchase to 04-04) over purchase days, pooled:
    # CARD 94 / 3, ISP1 26 / 3, ISP2 21 / 1, CAT 11 / 1 (two lines, one day), OLD 450 / 3
    assert row["aipt_days"] == round(602 / 11, 2) and row["aipt"] == round(602 / 11 / 30, 4)
    # wallet: CARD spent 4000 of 10000, ISP1 165 of 50000
    assert row["share_of_wallet"] == round(4165 / 60000, 4)
    assert row["size_of_wallet"] == 30000.0


def test_acquisition_rate_and_cost_per_acquisition_of_a_segment(base):
    library = load_library()
    result = compute(base, rule=resolve({"has_contact": "phone"}, library), library=library,
                     since=date(2026, 3, 12), until=date(2026, 4, 4), budget=1500)
    (row,) = result["rows"]
    # 5 prospects with a phone; ISP1, ISP2 and CAT bought after the campaign started: 60 %, 500 each
    assert (row["customers"], row["buyers"]) == (5, 3)
    assert row["acquisition_rate"] == 0.6 and row["cost_per_acquisition"] == 500.0


def test_slices_by_region_manager_category_and_month(base):
    by_region = {r["slice"]: r for r in compute(base, by="region", until=date(2026, 4, 4))["rows"]}
    assert by_region["Москва"]["customers"] == 4 and by_region["Татарстан"]["buyers"] == 1
    by_manager = {r["slice"]: r["revenue"] for r in compute(base, by="manager", until=date(2026, 4, 4))["rows"]}
    assert by_manager == {"ivanova": 8780.0, "petrov": 220.0, "sidorov": 220_000.0}
    by_category = {r["slice"]: (r["buyers"], r["purchases"]) for r in
                   compute(base, by="category", until=date(2026, 4, 4))["rows"]}
    assert by_category["football_stream"] == (2, 4) and by_category["travel"] == (1, 3)
    months = {r["slice"]: r["revenue"] for r in compute(base, by="month", until=date(2026, 4, 4))["rows"]}
    assert months["2026-03"] == 1600 + 4 * 55 + 1290 + 3490


def test_audience_has_only_consenting_normalised_identifiers(base, tmp_path):
    library = load_library()
    out = tmp_path / "aud.csv"
    summary = export(base, resolve({"manager": ["ivanova", "petrov"]}, library), out, library=library)
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0] == ["type", "identifier"]
    # CARD: email consent only; ISP1: "all" consent; ISP2 revoked; CAT: email re-granted, no sms consent
    assert sorted(rows[1:]) == [["email", "card@mail.ru"], ["email", "cat@mail.ru"], ["email", "isp1@mail.ru"],
                                ["phone", "79160000002"]]
    assert (summary.emails, summary.phones) == (3, 1)
    hashed = tmp_path / "hashed.csv"
    export(base, resolve({"manager": "petrov"}, library), hashed, library=library, hash_name="sha256")
    values = [r[1] for r in csv.reader(hashed.open(encoding="utf-8"))][1:]
    assert hashlib.sha256(b"isp1@mail.ru").hexdigest() in values
    assert hashlib.sha256(b"79160000002").hexdigest() in values
    assert ad_identifier("email", " Ivan@Mail.RU ") == "ivan@mail.ru"
    assert ad_identifier("phone", "+7 916 000-00-02") == "79160000002"


def test_segment_commands(base, cli_env, tmp_path):
    names = {s["name"] for s in run_json("segment", "list")["segments"]}
    assert "isp_internet_no_tv" in names
    shown = run_json("segment", "show", "isp_internet_no_tv")
    assert "SELECT customers.id" in shown["sql"] and "'no'" not in shown["sql"]
    assert shown["rule"]["all"][0] == {"attribute": "internet", "equals": "yes"}
    result = run_json("segment", "preview", "business_cards_running_out", "--as-of", "2026-04-05")
    assert result["count"] == 1 and result["sample"][0]["due"][0]["due_on"] == "2026-04-11"
    unknown = run_cli("segment", "preview", "nope")
    assert unknown.exit_code == 1 and "unknown segment 'nope'" in unknown.output
    metrics = run_json("metrics", "--by", "category", "--until", "2026-04-04")
    assert {r["slice"] for r in metrics["rows"]} >= {"travel", "cat_goods"}
    assert run_cli("metrics", "--by", "planet").exit_code == 1
    exported = run_json("audience", "export", "email_marketing_ok", "--out", tmp_path / "a.csv", "--hash", "sha256")
    assert exported["emails"] == 4 and exported["hashed"] is True
    assert run_json("segment", "refresh")["customers_with_purchases"] == 5


def test_user_segment_files_come_from_the_search_path(base, cli_env, tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("segments:\n  moscow:\n    description: Москва\n    rule: {region: Москва}\n", encoding="utf-8")
    monkeypatch.setenv("TOUCHFLOW_SEGMENTS_PATH", str(path))
    assert run_json("segment", "preview", "moscow")["count"] == 4
    path.write_text("segments:\n  moscow:\n    rule: {region: }\n", encoding="utf-8")
    result = run_cli("segment", "list")
    assert result.exit_code == 1 and "mine.yaml" in result.output and "moscow" in result.output


def test_importing_purchases_refreshes_the_statistics_of_those_customers(base, cli_env, tmp_path):
    path = write_csv(tmp_path / "more.csv", ["customer", "date", "product", "category", "quantity", "amount"],
                     [["HAIR", "2026-04-01", "Воск", "hair_care", "1", "900"]])
    summary = run_json("import", "purchases", path)
    assert summary["created"] == 1 and "stats_refresh_seconds" in summary
    with base.connect() as conn:
        stats = {row.customer_id: row for row in conn.execute(select(CustomerStats.__table__))}
    assert len(stats) == 6
    assert any(row.total_amount == 900.0 and row.last_purchase_on == date(2026, 4, 1) for row in stats.values())

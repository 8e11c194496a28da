"""Prices, the cost each claimed touch records, and a campaign's budget kept across runs and processes."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.pricing import Prices, prices_for
from channels.render.sms import sms_info
from crm.importing import import_file
from crm.ledger import budget
from crm.models import Touch
from crm.persons import refresh_persons
from flows.spec import CampaignSpec, SpecError, load_spec
from tests.helpers import write_csv
from tests.test_campaigns import run, spec
from touchflow.settings import Settings, reset_settings

touches = Touch.__table__
LONG = "Александра-Виктория"  # makes the winback SMS longer than one UCS-2 segment (70 characters)


def build(engine, tmp_path: Path, n: int, *, long_every: int = 0) -> None:
    """n customers C000..: email and phone, marketing consent for both; every ``long_every``-th has a long name."""
    rows = [[f"C{i:03d}", f"Клиент {i}", LONG if long_every and i % long_every == 0 else "Ян", "Europe/Moscow",
             f"c{i}@mail.ru", f"+7916100{i:04d}", "yes", "ab"[i % 2]] for i in range(n)]
    consents = [[f"C{i:03d}", channel, "marketing", "granted", "2025-01-01 10:00"]
                for i in range(n) for channel in ("email", "sms")]
    header = ["external_id", "name", "first_name", "timezone", "email", "phone", "attr.target", "attr.half"]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", header, rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def rows_of(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(touches).order_by(touches.c.id)).all()


def test_prices_default_then_settings_then_the_campaign(tmp_path, monkeypatch):
    prices = Prices()
    assert prices.cost("sms", segments=2) == Decimal("7.0000") and prices.cost("email") == Decimal("0.1000")
    assert prices.cost("telegram") == 0 and prices.cost("document") is None
    assert prices.cost("voice", text="слово " * 131) == Decimal("6.0000")  # two started minutes at 3.00
    assert prices.cost("call") == Decimal("36.0000")                       # 3 expected minutes at 12.00
    (tmp_path / "touchflow.toml").write_text("[prices]\nsms = 3.2\ncall_minutes = 5\n", encoding="utf-8")
    monkeypatch.setenv("TOUCHFLOW_CONFIG", str(tmp_path / "touchflow.toml"))
    monkeypatch.setenv("TOUCHFLOW_PRICES_EMAIL", "0.25")
    reset_settings()
    configured = Settings()
    assert configured.prices_sms == Decimal("3.2") and configured.prices_email == Decimal("0.25")
    chosen = prices_for(configured, {"sms": 2.9})
    assert (chosen.sms, chosen.email, chosen.call_minutes) == (Decimal("2.9"), Decimal("0.25"), Decimal("5"))
    assert chosen.cost("call") == Decimal("60.0000")
    with pytest.raises(ValueError, match="prices: unknown price 'fax'"):
        Prices().override({"fax": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npurpose: marketing\noffer: o\ntemplate: winback\nchannels: [sms]\nsegment: s\n"
                   "prices: {sms: -1}\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad.yaml: prices.sms: .*greater than or equal to 0"):
        load_spec(bad)
    bad.write_text("name: x\npurpose: marketing\noffer: o\ntemplate: winback\nchannels: [sms]\nsegment: s\n"
                   "prices: {fax: 1}\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"prices.fax: Extra inputs are not permitted"):
        load_spec(bad)


def test_a_claimed_touch_records_its_price_sms_by_segments(engine, tmp_path):
    build(engine, tmp_path, 6, long_every=2)
    summary, _ = run(engine, spec(channels=["sms"], prices={"sms": 2.5}), tmp_path)
    sent = [row for row in rows_of(engine) if row.status == "sent"]
    assert len(sent) == 6
    segments = Counter(sms_info(row.body).segments for row in sent)
    assert segments == {1: 3, 2: 3}  # the long names take a second segment
    assert all(row.cost == Decimal("2.5") * sms_info(row.body).segments for row in sent)
    build_more = spec(name="mail", offer="mail-1", channels=["email"], policy={"cap_max": 5})
    run(engine, build_more, tmp_path, min_gap_hours=0)
    mail = [row for row in rows_of(engine) if row.campaign == "mail"]
    assert [row.cost for row in mail] == [Decimal("0.1")] * 6


def test_a_budget_stops_the_run_and_is_kept_across_runs(engine, tmp_path):
    build(engine, tmp_path, 12)
    dry, _ = run(engine, spec(channels=["sms"], prices={"sms": 2}, budget=9), tmp_path, page=5, dry_run=True)
    assert dry["channels"] == {"sms": {"would_send": 4}} and dry["not_contacted"] == {"budget_exhausted": 8}
    first, _ = run(engine, spec(channels=["sms"], prices={"sms": 2}, budget=9), tmp_path, page=5)
    rows = rows_of(engine)
    assert len(rows) == 12 and len({row.customer_id for row in rows}) == 12  # everyone is in the history
    assert Counter(row.status for row in rows) == {"sent": 4, "skipped": 8}
    assert {row.reason for row in rows if row.status == "skipped"} == {"budget_exhausted"}
    assert all(row.cost is None for row in rows if row.status == "skipped")
    assert first["not_contacted"] == {"budget_exhausted": 8}
    detail = next(row.detail for row in rows if row.reason == "budget_exhausted")
    assert "budget of 9" in detail
    with engine.connect() as conn:
        assert budget.spent(conn, "promo") == Decimal(8)
    # the next run of the campaign finds 8 of its 9 spent: it contacts no one
    again, _ = run(engine, spec(channels=["sms"], offer="promo-2", prices={"sms": 2}, budget=9), tmp_path,
                   min_gap_hours=0)
    assert again["channels"] == {} and again["not_contacted"] == {"budget_exhausted": 12}
    # a larger budget: the run goes on where the money ran out (the first ones are cooling down)
    more, _ = run(engine, spec(channels=["sms"], prices={"sms": 2}, budget=20), tmp_path)
    assert more["channels"] == {"sms": {"sent": 6}}
    assert more["not_contacted"] == {"cooling_down": 4, "budget_exhausted": 2}
    with engine.connect() as conn:
        assert budget.spent(conn, "promo") == Decimal(20)


def test_a_fallback_or_a_copy_is_not_sent_past_the_budget(engine, tmp_path):
    build(engine, tmp_path, 4)
    the_spec = spec(channels=["email", "sms"], duplicate_in="sms", prices={"email": 1, "sms": 2}, budget=7)
    summary, _ = run(engine, the_spec, tmp_path)
    rows = [row for row in rows_of(engine) if row.status == "sent"]
    # four emails claimed first (4), then copies by SMS while they fit (2 × 2 would make 8 > 7: one fits)
    assert Counter(row.channel for row in rows) == {"email": 4, "sms": 1}
    with engine.connect() as conn:
        assert budget.spent(conn, "promo") <= 7


def _spender(url: str, outbox: str, barrier, half: str) -> None:
    from datetime import datetime, timezone

    from crm.db import make_engine
    from flows.engine import run_campaign

    engine = make_engine(url)
    the_spec = CampaignSpec(name="budgeted", rule={"attribute": "half", "equals": half}, purpose="marketing",
                            offer="budgeted-1", template="winback", channels=["sms"], budget=50,
                            prices={"sms": 1.5}, policy={"quiet_hours": "off"},
                            offer_values={"discount_percent": 5})
    barrier.wait()
    run_campaign(engine, the_spec, now=datetime.now(timezone.utc), page_size=3,
                 settings=Settings(sms_transport="file", outbox_dir=outbox, send_attempts=1, min_gap_hours=0))


def test_two_processes_of_one_campaign_never_spend_past_its_budget(engine, db_url, tmp_path):
    """Two runs of one campaign in two processes at once, over halves of the base (no person lock in common to
    hold them back), claiming three people at a time: only the database's budget lock keeps the sum."""
    build(engine, tmp_path, 60, long_every=3)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_spender, args=(db_url, str(tmp_path / "outbox"), barrier, half))
               for half in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    rows = rows_of(engine)
    spent = sum((row.cost for row in rows if row.status != "skipped"), Decimal(0))
    assert Decimal(48) <= spent <= Decimal(50)  # the money is used, never exceeded (a message costs 1.5 or 3)
    with engine.connect() as conn:
        assert budget.spent(conn, "budgeted") == spent
    sent = Counter(row.customer_id for row in rows if row.status == "sent")
    assert set(sent.values()) == {1}
    assert len(list((tmp_path / "outbox" / "sms").glob("*"))) == len(sent)
    exhausted = {row.customer_id for row in rows if row.reason == "budget_exhausted"}
    assert len(sent) + len(exhausted - set(sent)) == 60  # everyone: touched, or told the money ran out
    assert {row.reason for row in rows if row.status == "skipped"} == {"budget_exhausted"}
    assert len({row.run_id for row in rows if row.status == "sent"}) == 2  # both runs spent


def test_one_run_in_two_worker_processes_keeps_its_budget(engine, db_url, tmp_path):
    """The batches of one run shared by two worker processes: their claims meet at the same budget lock."""
    from datetime import datetime, timezone

    from flows.engine import run_campaign

    build(engine, tmp_path, 400)  # 100 batches: the second process starts while batches remain (40 were not enough)
    the_spec = CampaignSpec(name="pooled", rule={"attribute": "target", "equals": "yes"}, purpose="marketing",
                            offer="pooled-1", template="winback", channels=["sms"], budget=21, prices={"sms": 2},
                            policy={"quiet_hours": "off"}, offer_values={"discount_percent": 5})
    summary = run_campaign(engine, the_spec, now=datetime.now(timezone.utc), page_size=4, workers=2,
                           settings=Settings(sms_transport="file", outbox_dir=str(tmp_path / "out"), send_attempts=1,
                                             database_url=db_url, min_gap_hours=0))
    assert len(summary["other"]["batches_by_worker"]) == 2  # both processes claimed
    assert summary["channels"] == {"sms": {"sent": 10}} and summary["not_contacted"] == {"budget_exhausted": 390}
    with engine.connect() as conn:
        assert budget.spent(conn, "pooled") == Decimal(20)

"""Offers valid for the day of sending: `valid_until` rules evaluated on the run's date, recorded on every touch;
a fixed date already past refuses the run, saying which field and what to write instead."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from docx import Document
from sqlalchemy import func, select

from crm.models import CampaignRun, Touch
from flows import engine as campaign_engine
from flows.spec import CampaignSpec, SpecError, resolve_offer, valid_until
from tests.helpers import run_cli
from tests.test_campaigns import build_base, settings
from touchflow.settings import reset_settings

DEC15 = date(2026, 12, 15)            # a Tuesday
NOON = datetime(2026, 12, 15, 9, 0, tzinfo=timezone.utc)
touches = Touch.__table__


@pytest.fixture
def probe(tmp_path, monkeypatch) -> str:
    """A project template whose email shows the offer's date; its meta.yaml fixes 30 November."""
    folder = tmp_path / "templates" / "offer_probe"
    folder.mkdir(parents=True)
    (folder / "email_subject.txt").write_text("Скидка", encoding="utf-8")
    (folder / "email.txt").write_text("до {{ offer.valid_until }} ({{ offer.valid_until | day_month(locale) }})",
                                      encoding="utf-8")
    (folder / "meta.yaml").write_text("offer:\n  key: probe\n  valid_until: '2026-11-30'\n", encoding="utf-8")
    monkeypatch.setenv("TOUCHFLOW_TEMPLATES_DIR", str(tmp_path / "templates"))
    reset_settings()
    return "offer_probe"


def probe_spec(**offer_values) -> CampaignSpec:
    return CampaignSpec(name="probe", rule={"attribute": "target", "equals": "yes"}, purpose="marketing",
                        offer="probe-1", template="offer_probe", channels=["email"], policy={"quiet_hours": "off"},
                        offer_values=offer_values)


def test_rules_are_evaluated_on_the_given_day():
    assert valid_until("end_of_month", DEC15) == date(2026, 12, 31)
    assert valid_until("end_of_month", date(2028, 2, 3)) == date(2028, 2, 29)
    assert valid_until("end_of_week", DEC15) == date(2026, 12, 20)              # the Sunday
    assert valid_until("end_of_week", date(2026, 12, 20)) == date(2026, 12, 20)
    assert valid_until("+14d", DEC15) == valid_until("+2w", DEC15) == date(2026, 12, 29)
    assert valid_until("2027-01-10", DEC15) == valid_until(date(2027, 1, 10), DEC15) == date(2027, 1, 10)
    with pytest.raises(ValueError, match="end_of_month, end_of_week, \\+14d"):
        valid_until("soon", DEC15)
    meta = {"key": "x", "discount_percent": 10, "valid_until": "2026-11-30"}
    assert resolve_offer(meta, {"valid_days": 14}, DEC15, template="t", campaign="c") == {
        "key": "x", "discount_percent": 10, "valid_days": 14, "valid_until": date(2026, 12, 29)}
    assert resolve_offer({"valid_until": "end_of_week"}, {}, DEC15, template="t", campaign="c")["valid_until"] == \
        date(2026, 12, 20)
    assert "valid_until" not in resolve_offer({"key": "x"}, {}, DEC15, template="t", campaign="c")


def test_a_run_on_15_december_promises_31_december_and_records_it_on_every_touch(engine, tmp_path, probe):
    build_base(engine, tmp_path)
    spec = probe_spec(valid_until="end_of_month", items=[{"product": "Корм", "quantity": 1, "unit_price": 500}])
    spec = spec.model_copy(update={"document": "proposal"})
    run = campaign_engine.start(engine, spec, now=NOON, as_of=DEC15, settings=settings(tmp_path))
    assert run.offer_values["valid_until"] == date(2026, 12, 31) == run.offer_valid_until
    for page in campaign_engine.segment_pages(run):
        campaign_engine.process_batch(run, page)
    summary = campaign_engine.finish(run)
    assert summary["channels"]["email"]["sent"] == 9             # 12 less no consent, revoked, same person
    with engine.connect() as conn:
        rows = conn.execute(select(touches.c.channel, touches.c.status, touches.c.offer_valid_until, touches.c.body)
                            .where(touches.c.run_id == run.run_id)).all()
    assert {row.offer_valid_until for row in rows} == {date(2026, 12, 31)}      # sent and skipped alike
    assert {row.status for row in rows} >= {"sent", "skipped"}
    sent = [row.body for row in rows if row.status == "sent" and row.channel == "email"]
    assert sent and all(body == "до 2026-12-31 (31 декабря)" for body in sent)
    document = next((tmp_path / "outbox" / "documents").glob("proposal-*.docx"))
    assert "Предложение действительно до 31.12.2026." in [p.text for p in Document(document).paragraphs]


def test_a_fixed_date_already_past_refuses_the_run_before_anything_is_recorded(engine, tmp_path, probe):
    build_base(engine, tmp_path)
    with pytest.raises(SpecError, match="template offer_probe: meta.yaml offer.valid_until: 2026-11-30 is before "
                                        "the run's date 2026-12-15"):
        campaign_engine.start(engine, probe_spec(), now=NOON, as_of=DEC15, settings=settings(tmp_path))
    with pytest.raises(SpecError, match="campaign probe: offer_values.valid_until: 2026-12-01 is before"):
        campaign_engine.start(engine, probe_spec(valid_until="2026-12-01"), now=NOON, as_of=DEC15,
                              settings=settings(tmp_path))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(CampaignRun.__table__)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(touches)).scalar() == 0
    # the same spec, on a day the date still holds, runs
    run = campaign_engine.start(engine, probe_spec(), now=NOON, as_of=date(2026, 11, 23), settings=settings(tmp_path))
    assert run.offer_valid_until == date(2026, 11, 30)
    campaign_engine.finish(run)


def _spec_file(tmp_path: Path, offer: str) -> Path:
    path = tmp_path / "past.yaml"
    path.write_text("name: past\npurpose: marketing\noffer: past-1\ntemplate: winback\nchannels: [email]\n"
                    f"rule: {{attribute: target, equals: 'yes'}}\noffer_values: {offer}\n", encoding="utf-8")
    return path


def test_campaign_check_and_run_say_which_field_and_what_to_do(cli_env, tmp_path):
    assert run_cli("db", "upgrade").exit_code == 0
    past = _spec_file(tmp_path, "{discount_percent: 15, valid_until: 2020-01-31}")
    for command in (("campaign", "check", past), ("campaign", "run", past, "--direct")):
        result = run_cli(*command)
        assert result.exit_code == 1, result.output
        assert "offer_values.valid_until: 2020-01-31 is before the run's date" in result.output
        assert "end_of_month" in result.output and "valid_days: 14" in result.output
    wrong = run_cli("campaign", "check", _spec_file(tmp_path, "{valid_until: soon}"))
    assert wrong.exit_code == 1 and "offer_values" in wrong.output and "'soon'" in wrong.output
    both = run_cli("campaign", "check", _spec_file(tmp_path, "{valid_until: end_of_month, valid_days: 3}"))
    assert both.exit_code == 1 and "give valid_until or valid_days, not both" in both.output
    assert run_cli("campaign", "check", _spec_file(tmp_path, "{valid_until: end_of_month}")).exit_code == 0

"""Campaign runs on SQLite and PostgreSQL: decisions, claims, caps, quiet hours, fallbacks, crash safety."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from channels.errors import AddressRejected, OptedOut
from crm.importing import import_file
from crm.models import Consent, ContactLock, ContactPoint, Touch, TouchEvent
from crm.persons import refresh_persons
from flows import engine as campaign_engine
from flows.spec import CampaignSpec, SpecError, load_spec
from segments.stats import refresh
from tests.helpers import run_cli, run_json, write_csv
from touchflow.settings import Settings

NOON = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)    # 12:00 Moscow
NIGHT = datetime(2026, 11, 23, 20, 0, tzinfo=timezone.utc)  # 23:00 Moscow
touches = Touch.__table__


def build_base(engine, tmp_path: Path, n: int = 12) -> None:
    """n customers P01..: email + phone; P02 and P03 are one person (shared phone); consent varies."""
    rows, consents = [], []
    for i in range(1, n + 1):
        phone = "+79160000002" if i == 3 else f"+7916000{i:04d}"
        rows.append([f"P{i:02d}", f"Клиент {i}", f"Имя{i}", "Europe/Moscow", f"p{i}@mail.ru", phone, "yes"])
        if i != 5:  # P05 never consented
            for channel in ("email", "sms", "call"):
                consents.append([f"P{i:02d}", channel, "marketing", "granted", "2025-01-01 10:00"])
    consents.append(["P06", "email", "marketing", "revoked", "2026-01-01 10:00"])
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "first_name", "timezone",
                                                                    "email", "phone", "attr.target"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)
    refresh(engine)


def promo_spec(engine, tmp_path: Path, monkeypatch, name: str = "promo") -> Path:
    """The base, a file outbox under ``tmp_path``, and a spec mailing the ``target`` customers (email, then SMS)."""
    from touchflow.settings import reset_settings

    build_base(engine, tmp_path)
    monkeypatch.setenv("TOUCHFLOW_OUTBOX_DIR", str(tmp_path / "outbox"))
    reset_settings()
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\npurpose: marketing\noffer: {name}-1\ntemplate: winback\nchannels: [email, sms]\n"
                    "rule: {attribute: target, equals: 'yes'}\npolicy: {quiet_hours: 'off'}\n", encoding="utf-8")
    return path


def spec(**kwargs) -> CampaignSpec:
    values = dict(name="promo", rule={"attribute": "target", "equals": "yes"}, purpose="marketing", offer="promo-1",
                  template="winback", channels=["email", "sms"], offer_values={"discount_percent": 15})
    values.update(kwargs)
    return CampaignSpec(**values)


def settings(tmp_path: Path, **kwargs) -> Settings:
    """Memory transports; no minimum gap, so that campaigns run one after another at one moment
    each show their own rule (the gap and the arbitration between campaigns: tests/test_arbitration.py)."""
    values = dict(email_transport="memory", sms_transport="memory", voice_transport="memory",
                  telegram_transport="memory", outbox_dir=str(tmp_path / "outbox"), send_attempts=1, min_gap_hours=0)
    values.update(kwargs)
    return Settings(**values)


def run(engine, the_spec, tmp_path, *, now=NOON, dry_run=False, plant=None, page=5, **kwargs):
    """Run a campaign directly; ``plant`` maps an address to an error its channel raises."""
    r = campaign_engine.start(engine, the_spec, dry_run=dry_run, now=now, settings=settings(tmp_path, **kwargs))
    for name in the_spec.channels:
        channel = campaign_engine.channel_for(r, name)
        if plant and hasattr(channel, "fail_with"):
            channel.fail_with.update(plant)
    campaign_engine.process_deferred(r)
    for ids in campaign_engine.segment_pages(r, page):
        campaign_engine.process_batch(r, ids)
    return campaign_engine.finish(r), r


def history(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(touches).order_by(touches.c.id)).all()


def test_every_selected_customer_ends_in_the_history_once(engine, tmp_path):
    build_base(engine, tmp_path)
    summary, r = run(engine, spec(), tmp_path)
    rows = history(engine)
    assert summary["selected"] == 12
    assert len(rows) == 12 and len({row.customer_id for row in rows}) == 12
    reasons = Counter(row.reason for row in rows if row.status == "skipped")
    assert reasons == {"no_consent": 1, "same_person": 1}             # P05; P03 shares P02's phone
    opted = next(row for row in rows if row.address == "p6@mail.ru" or row.customer_id == 6)
    assert opted.channel == "sms"                                       # P06 revoked email: falls to sms
    sent = [row for row in rows if row.status == "sent"]
    assert len(sent) == 10 and all(row.consent_id and row.template == "winback" and row.template_hash for row in sent)
    assert all(row.body and "15%" in row.body and row.provider_message_id for row in sent)
    outbox = r.channels["email"].outbox
    assert len(outbox) == 9 and all(m.unsubscribe_url and "/unsubscribe/" in m.unsubscribe_url for m in outbox)
    assert all(m.unsubscribe_url in m.text for m in outbox)           # the header's link is the body's link
    with engine.connect() as conn:
        moves = conn.execute(select(TouchEvent.__table__.c.status)).scalars().all()
    assert Counter(moves) == {"claimed": 10, "sending": 10, "sent": 10, "skipped": 2}  # every row has its first event


def test_a_rerun_sends_nothing_and_says_why(engine, tmp_path):
    build_base(engine, tmp_path)
    run(engine, spec(), tmp_path)
    summary, r = run(engine, spec(), tmp_path)
    assert summary["channels"] == {}
    assert summary["not_contacted"] == {"cooling_down": 10, "no_consent": 1, "same_person": 1}
    assert r.channels["email"].outbox == []


def test_the_same_offer_is_not_given_twice_by_another_campaign_but_the_cap_counts_all(engine, tmp_path):
    build_base(engine, tmp_path)
    run(engine, spec(), tmp_path)
    other, _ = run(engine, spec(name="promo-rep-2", channels=["sms"]), tmp_path)
    assert other["not_contacted"]["cooling_down"] == 10
    capped, _ = run(engine, spec(name="another", offer="promo-2", policy={"cap_max": 1}), tmp_path)
    assert capped["not_contacted"]["capped"] == 10
    allowed, _ = run(engine, spec(name="third", offer="promo-3", policy={"cap_max": 2}), tmp_path)
    assert sum(c.get("sent", 0) for c in allowed["channels"].values()) == 10


def test_quiet_hours_defer_and_a_later_run_sends(engine, tmp_path):
    build_base(engine, tmp_path)
    night, _ = run(engine, spec(), tmp_path, now=NIGHT)
    assert night["channels"] == {"email": {"deferred": 9}, "sms": {"deferred": 1}}
    deferred = [row for row in history(engine) if row.status == "deferred"]
    assert {row.due_at for row in deferred} == {datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)}
    early, _ = run(engine, spec(), tmp_path, now=datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc))
    assert early["channels"] == {}
    morning, r = run(engine, spec(), tmp_path, now=datetime(2026, 11, 24, 7, 0, tzinfo=timezone.utc))
    assert len(r.channels["email"].outbox) == 9
    statuses = Counter(row.status for row in history(engine) if row.run_id == deferred[0].run_id)
    assert statuses["sent"] == 10


def test_permanent_failures_fall_back_and_mark_the_address(engine, tmp_path):
    build_base(engine, tmp_path)
    plant = {"p1@mail.ru": AddressRejected("550 no such user", code=550, channel="email"),
             "+79160000004": OptedOut("21610", code=21610, channel="sms")}
    summary, r = run(engine, spec(channels=["email", "sms"]), tmp_path, plant=plant)
    rows = history(engine)
    p1 = [row for row in rows if row.customer_id == 1]
    assert [(row.channel, row.status) for row in p1] == [("email", "failed"), ("sms", "sent")]
    assert p1[0].error_code == "550"
    with engine.connect() as conn:
        status = conn.execute(select(ContactPoint.__table__.c.status).where(
            ContactPoint.__table__.c.value == "p1@mail.ru")).scalar_one()
        locks = conn.execute(select(func.count()).select_from(ContactLock.__table__)
                             .where(ContactLock.__table__.c.touch_id == p1[0].id)).scalar_one()
    assert status == "bounced" and locks == 0
    # P04's sms is only a fallback when email fails; plant an email failure for P04 too
    plant = {"p4@mail.ru": AddressRejected("550", code=550, channel="email"),
             "+79160000004": OptedOut("21610", code=21610, channel="sms")}
    run(engine, spec(name="again", offer="promo-9"), tmp_path, plant=plant)
    with engine.connect() as conn:
        revoked = conn.execute(select(Consent.__table__).where(Consent.__table__.c.customer_id == 4,
                                                                Consent.__table__.c.granted.is_(False))).all()
    assert [(c.channel, c.source) for c in revoked] == [("sms", "sms_provider_opt_out")]


def test_holdout_and_dry_run_send_and_claim_nothing(engine, tmp_path):
    build_base(engine, tmp_path)
    dry, r = run(engine, spec(), tmp_path, dry_run=True)
    assert dry["channels"] == {"email": {"would_send": 9}, "sms": {"would_send": 1}}
    assert dry["samples"] and "15%" in dry["samples"][0]["text"]
    assert history(engine) == [] and r.channels["email"].outbox == []
    held, r = run(engine, spec(name="control", holdout_percent=100), tmp_path)
    assert held["not_contacted"] == {"holdout": 12} and r.channels["email"].outbox == []


def test_a_dry_run_says_what_a_real_run_made_right_after_does(engine, tmp_path):
    """Cooldowns, caps and same-person records across pages applied read-only: the numbers match the real run."""
    build_base(engine, tmp_path)
    run(engine, spec(name="earlier", offer="shared-offer", rule={"field": "external_id", "in": ["P01", "P07"]}),
        tmp_path)                                                       # P01 and P07 already had this offer
    capped = spec(name="capper", offer="other", policy={"cap_max": 1})
    run(engine, capped.model_copy(update={"rule": {"field": "external_id", "equals": "P09"}}), tmp_path)
    plan = spec(offer="shared-offer", policy={"cap_max": 1})
    for page_size in (1, 5, 50):                                        # P02/P03 (one person) on different pages
        dry, _ = run(engine, plan, tmp_path, dry_run=True, page=page_size)
        assert history_count(engine) == 3                               # the dry run wrote nothing
    real, _ = run(engine, plan, tmp_path)
    assert dry["not_contacted"] == real["not_contacted"]
    assert {ch: counts["would_send"] for ch, counts in dry["channels"].items()} == \
        {ch: counts["sent"] for ch, counts in real["channels"].items()}
    assert real["not_contacted"]["cooling_down"] == 2 and real["not_contacted"]["capped"] == 1


def history_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(touches)).scalar_one()


def _die_in(engine, tmp_path, module, target: str, *, expire: bool = True):
    """Start a run and kill it (KeyboardInterrupt) when it reaches ``module.<target>``; its lease then runs out."""
    r = campaign_engine.start(engine, spec(), now=NOON, settings=settings(tmp_path))
    original = getattr(module, target)

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    setattr(module, target, die)
    try:
        with pytest.raises(KeyboardInterrupt):
            for page in campaign_engine.segment_pages(r, 50):
                campaign_engine.process_batch(r, page)
    finally:
        setattr(module, target, original)
    r.lease.stop()  # the process is gone: nobody renews its lease
    if expire:
        expire_lease(engine, r.run_id)
    return r


def expire_lease(engine, run_id: str) -> None:
    """Let a run's lease run out (as it does a minute after its process died)."""
    from datetime import timedelta

    from sqlalchemy import update

    from crm.models import CampaignRun, utcnow

    with engine.begin() as conn:
        conn.execute(update(CampaignRun.__table__).where(CampaignRun.__table__.c.id == run_id)
                     .values(lease_until=utcnow() - timedelta(seconds=1)))


def test_a_run_dead_before_sending_releases_its_claims_to_the_next_run(engine, tmp_path):
    from flows import delivery

    build_base(engine, tmp_path)
    _die_in(engine, tmp_path, delivery.Sending, "feed")
    assert Counter(row.status for row in history(engine)) == {"claimed": 10, "skipped": 2}
    summary, r2 = run(engine, spec(), tmp_path)
    assert summary["other"]["released_from_earlier_runs"] == 10
    assert len(r2.channels["email"].outbox) == 9 and len(r2.channels["sms"].outbox) == 1
    assert Counter(row.reason for row in history(engine) if row.status == "skipped")["run_interrupted"] == 10


def test_touches_handed_over_when_a_run_died_become_unknown_and_are_not_resent(engine, tmp_path):
    from flows import delivery

    build_base(engine, tmp_path)
    _die_in(engine, tmp_path, delivery, "_send")
    time.sleep(0.5)  # the SMS stream, marking its first touch in a thread when the run died, may still commit it
    statuses = Counter(row.status for row in history(engine))
    marked = statuses["sending"]           # the first email chunk (and perhaps the SMS one) was handed over
    assert marked in (delivery.CHUNK_FIRST, delivery.CHUNK_FIRST + 1) and statuses["claimed"] == 10 - marked
    summary, r2 = run(engine, spec(), tmp_path)
    assert summary["other"]["unknown_from_earlier_runs"] == marked
    assert summary["other"]["released_from_earlier_runs"] == 10 - marked
    sent_again = {m.to for channel in r2.channels.values() for m in channel.outbox}
    handed_over = {row.address for row in history(engine) if row.status == "unknown"}
    assert len(handed_over) == marked and not sent_again & handed_over    # never resent
    assert Counter(row.status for row in history(engine))["unknown"] == marked


def test_a_live_run_keeps_its_claims_while_another_run_of_the_campaign_starts(engine, tmp_path):
    """A second run beside a live one (a schedule overlapping a manual run) settles nothing of the first."""
    from flows import delivery

    build_base(engine, tmp_path)
    first = _die_in(engine, tmp_path, delivery.Sending, "feed", expire=False)  # claimed, lease still valid
    summary, r2 = run(engine, spec(), tmp_path)
    assert "released_from_earlier_runs" not in summary["other"] and r2.channels["email"].outbox == []
    assert summary["not_contacted"] == {"cooling_down": 10, "no_consent": 1, "same_person": 1}
    assert Counter(row.status for row in history(engine) if row.run_id == first.run_id)["claimed"] == 10
    expire_lease(engine, first.run_id)
    summary, r3 = run(engine, spec(), tmp_path)
    assert summary["other"]["released_from_earlier_runs"] == 10
    assert len(r3.channels["email"].outbox) == 9 and len(r3.channels["sms"].outbox) == 1


def test_bad_specs_fail_before_anything_is_selected(tmp_path, engine, cli_env):
    path = tmp_path / "bad.yaml"
    path.write_text("name: Bad Name\npurpose: spam\noffer: x\ntemplate: winback\nchannels: [fax]\nsegment: s\n"
                    "colour: red\n", encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert str(path) in text and "name:" in text and "purpose:" in text and "channels.0" in text and "colour" in text
    result = run_cli("campaign", "run", path, "--direct")
    assert result.exit_code == 1 and "bad.yaml" in result.output
    good = tmp_path / "good.yaml"
    good.write_text("name: ok\npurpose: marketing\noffer: x\ntemplate: winback\nchannels: [telegram]\n"
                    "segment: nope\n", encoding="utf-8")
    assert "unknown segment 'nope'" in run_cli("campaign", "check", good).output
    good.write_text("name: ok\npurpose: marketing\noffer: x\ntemplate: winback\nchannels: [telegram]\n"
                    "segment: champions\n", encoding="utf-8")
    assert "has no part for telegram" in run_cli("campaign", "check", good).output


def test_campaign_and_history_commands(engine, cli_env, tmp_path, monkeypatch):
    path = promo_spec(engine, tmp_path, monkeypatch)
    dry = run_json("campaign", "run", path, "--direct", "--dry-run")
    assert dry["channels"]["email"]["would_send"] == 9
    done = run_json("campaign", "run", path, "--direct")
    assert done["channels"]["email"]["sent"] == 9
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 9
    rows = run_json("history", "--campaign", "promo")["rows"]
    assert len(rows) == 12 and {r["status"] for r in rows} == {"sent", "skipped"}
    person = run_json("history", "--customer", "P03")["rows"]
    assert {r["customer"] for r in person} == {"P02", "P03"}           # the whole person
    sent = next(r for r in person if r["status"] == "sent")
    assert sent["consent_source"] == "import:k.csv" and sent["consent_at"].startswith("2025-01-01")
    assert run_json("history", "--purpose", "service")["count"] == 0
    assert run_json("history", "--since", "2099-01-01")["count"] == 0
    assert run_json("history", "--campaign", "promo", "--status", "sent", "--channel", "email")["count"] == 9
    csv_out = run_cli("history", "--campaign", "promo", "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("id,created_at,customer") and len(csv_out.splitlines()) == 13


def test_duplicate_in_a_second_channel_under_the_same_claim(engine, tmp_path):
    build_base(engine, tmp_path)
    summary, r = run(engine, spec(channels=["email"], duplicate_in="sms"), tmp_path)
    assert len(r.channels["email"].outbox) == 9 and len(r.channels["sms"].outbox) == 9
    assert summary["channels"]["sms"] == {"sent": 9} and summary["other"]["duplicated:sms"] == 9
    rows = history(engine)
    per_customer = Counter(row.customer_id for row in rows if row.status == "sent")
    assert set(per_customer.values()) == {2}
    with engine.connect() as conn:
        offer_locks = conn.execute(select(func.count()).select_from(ContactLock.__table__)
                                   .where(ContactLock.__table__.c.scope == "offer")).scalar_one()
    assert offer_locks == 9


def test_a_proposal_per_touch_is_attached_to_the_email_and_recorded(engine, tmp_path):
    from io import BytesIO

    from docx import Document

    build_base(engine, tmp_path)
    items = [{"product": "Пакет «ТВ + интернет»", "quantity": 1, "unit_price": 990, "discount_percent": 10}]
    summary, r = run(engine, spec(channels=["email"], document="proposal",
                                  offer_values={"discount_percent": 10, "items": items}), tmp_path)
    outbox = r.channels["email"].outbox
    assert len(outbox) == 9 and all(len(m.attachments) == 1 for m in outbox)
    name, content, mime_type = outbox[0].attachments[0]
    assert name.startswith("proposal-") and mime_type.endswith("wordprocessingml.document")
    text = "\n".join(c.text for t in Document(BytesIO(content)).tables for row in t.rows for c in row.cells)
    assert "Пакет «ТВ + интернет»" in text and "891\u00a0₽" in text
    documents = [row for row in history(engine) if row.channel == "document"]
    assert len(documents) == 9 and all(row.body_hash and row.campaign == "promo" for row in documents)

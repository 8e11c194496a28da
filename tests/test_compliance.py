"""The compliance report finds each planted violation and none on a healthy history; export and erasure."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import insert, select

from crm.ledger.compliance import check
from crm.importing import import_file
from crm.models import CallTask, ContactPoint, Customer, Touch
from crm.persons import refresh_persons
from flows import engine as campaign_engine
from flows.spec import CampaignSpec
from tests.helpers import run_cli, run_json, write_csv
from touchflow.settings import Settings

NOON = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def base(engine, tmp_path):
    rows = [[f"V{i}", f"Клиент {i}", f"v{i}@mail.ru", f"+7916000000{i}"] for i in range(1, 8)]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone"], rows))
    consents = [[f"V{i}", "email", "marketing", "granted", "2025-01-01"] for i in range(1, 8) if i != 1]
    consents.append(["V2", "email", "marketing", "revoked", "2026-06-01"])
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def plant(engine, customer: int, at: datetime, *, run: str, offer: str = "o", channel: str = "email") -> None:
    with engine.begin() as conn:
        conn.execute(insert(Touch.__table__).values(customer_id=customer, person_key=str(customer), channel=channel,
                                                    purpose="marketing", status="sent", run_id=run, offer=offer,
                                                    created_at=at, updated_at=at, sent_at=at))


def test_each_planted_violation_is_found(engine, tmp_path):
    base(engine, tmp_path)
    plant(engine, 1, NOON, run="r1")                                            # V1 never consented
    plant(engine, 2, NOON, run="r2")                                            # V2 revoked in June
    plant(engine, 3, datetime(2026, 11, 23, 20, 30, tzinfo=timezone.utc), run="r3")  # 23:30 in Moscow
    for day in range(4):                                                        # V4: four contacts in four days
        plant(engine, 4, NOON + timedelta(days=day), run=f"cap{day}", offer=f"cap{day}")
    plant(engine, 5, NOON, run="a", offer="same")                               # V5: one offer twice in 10 days
    plant(engine, 5, NOON + timedelta(days=10), run="b", offer="same")
    plant(engine, 7, NOON, run="g1", offer="g1")                                # V7: two campaigns 3 hours apart
    plant(engine, 7, NOON + timedelta(hours=3), run="g2", offer="g2")
    plant(engine, 6, NOON, run="dup", offer="x")                                # V6: one run, two channels: fine
    plant(engine, 6, NOON, run="dup", offer="x", channel="sms")
    with engine.begin() as conn:
        conn.execute(insert(CallTask.__table__), [
            {"customer_id": 7, "person_id": 7, "due_on": NOON.date(), "status": "open", "script": "",
             "created_at": NOON} for _ in range(2)])
    counts = check(engine).to_dict()["counts"]
    assert counts == {"marketing_without_consent": 2, "after_opt_out": 1, "inside_quiet_hours": 1,
                      "over_frequency_cap": 1, "within_min_gap": 1, "offer_within_cooldown": 1,
                      "several_open_call_tasks": 1}
    # the sms duplicate of V6 has no sms consent: it is the second "without consent"


def test_a_history_written_by_campaigns_is_clean(engine, cli_env, tmp_path):
    base(engine, tmp_path)
    settings = Settings(email_transport="memory", sms_transport="memory", send_attempts=1)
    for day, (name, offer) in enumerate((("one", "o1"), ("two", "o2"), ("three", "o3"), ("four", "o4"),
                                         ("again", "o1"))):                   # a day apart: the minimum gap
        spec = CampaignSpec(name=name, rule={"field": "name", "exists": True}, purpose="marketing", offer=offer,
                            template="winback", channels=["email", "sms"], offer_values={"discount_percent": 5})
        run = campaign_engine.start(engine, spec, now=NOON + timedelta(days=day), settings=settings)
        for page in campaign_engine.segment_pages(run):
            campaign_engine.process_batch(run, page)
        campaign_engine.finish(run)
    report = run_json("compliance", "report")
    assert report["total"] == 0 and report["checked_touches"] == 15          # 5 consenting × cap of 3
    night = CampaignSpec(name="night", rule={"field": "name", "exists": True}, purpose="marketing", offer="o9",
                         template="winback", channels=["email"], policy={"cap_max": 9},
                         offer_values={"discount_percent": 5})
    run = campaign_engine.start(engine, night, now=NOON + timedelta(days=4, hours=12), settings=settings)
    for page in campaign_engine.segment_pages(run):
        campaign_engine.process_batch(run, page)
    campaign_engine.finish(run)
    assert run_cli("compliance", "report").exit_code == 0                      # deferred, not sent at night


def test_export_erase_and_reimport_stays_suppressed(engine, cli_env, tmp_path):
    base(engine, tmp_path)
    plant(engine, 3, NOON, run="r")
    data = json.loads(run_cli("customer", "export", "V3").stdout)
    assert data["customer"]["name"] == "Клиент 3" and data["touches"] and data["consents"]
    erased = run_json("customer", "erase", "V3", "--yes")
    assert erased["contact_points"] == 2
    with engine.connect() as conn:
        names = conn.execute(select(Customer.__table__.c.name)).scalars().all()
        touch = conn.execute(select(Touch.__table__).where(Touch.__table__.c.customer_id == 3)).one()
    assert "Клиент 3" not in names and touch.address is None and touch.status == "sent"
    assert run_cli("customer", "export", "V3").exit_code == 1
    import_file(engine, "customers", write_csv(tmp_path / "again.csv", ["external_id", "name", "email", "phone"],
                                               [["V3-NEW", "Снова Клиент", "V3@Mail.ru", "8 916 000 00 03"]]))
    with engine.connect() as conn:
        statuses = conn.execute(select(ContactPoint.__table__.c.status).join(
            Customer.__table__, Customer.__table__.c.id == ContactPoint.__table__.c.customer_id).where(
            Customer.__table__.c.external_id == "V3-NEW")).scalars().all()
    assert statuses == ["blocked", "blocked"]


def test_verify_detects_edits_and_deletions(engine, cli_env, tmp_path):
    from sqlalchemy import delete, update

    from crm.models import Consent

    base(engine, tmp_path)
    spec = CampaignSpec(name="sealed", rule={"field": "name", "exists": True}, purpose="marketing", offer="s1",
                        template="winback", channels=["email"], offer_values={"discount_percent": 5})
    run = campaign_engine.start(engine, spec, now=NOON, settings=Settings(email_transport="memory"))
    for page in campaign_engine.segment_pages(run):
        campaign_engine.process_batch(run, page)
    campaign_engine.finish(run)                                        # seals
    assert run_json("compliance", "verify")["intact"] is True
    with engine.begin() as conn:
        conn.execute(update(Touch.__table__).where(Touch.__table__.c.id == 3).values(offer="something else"))
    tampered = run_cli("compliance", "verify")
    assert tampered.exit_code == 5 and "touches" in tampered.output
    with engine.begin() as conn:
        conn.execute(update(Touch.__table__).where(Touch.__table__.c.id == 3).values(offer="s1"))
    assert run_cli("compliance", "verify").exit_code == 0
    with engine.begin() as conn:
        first = conn.execute(select(Consent.__table__.c.id).order_by(Consent.__table__.c.id)).scalars().first()
        conn.execute(delete(Consent.__table__).where(Consent.__table__.c.id == first))
    deleted = run_json("compliance", "verify", expect=5)
    assert deleted["intact"] is False and any("consents" in p for p in deleted["problems"])


def test_seal_continues_from_the_newest_seal_and_matches_a_full_recomputation(engine, cli_env, tmp_path):
    from crm.ledger.audit import seal
    from crm.ledger.audit.chains import _chains
    from crm.models import ChainSeal

    base(engine, tmp_path)
    seal(engine)
    for number in (1, 2):
        spec = CampaignSpec(name=f"sealed-{number}", rule={"field": "name", "exists": True}, purpose="marketing",
                            offer=f"s{number}", template="winback", channels=["email"],
                            offer_values={"discount_percent": 5})
        campaign_engine.run_campaign(engine, spec, now=NOON, settings=Settings(email_transport="memory"))
    with engine.connect() as conn:
        newest = conn.execute(select(ChainSeal.__table__).where(ChainSeal.__table__.c.table_name == "touch_events")
                              .order_by(ChainSeal.__table__.c.last_id.desc())).first()
        sealed_runs = conn.execute(select(ChainSeal.__table__.c.id)
                                   .where(ChainSeal.__table__.c.table_name == "touch_events")).all()
    assert len(sealed_runs) == 2                      # one seal per run, the second continuing the first
    *_, full = _chains(engine, "touch_events")        # recomputed from the first row
    assert full == (newest.last_id, newest.rows, newest.chain)
    assert run_json("compliance", "verify")["intact"] is True


def _micros(instant: datetime, dialect: str) -> int:
    """An instant as the chains count it: microseconds since the epoch; on SQLite, whole seconds as its
    ``strftime('%s')`` gives them (rounded in milliseconds: .9995 s and later count the next second)."""
    micros = (instant - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    if dialect == "sqlite" and instant.microsecond >= 999500:
        micros += 1_000_000
    return micros


def test_sqlite_counts_an_instant_at_9995_ms_and_later_in_the_next_second(engine):
    """The quirk the version-2 chains keep on SQLite (``chains._micros``), pinned so that it cannot drift."""
    from sqlalchemy import DateTime, cast, literal

    from crm.ledger.audit.chains import _micros as counted

    instants = ["2026-12-07 20:24:39.999870", "2026-12-07 20:24:39.999499", "2026-12-07 20:24:39.000001",
                "2026-12-07 20:24:39"]
    with engine.connect() as conn:
        stored = [literal(text) if engine.dialect.name == "sqlite" else cast(literal(text), DateTime())
                  for text in instants]                                  # as each database keeps an instant
        got = [conn.execute(select(counted(value, engine.dialect.name))).scalar_one() for value in stored]
    parsed = [datetime.fromisoformat(text).replace(tzinfo=timezone.utc) for text in instants]
    assert got == [_micros(instant, engine.dialect.name) for instant in parsed]


def test_chains_hash_each_row_as_its_canonical_json(engine, cli_env, tmp_path):
    """The chains equal a recomputation from the definition: SHA-256(chain + compact JSON array of the row).

    The row's instants are computed by the database (SQL differs per dialect); this reads them as
    datetimes and converts them in Python, so both ways must agree to the microsecond.

    Version 2 (``CHAINS``) and the frozen version 1 (``LEGACY_CHAINS``: sorted-key JSON objects).
    """
    import hashlib

    from crm.ledger.audit.chains import CHAINS, LEGACY_CHAINS, _canonical, _chains

    base(engine, tmp_path)
    spec = CampaignSpec(name="canonical", rule={"field": "name", "exists": True}, purpose="marketing",
                        offer="c1", template="winback", channels=["email"], offer_values={"discount_percent": 5})
    campaign_engine.run_campaign(engine, spec, now=NOON, settings=Settings(email_transport="memory"))
    run_json("customer", "erase", "V3", "--yes")                      # an erasure, so that chain has a row
    definitions = [(name, table, columns, False) for name, (table, columns) in CHAINS.items()]
    definitions += [(name, table, columns, True) for name, (table, columns) in LEGACY_CHAINS.items()]
    for name, table, columns, legacy in definitions:
        chain = hashlib.sha256((name if legacy else f"touchflow chain v2 {name}").encode()).hexdigest()
        with engine.connect() as conn:
            rows = conn.execute(select(*[table.c[c] for c in columns]).order_by(table.c.id)).all()
        for row in rows:  # instants come back aware (UTC), as the definition has them
            if legacy:
                text = _canonical(dict(zip(columns, row)))
            else:  # instants as microseconds since the epoch, booleans as 0 / 1
                text = json.dumps([_micros(v, engine.dialect.name) if isinstance(v, datetime)
                                   else int(v) if isinstance(v, bool) else v for v in row],
                                  ensure_ascii=False, separators=(",", ":")).encode()
            chain = hashlib.sha256(chain.encode() + text).hexdigest()
        assert rows, name
        *_, (last_id, count, computed) = _chains(engine, name, legacy=legacy)
        assert (last_id, count, computed) == (rows[-1][0], len(rows), chain), (name, legacy)


def test_row_text_writes_what_the_json_encoder_writes():
    """Field-by-field text equals the encoder's for awkward values (escapes, non-ASCII, numbers, nesting)."""
    from datetime import date, datetime, timezone

    from crm.ledger.audit.chains import _canonical, _row_text

    columns = ("id", "text", "flag", "ratio", "extra", "day", "at", "nothing", "zeta", "alpha")
    values = [(1, 'кавычки " и \\ слэш\n\t\x00\x1f \u2028 😀', True, 0.1, {"b": [1, None], "a": "é"},
               date(2026, 1, 2), datetime(2026, 11, 23, 9, 0, 0, 5), None, -17, False),
              (2, "", False, 1e100, [], date(1999, 12, 31), None, None, 0, "x")]
    text = _row_text(columns, {"at"})
    for row in values:
        expected = dict(zip(columns, row))
        if expected["at"] is not None:
            expected["at"] = expected["at"].replace(tzinfo=timezone.utc)
        assert text(row).encode() == _canonical(expected)


def test_a_seal_taken_while_a_writer_is_open_stays_valid_after_it_commits(engine, cli_env, tmp_path):
    """An uncommitted lower id must not end up inside a seal (PostgreSQL), nor block the seal for good."""
    import threading

    from crm.ledger.audit import seal, verify
    from crm.models import Consent

    consents = Consent.__table__
    base(engine, tmp_path)
    spec = CampaignSpec(name="open-writer", rule={"field": "name", "exists": True}, purpose="marketing",
                        offer="w1", template="winback", channels=["email"], offer_values={"discount_percent": 5})
    campaign_engine.run_campaign(engine, spec, now=NOON, settings=Settings(email_transport="memory"))
    row = {"customer_id": 4, "channel": "sms", "purpose": "marketing", "granted": True, "at": NOON,
           "recorded_at": NOON}
    writer = engine.connect()
    transaction = writer.begin()
    sealing = threading.Thread(target=seal, args=(engine,))
    try:
        writer.execute(insert(consents).values(**row, source="written first, committed last"))  # the lower id
        if engine.dialect.name == "postgresql":  # another writer commits a higher id meanwhile
            with engine.begin() as conn:
                conn.execute(insert(consents).values(**row, source="written second, committed first"))
        sealing.start()
        sealing.join(1.0)
        waited = sealing.is_alive()  # for the open writer
    finally:
        transaction.commit()
        writer.close()
    sealing.join(30)
    # SQLite: the open writer's row is invisible and nothing else is new, so the seal need not wait
    assert (waited or engine.dialect.name == "sqlite") and not sealing.is_alive()
    seal(engine)                                                      # seals the late row too
    report = verify(engine)
    assert report.problems == [] and report.unsealed["consents"] == 0


def test_views_exports_and_erasures_at_the_command_line_go_to_the_access_log_first(engine, cli_env, tmp_path):
    """Each names the record and the person by internal id only; the erasure's row is written before it."""
    from crm.ledger.access import entries

    base(engine, tmp_path)
    with engine.connect() as conn:
        v3 = conn.execute(select(Customer.__table__.c.id).where(Customer.__table__.c.external_id == "V3")).scalar()
    run_json("customer", "show", "V3")
    assert run_cli("customer", "export", "V3").exit_code == 0
    run_json("customer", "erase", "V3", "--yes", "--reason", "subject request")
    assert run_cli("customer", "show", "NOBODY").exit_code != 0            # nobody to log
    rows = entries(engine)
    assert [(r["action"], r["customer_id"], r["role"], r["method"]) for r in rows] == [
        ("card", v3, "cli", "CLI"), ("export", v3, "cli", "CLI"), ("erasure", v3, "cli", "CLI")]
    assert rows[-1]["detail"] == "subject request" and rows[-1]["route"] == "touchflow customer erase"
    assert all("V3" not in json.dumps(r, default=str) for r in rows)

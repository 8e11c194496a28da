"""Tamper evidence: each kind of tampering with a history written by campaign runs is found; an intact one is clean.

Every test runs on SQLite and, with TOUCHFLOW_TEST_POSTGRES_URL set, on PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, insert, select, update

from crm.db import write_tx
from crm.importing import import_file
from crm.keys import SIGNING, stored_key
from crm.ledger import consents as consent_ledger
from crm.ledger.audit import seal, verify
from crm.ledger.audit.chains import _chains
from crm.ledger.audit.seals import _mac
from crm.ledger.moves import move
from crm.models import (CampaignRun, ChainSeal, Consent, ContactLock, Customer, Erasure, InstanceKey, Touch,
                        TouchEvent)
from crm.persons import refresh_persons
from flows import engine as campaign_engine
from flows.spec import CampaignSpec
from tests.helpers import run_cli, run_json, write_csv
from touchflow.settings import Settings, reset_settings

NOON = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
touches, events, seals = Touch.__table__, TouchEvent.__table__, ChainSeal.__table__
consents, runs, keys = Consent.__table__, CampaignRun.__table__, InstanceKey.__table__


def base(engine, tmp_path) -> None:
    """Seven customers: V1 never consented, V2 revoked, V3–V7 may be emailed."""
    rows = [[f"V{i}", f"Клиент {i}", f"v{i}@mail.ru", f"+7916000000{i}"] for i in range(1, 8)]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone"], rows))
    entries = [[f"V{i}", "email", "marketing", "granted", "2025-01-01"] for i in range(2, 8)]
    entries.append(["V2", "email", "marketing", "revoked", "2026-06-01"])
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              entries))
    refresh_persons(engine)


def campaign(engine, number: int) -> dict:
    """A real campaign run (memory transport); it seals at its end and records the seals in its summary."""
    spec = CampaignSpec(name=f"audit-{number}", rule={"field": "name", "exists": True}, purpose="marketing",
                        offer=f"a{number}", template="winback", channels=["email"],
                        offer_values={"discount_percent": 5})
    return campaign_engine.run_campaign(engine, spec, now=NOON + timedelta(days=10 * number),
                                        settings=Settings(email_transport="memory"))


def history(engine, tmp_path, campaigns: int = 1) -> list[dict]:
    base(engine, tmp_path)
    return [campaign(engine, number) for number in range(1, campaigns + 1)]


def touch_of(engine, external_id: str, status: str | None = None) -> int:
    """The newest touch of a customer (in a status)."""
    query = (select(touches.c.id).join(Customer.__table__, Customer.__table__.c.id == touches.c.customer_id)
             .where(Customer.__table__.c.external_id == external_id).order_by(touches.c.id.desc()))
    if status:
        query = query.where(touches.c.status == status)
    with engine.connect() as conn:
        return conn.execute(query).scalars().first()


def edit(engine, table, row_id: int, **values) -> None:
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == row_id).values(**values))


def found(report, *words: str) -> bool:
    """Whether one of the problems names all ``words``."""
    return any(all(word in problem for word in words) for problem in report.problems)


def seal_row(engine, table: str, seq: int):
    with engine.connect() as conn:
        return conn.execute(select(seals).where(seals.c.table_name == table, seals.c.seq == seq)).one()


@pytest.fixture
def secret(monkeypatch):
    """An installation with its own TOUCHFLOW_SECRET_KEY (production setup): seals are keyed with it."""
    monkeypatch.setenv("TOUCHFLOW_SECRET_KEY", "a secret kept outside the database")
    reset_settings()
    yield b"a secret kept outside the database"
    reset_settings()


def test_an_intact_history_verifies_clean(engine, cli_env, tmp_path):
    """Two runs, a bounce, a legacy (version-1) seal, an erased customer, an opt-out: no problem, nothing unsealed."""
    history(engine, tmp_path)
    delivered = touch_of(engine, "V3", "sent")                    # a detail the legacy chain covers, erased later
    assert move(engine, [{"touch_id": delivered, "status": "delivered", "detail": "read at 09:14"}]) == {delivered}
    with engine.begin() as conn:  # seals as the version before keyed seals wrote them
        for name in ("touches", "touch_events", "consents"):
            *_, (last_id, rows, chain) = _chains(engine, name, legacy=True)
            conn.execute(insert(seals).values(table_name=name, last_id=last_id, rows=rows, chain=chain,
                                              created_at=NOON, version=1))
    campaign(engine, 2)
    bounced = touch_of(engine, "V4", "sent")
    assert move(engine, [{"touch_id": bounced, "status": "failed", "error_code": "5.1.1",
                          "error_message": "no such user"}]) == {bounced}
    with write_tx(engine) as conn:
        consent_ledger.record(conn, channel="email", purpose="marketing", granted=False, source="unsubscribe",
                              wording=None, customer_ids=[5])
    assert run_json("customer", "erase", "V3", "--yes")["touches"] == 2
    sealed = seal(engine)
    assert set(sealed) == {"touches", "touch_events", "consents", "erasures", "access_log"}

    report = verify(engine)
    assert report.problems == [] and report.unsealed == {name: 0 for name in sealed}
    assert [note for note in report.notes if "version-1 seals" in note and "erasure stripped" in note]
    assert [note for note in report.notes if "keyed with the key kept in the database" in note]  # no secret set
    assert report.checked["touch state"] == report.checked["touches"] > 0
    with engine.connect() as conn:
        erased = conn.execute(select(touches.c.id, touches.c.address, touches.c.address_digest, touches.c.body)
                              .where(touches.c.customer_id == 3).order_by(touches.c.id)).all()
    assert erased and all(row.address is None and row.address_digest and row.body is None for row in erased)
    erased_ids = [row.id for row in erased]
    assert run_cli("compliance", "verify").exit_code == 0
    # the legacy seal is really checked; the erasure is what allows the missing addresses
    edit(engine, seals, _legacy_id(engine), chain="0" * 64)
    assert found(verify(engine), "touches", "version-1 seal")
    with engine.begin() as conn:
        conn.execute(delete(Erasure.__table__))
    report = verify(engine)
    assert found(report, "erasures", "seal #1", "missing")
    assert found(report, f"touch {erased_ids[0]}:", "address was removed", "customer 3 has no erasure")


def _legacy_id(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(seals.c.id).where(seals.c.version == 1, seals.c.table_name == "touches")
                            ).scalar_one()


EDITS = {  # what is edited → the words the problem must name
    "status": (lambda e: (touches, touch_of(e, "V5", "sent"), {"status": "delivered"}), ("status", "'delivered'")),
    "reason": (lambda e: (touches, touch_of(e, "V1", "skipped"), {"reason": "customer_asked"}), ("reason",)),
    "sent_at": (lambda e: (touches, touch_of(e, "V6", "sent"), {"sent_at": NOON - timedelta(days=30)}),
                ("sent_at",)),
    "error_code": (lambda e: (touches, touch_of(e, "V4", "failed"), {"error_code": "4.2.2"}), ("error_code",)),
    "address": (lambda e: (touches, touch_of(e, "V7", "sent"), {"address": "someone.else@mail.ru"}),
                ("address_digest",)),
    "body": (lambda e: (touches, touch_of(e, "V7", "sent"), {"body": "a different text"}), ("body_hash",)),
}


@pytest.mark.parametrize("field", list(EDITS))
def test_an_edited_touch_is_found(engine, cli_env, tmp_path, field):
    """Status, reason, sent_at, error_code (not chained: they move) are checked against the events; address and
    body against their chained digest and hash."""
    history(engine, tmp_path)
    bounced = touch_of(engine, "V4", "sent")
    move(engine, [{"touch_id": bounced, "status": "failed", "error_code": "5.1.1"}])
    seal(engine)
    assert verify(engine).problems == []
    make, words = EDITS[field]
    table, row_id, values = make(engine)
    edit(engine, table, row_id, **values)
    report = verify(engine)
    assert found(report, f"touch {row_id}:", *words), report.problems
    result = run_json("compliance", "verify", expect=5)
    assert result["intact"] is False and any(f"touch {row_id}" in p for p in result["problems"])


def test_a_deleted_event_is_found(engine, cli_env, tmp_path):
    """A middle event (sending): the chain breaks; the sent move's event: the touch no longer folds from its events."""
    history(engine, tmp_path)
    assert verify(engine).problems == []
    middle, last = touch_of(engine, "V6", "sent"), touch_of(engine, "V5", "sent")
    with engine.begin() as conn:
        statuses = conn.execute(select(events.c.status).where(events.c.touch_id == last)
                                .order_by(events.c.id)).scalars().all()
        assert statuses == ["claimed", "sending", "sent"]
        conn.execute(delete(events).where(events.c.touch_id == middle, events.c.status == "sending"))
    report = verify(engine)
    assert found(report, "touch_events", "seal #1", "changed"), report.problems
    assert not found(report, f"touch {middle}:")                   # its state still folds: only the chain knows
    with engine.begin() as conn:
        conn.execute(delete(events).where(events.c.touch_id == last, events.c.status == "sent"))
    report = verify(engine)
    assert found(report, f"touch {last}:", "status is 'sent' but its events say 'sending'"), report.problems


def test_an_opt_out_deleted_after_the_last_campaign_seal_is_found(engine, cli_env, tmp_path):
    """The web server seals each consent it writes (``seal(tables=["consents"])``): deleting the opt-out shows.

    Without that seal the opt-out is in the unsealed tail, which ``verify`` reports and no longer seals.
    """
    history(engine, tmp_path)
    with write_tx(engine) as conn:
        consent_ledger.record(conn, channel="email", purpose="marketing", granted=False, source="unsubscribe",
                              wording=None, customer_ids=[6])
    report = verify(engine)
    assert report.problems == [] and report.unsealed["consents"] == 1
    assert run_json("compliance", "verify")["unsealed"]["consents"] == 1
    with engine.connect() as conn:
        assert conn.execute(select(seals.c.id).where(seals.c.table_name == "consents")).all() == \
            [(seal_row(engine, "consents", 1).id,)]                  # verify sealed nothing
    assert seal(engine, tables=["consents"]) == {"consents": {"seq": 2, "last_id": _newest(engine, consents),
                                                              "rows": 8}}
    with engine.begin() as conn:
        conn.execute(delete(consents).where(consents.c.customer_id == 6, consents.c.granted.is_(False)))
    for _ in range(2):                                               # and it stays found: nothing re-sealed it
        report = verify(engine)
        assert found(report, "consents", "seal #2", "missing"), report.problems
    assert run_cli("compliance", "verify", "--seal").exit_code == 5
    with engine.connect() as conn:                                   # --seal does not seal a tampered history
        assert conn.execute(select(func.max(seals.c.seq)).where(seals.c.table_name == "consents")).scalar() == 2


def _newest(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(table.c.id).order_by(table.c.id.desc())).scalars().first()


def test_a_deleted_middle_seal_is_found(engine, cli_env, tmp_path):
    history(engine, tmp_path, campaigns=3)
    assert seal_row(engine, "touches", 3)
    with engine.begin() as conn:
        conn.execute(delete(seals).where(seals.c.table_name == "touches", seals.c.seq == 2))
    report = verify(engine)
    assert found(report, "touches: seal #2 is missing"), report.problems


def test_a_deleted_newest_seal_recorded_by_a_run_is_found(engine, cli_env, tmp_path):
    summaries = history(engine, tmp_path, campaigns=2)
    assert summaries[1]["sealed"]["touches"]["seq"] == 2
    with engine.connect() as conn:
        recorded = conn.execute(select(runs.c.summary).where(runs.c.id == summaries[1]["run_id"])).scalar_one()
    assert recorded["sealed"] == summaries[1]["sealed"]               # the run keeps what it sealed
    with engine.begin() as conn:
        conn.execute(delete(seals).where(seals.c.table_name == "touches", seals.c.seq == 2))
    report = verify(engine)
    assert found(report, "touches", summaries[1]["run_id"], "sealed #2", "newest seals were deleted"), report.problems


def test_a_forged_seal_is_found(engine, cli_env, tmp_path, secret):
    """An edited touch and its seal's chain recomputed: without the key the mac gives it away; with the key kept
    in the database (readable by whoever edits it) the change of key does."""
    history(engine, tmp_path, campaigns=2)
    assert verify(engine).problems == [] and verify(engine).notes == []  # keyed with TOUCHFLOW_SECRET_KEY
    second = seal_row(engine, "touches", 2)
    edit(engine, touches, second.last_id, offer="a forged offer")
    report = verify(engine)
    assert found(report, "touches", "changed since seal #2")
    *_, (last_id, rows, chain) = _chains(engine, "touches", upto=second.last_id)
    edit(engine, seals, second.id, chain=chain)                     # the chain matches again; the mac cannot
    report = verify(engine)
    assert not found(report, "changed since seal #2")
    assert found(report, "touches", "seal #2", "mac does not match"), report.problems
    stored = stored_key(engine, SIGNING)                          # the installation's own key, in the database
    first = seal_row(engine, "touches", 1)
    edit(engine, seals, second.id, mac=_mac(stored.encode(), "touches", 2, last_id, rows, chain, first.mac))
    report = verify(engine)
    assert found(report, "touches", "seal #2", "keyed with the key kept in the database"), report.problems
    assert _mac(secret, "touches", 2, second.last_id, second.rows, second.chain, first.mac) == second.mac


def test_a_database_rolled_back_to_an_older_copy_fails_against_the_anchor(engine, cli_env, tmp_path):
    """The older copy verifies on its own; only the anchor kept outside the database shows it is older."""
    anchor = tmp_path / "anchor.json"
    history(engine, tmp_path)
    assert run_json("compliance", "verify", "--anchor", anchor)["anchor"] == str(anchor)
    older = snapshot(engine)
    first = json.loads(anchor.read_text())
    campaign(engine, 2)
    assert run_cli("compliance", "verify", "--anchor", anchor).exit_code == 0
    assert json.loads(anchor.read_text())["heads"]["touches"]["seq"] == first["heads"]["touches"]["seq"] + 1
    saved = anchor.read_bytes()
    restore(engine, older)
    assert verify(engine).problems == []                             # consistent in itself
    result = run_json("compliance", "verify", "--anchor", anchor, expect=5)
    assert any("touches: seal #2, anchored in" in p and "older copy" in p for p in result["problems"]), result
    assert anchor.read_bytes() == saved                              # a failed verify leaves the anchor as it was
    assert not list(tmp_path.glob(".anchor.json.*"))                 # no temporary file left behind


HISTORY_TABLES = (consents, touches, events, seals, runs, ContactLock.__table__, Erasure.__table__)


def snapshot(engine) -> dict:
    """The history tables' rows: an older copy of the database (as a backup would hold it)."""
    with engine.connect() as conn:
        return {table.name: [dict(r._mapping) for r in conn.execute(select(table))] for table in HISTORY_TABLES}


def restore(engine, copy: dict) -> None:
    """Put the older copy back in place of the history tables' rows."""
    with engine.begin() as conn:
        for table in reversed(HISTORY_TABLES):
            conn.execute(delete(table))
        for table in HISTORY_TABLES:
            if copy[table.name]:
                conn.execute(insert(table), copy[table.name])


def test_the_anchor_finds_deleted_newest_seals_and_rows(engine, cli_env, tmp_path):
    """Newest rows and their seals deleted (no run recorded them): the anchor still knows them."""
    anchor = tmp_path / "anchor.json"
    history(engine, tmp_path)
    with write_tx(engine) as conn:
        consent_ledger.record(conn, channel="email", purpose="marketing", granted=False, source="unsubscribe",
                              wording=None, customer_ids=[7])
    seal(engine, tables=["consents"])
    assert run_cli("compliance", "verify", "--anchor", anchor).exit_code == 0
    with engine.begin() as conn:
        conn.execute(delete(consents).where(consents.c.customer_id == 7, consents.c.granted.is_(False)))
        conn.execute(delete(seals).where(seals.c.table_name == "consents", seals.c.seq == 2))
    assert verify(engine).problems == []                             # nothing inside the database shows it
    assert found(verify(engine, anchor=anchor), "consents: seal #2", "newest seals were deleted")


def test_verify_seals_only_when_asked_and_raising_the_marker_is_found(engine, cli_env, tmp_path):
    history(engine, tmp_path)
    campaign_rows = _newest(engine, touches)
    with write_tx(engine) as conn:
        consent_ledger.record(conn, channel="email", purpose="marketing", granted=False, source="unsubscribe",
                              wording=None, customer_ids=[4])
    assert run_json("compliance", "verify")["sealed"] == {}
    sealed = run_json("compliance", "verify", "--seal")["sealed"]
    assert sealed["consents"]["seq"] == 2 and sealed["touches"]["seq"] == 1
    assert verify(engine).unsealed["consents"] == 0
    with engine.begin() as conn:  # hide every touch from the state check
        conn.execute(update(keys).where(keys.c.name == "history_v2_after_touch").values(value=str(campaign_rows)))
    assert found(verify(engine), "history_v2_after_touch", "raised")


def test_concurrent_sealers_take_turns(engine, cli_env, tmp_path):
    """Several processes sealing at once (the server after each consent, a run at its end) never fork the seq."""
    import threading

    history(engine, tmp_path)
    for customer in (3, 4, 5):
        with write_tx(engine) as conn:
            consent_ledger.record(conn, channel="sms", purpose="marketing", granted=True, source=f"web {customer}",
                                  wording=None, customer_ids=[customer])
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(seal(engine, tables=["consents"])))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(results) == 4 and all(r == results[0] for r in results)   # all report the same newest seal
    with engine.connect() as conn:
        numbers = conn.execute(select(seals.c.seq).where(seals.c.table_name == "consents")
                               .order_by(seals.c.seq)).scalars().all()
    assert numbers == [1, 2, 3, 4]
    assert verify(engine).problems == []


def test_call_outcomes_and_documents_verify_clean(engine, cli_env, tmp_path):
    """Touches written already delivered, failed or sent (a call's outcome, a document) fold from their first event."""
    from tests.test_tasks import base as call_base, call_campaign, run as call_run, tasks

    call_base(engine, tmp_path)
    call_run(engine, tmp_path, call_campaign("tv-anna", "tv", "anna"))
    call_run(engine, tmp_path, call_campaign("tv-gone", "tv", "gone"))
    reached, wrong, _ = [task.id for task in tasks(engine)]
    run_json("tasks", "complete", str(reached), "--outcome", "reached")
    run_json("tasks", "complete", str(wrong), "--outcome", "wrong_number")
    columns = ["customer", "date", "product", "quantity", "amount"]
    import_file(engine, "purchases", write_csv(tmp_path / "p.csv", columns, [["G1", "2026-10-01", "ТВ", "1", "900"]]))
    run_json("proposal", "generate", "--template", "contract", "--customer", "G1", "--out", tmp_path)
    seal(engine)
    with engine.connect() as conn:
        document = conn.execute(select(touches.c.status).where(touches.c.channel == "document")).scalar_one()
        outcome = conn.execute(select(touches.c.id).where(touches.c.reason == "call_reached")).scalar_one()
        statuses = set(conn.execute(select(touches.c.status).where(touches.c.reason.like("call_%"))).scalars())
    assert document == "sent" and statuses == {"delivered", "failed"}
    assert verify(engine).problems == []
    edit(engine, touches, outcome, sent_at=NOON)
    assert found(verify(engine), f"touch {outcome}:", "sent_at")


def test_verify_while_a_campaign_writes_sees_no_tampering(engine, cli_env, tmp_path):
    """``verify`` reads one snapshot: moves, events and seals written meanwhile never look like edits."""
    import threading

    rows = [[f"W{i}", f"Клиент {i}", f"w{i}@mail.ru"] for i in range(1, 301)]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              [[r[0], "email", "marketing", "granted", "2025-01-01"] for r in rows]))
    refresh_persons(engine)
    seal(engine)
    spec = CampaignSpec(name="busy", rule={"field": "name", "exists": True}, purpose="marketing", offer="b1",
                        template="winback", channels=["email"], offer_values={"discount_percent": 5})
    running = threading.Thread(target=campaign_engine.run_campaign, args=(engine, spec),
                               kwargs={"now": NOON, "settings": Settings(email_transport="memory"), "page_size": 20})
    running.start()
    reports = []
    while running.is_alive() or not reports:
        reports.append(verify(engine))
    running.join()
    reports.append(verify(engine))
    assert len(reports) > 2 and [p for report in reports for p in report.problems] == []
    assert reports[-1].checked["touch state"] == 300 and reports[-1].unsealed["touches"] == 0

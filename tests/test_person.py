"""The person, everywhere: opt-outs, bounces and erasures reach every record of the address and the person;
locks follow records merged into one person; the compliance report counts per person and address."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from pathlib import Path

import httpx
from sqlalchemy import func, select

from channels.errors import AddressRejected
from crm.importing import import_file
from crm.ledger import consents
from crm.ledger.compliance import check
from crm.models import Consent, ContactLock, ContactPoint, Customer, Touch
from crm.persons import refresh_persons
from crm.privacy import erase
from flows import engine as campaign_engine
from flows.spec import CampaignSpec
from tests.helpers import write_csv
from tests.servers import free_port
from touchflow.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
NOON = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
touches = Touch.__table__


def base(engine, tmp_path: Path, rows: list[list[str]], *, persons: bool = True) -> None:
    """Customers (external id, email, phone) with email and SMS marketing granted to each record."""
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone"],
                                               [[r[0], f"Клиент {r[0]}", r[1], r[2]] for r in rows]))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              [[r[0], ch, "marketing", "granted", "2025-01-01 10:00"]
                                               for r in rows for ch in ("email", "sms")]))
    if persons:
        refresh_persons(engine)


def mail(name: str, offer: str, channels=("email",)) -> CampaignSpec:
    return CampaignSpec(name=name, rule={"field": "name", "contains": "Клиент"}, purpose="marketing", offer=offer,
                        template="winback", channels=list(channels),
                        policy={"quiet_hours": "off", "cap_max": 10, "min_gap_hours": 0},
                        offer_values={"discount_percent": 5})


def run(engine, spec: CampaignSpec, tmp_path: Path, *, now=NOON, **settings):
    values = {"email_transport": "memory", "sms_transport": "memory", "send_attempts": 1,
              "outbox_dir": str(tmp_path / "outbox")} | settings
    return campaign_engine.run_campaign(engine, spec, now=now, settings=Settings(**values))


def sent_to(engine, campaign: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(touches.c.address).where(touches.c.campaign == campaign,
                                                                   touches.c.status == "sent")).scalars())


def entries(engine) -> list[tuple]:
    c = Consent.__table__
    with engine.connect() as conn:
        return conn.execute(select(c.c.customer_id, c.c.channel, c.c.granted, c.c.source).order_by(c.c.id)).all()


def test_one_click_unsubscribe_through_the_served_app_covers_the_person(engine, db_url, tmp_path):
    """A and B share an email, C is A's by phone: one click from A's mail and none of them is mailed again."""
    base(engine, tmp_path, [["A", "shared@mail.ru", "+79160000001"], ["B", "shared@mail.ru", "+79160000002"],
                            ["C", "c@mail.ru", "+79160000001"], ["D", "d@mail.ru", "+79160000004"]])
    outbox = tmp_path / "outbox"
    first = run(engine, mail("promo", "promo-1"), tmp_path, email_transport="file")
    assert first["channels"]["email"]["sent"] == 2                       # the person A/B/C once, and D
    eml = next(p for p in (outbox / "email").glob("*.eml") if b"shared@mail.ru" in p.read_bytes())
    link = re.search(r"<(http[^>]+)>", message_from_bytes(eml.read_bytes())["List-Unsubscribe"]).group(1)
    port = free_port()
    env = {**os.environ, "TOUCHFLOW_DATABASE_URL": db_url, "TOUCHFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    server = subprocess.Popen([sys.executable, "-m", "touchflow.cli", "serve", "--port", str(port)], env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = link.replace(link.split("/unsubscribe/")[0], f"http://127.0.0.1:{port}")
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert httpx.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
        after_one = entries(engine)
        assert httpx.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200   # replayed
        assert entries(engine) == after_one                                                    # nothing added
    finally:
        server.terminate()
        server.wait(10)
    with engine.connect() as conn:
        ids = dict(conn.execute(select(Customer.__table__.c.external_id, Customer.__table__.c.id)).all())
    revoked = {cid for cid, channel, granted, source in after_one if source == "one_click_unsubscribe"}
    assert revoked == {ids["A"], ids["B"], ids["C"]}
    second = run(engine, mail("news", "news-1"), tmp_path)
    assert sent_to(engine, "news") == ["d@mail.ru"]
    assert second["not_contacted"] == {"opted_out": 3}                  # A, B and C: every record of the person


def test_the_report_finds_a_message_sent_after_the_address_opted_out_through_another_record(engine, tmp_path):
    """B was mailed after A (same address, not yet known as one person) unsubscribed: a violation."""
    base(engine, tmp_path, [["A", "shared@mail.ru", "+79160000001"], ["B", "shared@mail.ru", "+79160000002"]],
         persons=False)
    with engine.begin() as conn:  # the opt-out as it was written before: on A's record only
        consents.append(conn, [{"customer_id": 1, "channel": "email", "purpose": "marketing", "granted": False,
                                "at": NOON - timedelta(days=1), "source": "one_click_unsubscribe", "wording": None,
                                "recorded_at": NOON}])
        conn.execute(touches.insert().values(customer_id=2, person_key="2", channel="email", purpose="marketing",
                                             address="shared@mail.ru", status="sent", sent_at=NOON, created_at=NOON,
                                             updated_at=NOON, run_id="r", offer="o"))
    report = check(engine).to_dict()
    assert report["counts"]["after_opt_out"] == 1 and report["examples"]["after_opt_out"][0]["customer_id"] == 2


def test_a_bounce_and_an_erasure_reach_every_record_of_the_address(engine, tmp_path):
    base(engine, tmp_path, [["A", "gone@mail.ru", "+79160000001"], ["B", "gone@mail.ru", "+79160000002"],
                            ["E", "erase@mail.ru", "+79160000005"], ["F", "erase@mail.ru", "+79160000006"]],
         persons=False)
    spec = mail("promo", "promo-1")
    r = campaign_engine.start(engine, spec, now=NOON, settings=Settings(email_transport="memory", send_attempts=1))
    campaign_engine.channel_for(r, "email").fail_with["gone@mail.ru"] = AddressRejected("550 no such user",
                                                                                        code="550")
    for page in campaign_engine.segment_pages(r):
        campaign_engine.process_batch(r, page)
    campaign_engine.finish(r)
    erase(engine, "E")
    points = ContactPoint.__table__
    with engine.connect() as conn:
        status = dict(conn.execute(select(points.c.customer_id, points.c.status).where(points.c.kind == "email")).all())
    assert status[1] == status[2] == "bounced"                  # both records of the bounced address
    assert status[3] == status[4] == "blocked"                  # the erased address, on F's record too
    again = run(engine, mail("later", "later-1"), tmp_path)
    assert again["channels"] == {} and again["not_contacted"] == {"unreachable": 3}   # A, B, F (E is erased)


def test_locks_and_cooldowns_follow_records_merged_into_one_person(engine, tmp_path):
    """B got the offer; an import then shows A and B are one person: A does not get the same offer."""
    base(engine, tmp_path, [["A", "a@mail.ru", "+79160000001"], ["B", "b@mail.ru", "+79160000002"]])
    spec = CampaignSpec(name="only-b", rule={"field": "external_id", "equals": "B"}, purpose="marketing",
                        offer="isp-package", template="winback", channels=["email"],
                        policy={"quiet_hours": "off"}, offer_values={"discount_percent": 5})
    run(engine, spec, tmp_path)
    import_file(engine, "customers", write_csv(tmp_path / "link.csv", ["external_id", "phone"],
                                               [["B", "+79160000001"]]))          # now B shares A's phone
    refresh_persons(engine)
    lock = ContactLock.__table__
    with engine.connect() as conn:
        persons = set(conn.execute(select(Customer.__table__.c.person_id)).scalars())
        offer_locks = conn.execute(select(lock.c.person_id).where(lock.c.scope == "offer")).scalars().all()
    assert persons == {1} and offer_locks == [1]                                   # the lock moved with B
    everyone = CampaignSpec(name="all", rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                            offer="isp-package", template="winback", channels=["email"],
                            policy={"quiet_hours": "off"}, offer_values={"discount_percent": 5})
    summary = run(engine, everyone, tmp_path, now=NOON + timedelta(days=1))
    assert sent_to(engine, "all") == [] and summary["not_contacted"] == {"cooling_down": 1, "same_person": 1}


def test_the_report_counts_cooldowns_per_person_as_the_base_knows_them_now(engine, tmp_path):
    """The same offer to two records later merged into one person: one person, the offer twice."""
    base(engine, tmp_path, [["A", "a@mail.ru", "+79160000001"], ["B", "b@mail.ru", "+79160000002"]])
    with engine.begin() as conn:
        for customer, day in ((1, 0), (2, 3)):
            at = NOON + timedelta(days=day)
            conn.execute(touches.insert().values(customer_id=customer, person_key=str(customer), channel="email",
                                                 purpose="marketing", address=f"{'ab'[customer - 1]}@mail.ru",
                                                 status="sent", sent_at=at, created_at=at, updated_at=at,
                                                 run_id=f"r{customer}", offer="isp-package"))
    assert check(engine).to_dict()["counts"]["offer_within_cooldown"] == 0         # two persons
    import_file(engine, "customers", write_csv(tmp_path / "link.csv", ["external_id", "phone"],
                                               [["B", "+79160000001"]]))
    refresh_persons(engine)
    assert check(engine).to_dict()["counts"]["offer_within_cooldown"] == 1         # one person, twice


def test_a_call_opt_out_revokes_marketing_for_every_record_of_the_person(engine, tmp_path):
    from crm.ledger.calls import complete, list_tasks

    base(engine, tmp_path, [["A", "a@mail.ru", "+79160000001"], ["B", "b@mail.ru", "+79160000001"]])
    calls = CampaignSpec(name="calls", rule={"field": "external_id", "equals": "A"}, purpose="marketing",
                         offer="isp", template="isp_tv_package", channels=["call"], policy={"quiet_hours": "off"})
    with engine.begin() as conn:
        consents.append(conn, [{"customer_id": 1, "channel": "call", "purpose": "marketing", "granted": True,
                                "at": NOON - timedelta(days=9), "source": "t", "wording": None, "recorded_at": NOON}])
    run(engine, calls, tmp_path)
    task = list_tasks(engine)[0]
    complete(engine, task["id"], "opt_out", note="не звоните мне")
    with engine.connect() as conn:
        revoked = conn.execute(select(func.count()).select_from(Consent.__table__).where(
            Consent.__table__.c.channel == "all", Consent.__table__.c.granted.is_(False))).scalar_one()
    assert revoked == 2
    summary = run(engine, mail("after-call", "after-1", channels=("email", "sms")), tmp_path)
    assert summary["channels"] == {} and summary["not_contacted"] == {"opted_out": 2}

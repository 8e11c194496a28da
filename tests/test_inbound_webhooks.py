"""Replies through the running app: Twilio inbound SMS and POST /inbound/email, signed, stored once, linked, shown."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from email.message import EmailMessage

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from channels.inbound.email import from_bytes
from channels.inbound.signature import sign
from crm import accounts
from crm.db import write_tx
from crm.importing import import_file
from crm.ledger.audit import verify
from crm.ledger.touches import record_touch
from crm.models import Consent, Touch
from crm.timeline import person_of, timeline
from flows.engine import run_campaign
from flows.spec import CampaignSpec
from tests.console_base import PASSWORD, login
from tests.helpers import run_cli, run_json, write_csv
from tests.servers import free_port, running_app
from touchflow.server import create_app
from touchflow.settings import Settings

TOKEN = "twilio-auth-token"
SECRET = "inbound-email-secret"
touches = Touch.__table__


@pytest.fixture
def server(engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone"], [
        ["U1", "Один", "u1@mail.ru", "+79160000001"], ["U2", "Два", "u2@mail.ru", "+79160000002"]]))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"], [
        [c, ch, "marketing", "granted", "2025-01-01"] for c in ("U1", "U2") for ch in ("email", "sms")]))
    port = free_port()
    settings = Settings(public_url=f"http://127.0.0.1:{port}", twilio_auth_token=TOKEN, inbound_email_secret=SECRET)
    with running_app(create_app(engine, settings), port) as base:
        yield base


def inbound(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(touches).where(touches.c.direction == "in").order_by(touches.c.id)).all()


def sent_emails(engine, tmp_path) -> dict[str, bytes]:
    """Run a real campaign through the file transport: {address: the .eml bytes it wrote}."""
    spec = CampaignSpec(name="winter", rule={"field": "name", "exists": True}, purpose="marketing", offer="o-1",
                        template="winback", channels=["email"], policy={"quiet_hours": "off"},
                        offer_values={"discount_percent": 5})
    run_campaign(engine, spec, settings=Settings(email_transport="file", outbox_dir=str(tmp_path / "outbox"),
                                                 send_attempts=1))
    return {from_bytes(p.read_bytes()).to[0]: p.read_bytes() for p in (tmp_path / "outbox" / "email").glob("*.eml")}


def reply(original: bytes | None, text: str, *, sender: str = "u1@mail.ru", message_id: str = "<r1@mail.ru>") -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"], mail["Message-ID"] = sender, "shop@touchflow.ru", "Re: offer", message_id
    if original is not None:
        mail["In-Reply-To"] = from_bytes(original).message_id
    mail.set_content(text)
    return mail.as_bytes()


def post_email(base: str, payload: dict, *, secret: str = SECRET, timestamp: int | None = None,
               headers: dict | None = None) -> httpx.Response:
    body = json.dumps(payload).encode()
    signed = sign(secret, body, timestamp)
    return httpx.post(f"{base}/inbound/email", content=body,
                      headers={"Content-Type": "application/json", **signed, **(headers or {})})


def test_an_email_reply_is_linked_by_in_reply_to_stored_once_and_shown(engine, server, tmp_path, cli_env):
    emails = sent_emails(engine, tmp_path)
    with engine.connect() as conn:
        first = conn.execute(select(touches.c.id, touches.c.provider_message_id).where(
            touches.c.address == "u1@mail.ru", touches.c.status == "sent")).one()
    assert first.provider_message_id == from_bytes(emails["u1@mail.ru"]).message_id
    with write_tx(engine) as conn:  # a later email to the same address: the fallback would pick it
        later = record_touch(conn, {"person_key": "1", "customer_id": 1, "campaign": "spring", "purpose": "marketing",
                                    "channel": "email", "address": "u1@mail.ru", "status": "sent",
                                    "provider_message_id": "<later@touchflow.ru>",
                                    "created_at": datetime.now(timezone.utc),
                                    "updated_at": datetime.now(timezone.utc)})
    raw = reply(emails["u1@mail.ru"], "Да, интересно!\n\nOn Mon, 7 Dec 2026, touchflow <shop@x.ru> wrote:\n> Привет")
    answer = post_email(server, {"from": "u1@mail.ru", "subject": "Re: offer", "raw": raw.decode()})
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"touch_id": 0} == {"ok": True, "touch_id": 0, "new": True, "kind": "reply",
                                                "in_reply_to": first.id, "linked_by": "message-id"}
    again = post_email(server, {"raw": raw.decode()})                        # the provider retries
    assert again.json()["new"] is False and again.json()["touch_id"] == answer.json()["touch_id"]
    plain = post_email(server, {"from": "Один <U1@Mail.ru>", "subject": "вопрос", "text": "А доставка есть?",
                                "headers": {"Message-ID": "<r2@mail.ru>"}})
    assert plain.json()["linked_by"] == "address" and plain.json()["in_reply_to"] == later
    rows = inbound(engine)
    assert [(r.channel, r.address, r.status, r.in_reply_to, r.body, r.customer_id) for r in rows] == [
        ("email", "u1@mail.ru", "received", first.id, "Да, интересно!", 1),
        ("email", "u1@mail.ru", "received", later, "А доставка есть?", 1)]
    assert not verify(engine).problems

    items = timeline(engine, person_of(engine, 1)).items
    replies = [i for i in items if i["title"] == "reply.received"]
    assert [(i["detail"]["in_reply_to"], i["detail"]["reply"]) for i in replies] == [
        (later, "А доставка есть?"), (first.id, "Да, интересно!")]
    history = run_json("history", "--customer", "U1", "--direction", "in")["rows"]
    assert [(r["direction"], r["in_reply_to"], r["reply"]) for r in history] == [
        ("in", first.id, "Да, интересно!"), ("in", later, "А доставка есть?")]
    table = run_cli("history", "--customer", "U1").stdout
    assert "dir" in table and "in →" in table and "out" in table
    csv_rows = run_cli("history", "--customer", "U1", "--format", "csv").stdout.splitlines()
    assert csv_rows[0].endswith(",direction,in_reply_to,reply") and csv_rows[-1].endswith(f",in,{later},А доставка есть?")
    assert run_cli("history", "--direction", "sideways").exit_code == 2
    accounts.add_user(engine, "olga", "compliance", PASSWORD)
    page = login(server, "olga").get("/people/1").text                          # the console's timeline
    assert page.count("получен ответ") == 2 and "Да, интересно!" in page and "А доставка есть?" in page


def test_forged_stale_unsigned_or_unreadable_emails_change_nothing(engine, server):
    payload = {"from": "u2@mail.ru", "text": "hello", "headers": {"Message-ID": "<x@mail.ru>"}}
    assert post_email(server, payload, secret="guessed").status_code == 403
    assert post_email(server, payload, timestamp=int(time.time()) - 3600).status_code == 403
    assert httpx.post(f"{server}/inbound/email", json=payload).status_code == 403
    body = json.dumps(payload).encode()
    signed = sign(SECRET, body)
    tampered = httpx.post(f"{server}/inbound/email", content=body.replace(b"hello", b"HELLO"), headers=signed)
    assert tampered.status_code == 403 and "does not match" in tampered.text
    nobody = post_email(server, {"text": "who am I"})
    assert nobody.status_code == 400 and "sender" in nobody.text
    broken = b"{not json"
    assert httpx.post(f"{server}/inbound/email", content=broken, headers=sign(SECRET, broken)).status_code == 400
    assert inbound(engine) == []
    big = post_email(server, {"from": "u2@mail.ru", "text": "x" * 400_000})   # over the other routes' 256 KiB
    assert big.status_code == 200 and len(inbound(engine)) == 1


def test_an_unconfigured_secret_refuses_every_email(engine, tmp_path):
    from fastapi.testclient import TestClient

    client = TestClient(create_app(engine, Settings(inbound_email_secret=None)))
    body = b'{"from": "a@b.ru", "text": "hi"}'
    answer = client.post("/inbound/email", content=body, headers=sign("", body))
    assert answer.status_code == 403 and "TOUCHFLOW_INBOUND_EMAIL_SECRET" in answer.text and inbound(engine) == []


def _signed(base: str, params: dict) -> dict:
    return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(f"{base}/twilio/inbound", params)}


def test_every_inbound_sms_is_a_touch_once_and_stop_is_also_an_opt_out(engine, server):
    with write_tx(engine) as conn:
        sms = record_touch(conn, {"person_key": "2", "customer_id": 2, "campaign": "winter", "purpose": "marketing",
                                  "channel": "sms", "address": "+79160000002", "status": "sent",
                                  "created_at": datetime.now(timezone.utc), "updated_at": datetime.now(timezone.utc)})
    text = {"From": "+79160000002", "To": "+15005550006", "Body": "Да, перезвоните", "MessageSid": "SM100"}
    assert httpx.post(f"{server}/twilio/inbound", data=text).status_code == 403                     # unsigned
    assert httpx.post(f"{server}/twilio/inbound", data=text,
                      headers={"X-Twilio-Signature": "Zm9yZ2Vk"}).status_code == 403               # forged
    assert inbound(engine) == []
    for _ in range(2):                                                                             # and a retry
        assert httpx.post(f"{server}/twilio/inbound", data=text, headers=_signed(server, text)).status_code == 200
    stop = {"From": "+79160000002", "Body": "Stop", "MessageSid": "SM101"}
    for _ in range(2):
        assert httpx.post(f"{server}/twilio/inbound", data=stop, headers=_signed(server, stop)).status_code == 200
    rows = inbound(engine)
    assert [(r.channel, r.body, r.provider_message_id, r.in_reply_to, r.customer_id) for r in rows] == [
        ("sms", "Да, перезвоните", "SM100", sms, 2), ("sms", "Stop", "SM101", sms, 2)]
    with engine.connect() as conn:
        entries = conn.execute(select(Consent.__table__.c.granted, Consent.__table__.c.source).where(
            Consent.__table__.c.customer_id == 2, Consent.__table__.c.source == "sms_keyword")).all()
    assert entries == [(False, "sms_keyword")]
    assert not verify(engine).problems


def test_a_bounce_report_posted_as_an_email_fails_its_touch_and_is_no_reply(engine, server, tmp_path):
    """The inbound route hands a delivery status notification to the bounce handler: never a reply."""
    from crm.models import ContactPoint
    from tests.test_bounces import postfix_dsn

    emails = sent_emails(engine, tmp_path)
    report = postfix_dsn(emails["u2@mail.ru"], recipient="u2@mail.ru", delivered=True)
    answer = post_email(server, {"raw": report.decode()})
    assert answer.status_code == 200, answer.text
    with engine.connect() as conn:
        bounced = conn.execute(select(touches.c.id, touches.c.status, touches.c.error_code).where(
            touches.c.address == "u2@mail.ru", touches.c.direction == "out")).one()
        points = conn.execute(select(ContactPoint.__table__.c.status).where(
            ContactPoint.__table__.c.value == "u2@mail.ru")).scalars().all()
    assert answer.json() | {"ok": True} == {"ok": True, "touch_id": bounced.id, "new": True, "kind": "bounce",
                                             "in_reply_to": None, "linked_by": "verp", "outcome": "recorded",
                                             "severity": "hard", "status": "5.1.1"}
    assert (bounced.status, bounced.error_code) == ("failed", "5.1.1") and points == ["bounced"]
    assert inbound(engine) == []                                                 # not stored as a reply
    again = post_email(server, {"raw": report.decode()})                        # the provider retries
    assert (again.json()["kind"], again.json()["outcome"], again.json()["new"]) == ("bounce", "duplicate", False)
    assert not verify(engine).problems

"""The web endpoints through HTTP against the running app: signatures, one-click, callbacks, webhook."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from channels.telegram_links import create_link
from channels.unsubscribe import make_token
from crm.keys import signing_key
from crm.importing import import_file
from crm.models import Consent, ContactPoint, Touch, TouchEvent
from flows import engine as campaign_engine
from flows.spec import CampaignSpec
from tests.helpers import write_csv
from tests.servers import free_port, running_app
from touchflow.server import create_app
from touchflow.settings import Settings

TOKEN = "twilio-auth-token"
TG_SECRET = "tg-webhook-secret"


@pytest.fixture
def server(engine, tmp_path):
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone"], [
        ["U1", "Один", "u1@mail.ru", "+79160000001"], ["U2", "Два", "u2@mail.ru", "+79160000002"]]))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"], [
        [c, ch, "marketing", "granted", "2025-01-01"] for c in ("U1", "U2") for ch in ("email", "sms", "telegram")]))
    port = free_port()
    settings = Settings(public_url=f"http://127.0.0.1:{port}", twilio_auth_token=TOKEN,
                        telegram_webhook_secret=TG_SECRET, outbox_dir=str(tmp_path / "outbox"))
    with running_app(create_app(engine, settings), port) as base:
        yield base, settings


def ledger(engine, customer: int) -> list[tuple]:
    with engine.connect() as conn:
        return [(r.channel, r.granted, r.source) for r in conn.execute(
            select(Consent.__table__).where(Consent.__table__.c.customer_id == customer).order_by(Consent.__table__.c.id))]


def test_one_click_post_revokes_get_changes_nothing_forged_is_403(engine, server):
    base, _ = server
    key = signing_key(engine)
    token = make_token(key, 1, "email", "u1@mail.ru")
    before = ledger(engine, 1)
    page = httpx.get(f"{base}/unsubscribe/{token}")
    assert page.status_code == 200 and "Отписаться" in page.text and ledger(engine, 1) == before
    done = httpx.post(f"{base}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert ledger(engine, 1)[-1] == ("email", False, "one_click_unsubscribe")
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert httpx.post(f"{base}/unsubscribe/{forged}", data={"List-Unsubscribe": "One-Click"}).status_code == 403
    expired = make_token(key, 2, "email", "u2@mail.ru", now=time.time() - 400 * 24 * 3600)
    assert httpx.get(f"{base}/unsubscribe/{expired}").status_code == 403
    assert httpx.post(f"{base}/unsubscribe/{expired}", data={"List-Unsubscribe": "One-Click"}).status_code == 403
    other = make_token(key, 2, "email", "someone@else.ru")
    assert httpx.post(f"{base}/unsubscribe/{other}", data={"List-Unsubscribe": "One-Click"}).status_code == 403
    assert ledger(engine, 2)[-1][1] is True


def _signed(base: str, path: str, params: dict, *, port: bool = True) -> dict:
    url = f"{base}{path}" if port else f"{base.rsplit(':', 1)[0]}{path}"
    return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, params)}


def test_twilio_status_callbacks_are_validated_and_only_move_forward(engine, server, tmp_path):
    base, _ = server
    with engine.begin() as conn:
        conn.execute(Touch.__table__.insert().values(customer_id=1, channel="sms", status="sent", purpose="marketing",
                                                     provider_message_id="SM1", created_at=datetime.now(timezone.utc),
                                                     updated_at=datetime.now(timezone.utc)))
    delivered = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    assert httpx.post(f"{base}/twilio/status", data=delivered).status_code == 403                    # missing
    assert httpx.post(f"{base}/twilio/status", data=delivered,
                      headers={"X-Twilio-Signature": "Zm9yZ2Vk"}).status_code == 403                     # wrong
    ok = httpx.post(f"{base}/twilio/status", data=delivered, headers=_signed(base, "/twilio/status", delivered))
    assert ok.status_code == 200 and ok.json()["status"] == "delivered"
    late = {"MessageSid": "SM1", "MessageStatus": "sent"}                                             # out of order
    assert httpx.post(f"{base}/twilio/status", data=late,
                      headers=_signed(base, "/twilio/status", late, port=False)).status_code == 200  # URL without port
    replay = httpx.post(f"{base}/twilio/status", data=delivered, headers=_signed(base, "/twilio/status", delivered))
    assert replay.status_code == 200
    with engine.connect() as conn:
        touch = conn.execute(select(Touch.__table__)).one()
        events = conn.execute(select(TouchEvent.__table__.c.status)
                              .where(TouchEvent.__table__.c.touch_id == touch.id)).scalars().all()
    assert touch.status == "delivered" and touch.delivered_at is not None and events == ["delivered"]


def test_inbound_stop_and_start(engine, server):
    base, _ = server
    stop = {"From": "+79160000002", "Body": "stop"}
    assert httpx.post(f"{base}/twilio/inbound", data=stop).status_code == 403
    assert httpx.post(f"{base}/twilio/inbound", data=stop,
                      headers=_signed(base, "/twilio/inbound", stop)).status_code == 200
    assert ledger(engine, 2)[-1] == ("sms", False, "sms_keyword")
    start = {"From": "+79160000002", "Body": "START"}
    httpx.post(f"{base}/twilio/inbound", data=start, headers=_signed(base, "/twilio/inbound", start))
    assert ledger(engine, 2)[-1] == ("sms", True, "sms_keyword")


def test_telegram_webhook_binds_opts_out_and_records_blocks(engine, server):
    base, _ = server
    link, _ = create_link(engine, "U1", "touchflow_bot")
    update = {"update_id": 1, "message": {"message_id": 1, "date": 0, "text": f"/start {link.split('start=')[1]}",
                                          "chat": {"id": 777, "type": "private"}}}
    assert httpx.post(f"{base}/telegram/webhook", json=update).status_code == 403
    assert httpx.post(f"{base}/telegram/webhook", json=update,
                      headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}).status_code == 403
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    assert httpx.post(f"{base}/telegram/webhook", json=update, headers=headers).json()["action"] == "bound"
    stop = {"update_id": 2, "message": {"message_id": 2, "date": 0, "text": "/stop", "chat": {"id": 777}}}
    assert httpx.post(f"{base}/telegram/webhook", json=stop, headers=headers).json()["action"] == "opted_out"
    assert ledger(engine, 1)[-1] == ("telegram", False, "telegram_stop")
    kicked = {"update_id": 3, "my_chat_member": {"chat": {"id": 777}, "new_chat_member": {"status": "kicked"}}}
    httpx.post(f"{base}/telegram/webhook", json=kicked, headers=headers)
    with engine.connect() as conn:
        status = conn.execute(select(ContactPoint.__table__.c.status).where(
            ContactPoint.__table__.c.kind == "telegram")).scalar_one()
    assert status == "blocked"


def test_an_opt_out_mid_campaign_stops_the_next_send(engine, server, tmp_path):
    """A revocation committed between two batches is honoured by the running campaign's next decision."""
    base, _ = server
    spec = CampaignSpec(name="mid", rule={"field": "name", "exists": True}, purpose="marketing", offer="o-1",
                        template="winback", channels=["email"], policy={"quiet_hours": "off"},
                        offer_values={"discount_percent": 5})
    run = campaign_engine.start(engine, spec, settings=Settings(email_transport="memory", send_attempts=1))
    pages = list(campaign_engine.segment_pages(run, 1))
    campaign_engine.process_batch(run, pages[0])                                    # U1 is contacted
    token = make_token(signing_key(engine), 2, "email", "u2@mail.ru")
    assert httpx.post(f"{base}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    campaign_engine.process_batch(run, pages[1])                                    # U2 unsubscribed meanwhile
    summary = campaign_engine.finish(run)
    assert summary["channels"]["email"]["sent"] == 1 and summary["not_contacted"] == {"opted_out": 1}


def test_malformed_and_oversized_requests_are_refused_before_anything_changes(engine, server):
    base, _ = server
    headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    broken = httpx.post(f"{base}/telegram/webhook", content=b'{"update_id": 1, "message": {', headers=headers)
    assert broken.status_code == 400 and "JSON" in broken.text
    assert httpx.post(f"{base}/telegram/webhook", json=[1, 2], headers=headers).status_code == 400
    before = ledger(engine, 1)
    huge = b'{"update_id": 1, "pad": "' + b"x" * (1 << 20) + b'"}'
    declared = httpx.post(f"{base}/telegram/webhook", content=huge, headers=headers)
    assert declared.status_code == 413

    def chunks():  # no Content-Length: refused while it streams in, not after buffering it all
        for _ in range(64):
            yield b"x" * 65536

    streamed = httpx.post(f"{base}/twilio/inbound", content=chunks(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413
    token = make_token(signing_key(engine), 1, "email", "u1@mail.ru")
    padded = httpx.post(f"{base}/unsubscribe/{token}",
                        data={"List-Unsubscribe": "One-Click", "pad": "x" * (1 << 20)})
    assert padded.status_code == 413 and ledger(engine, 1) == before


def test_a_replayed_unsubscribe_adds_no_second_ledger_entry(engine, server):
    base, _ = server
    token = make_token(signing_key(engine), 1, "email", "u1@mail.ru")
    for _ in range(3):
        assert httpx.post(f"{base}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert [entry for entry in ledger(engine, 1) if entry[2] == "one_click_unsubscribe"] == [("email", False,
                                                                                             "one_click_unsubscribe")]


def test_an_opt_out_is_sealed_before_the_response(engine, server):
    """No window in which deleting a fresh opt-out would go unnoticed: the server seals the consent it wrote."""
    from crm.ledger.audit import verify

    base, _ = server
    token = make_token(signing_key(engine), 2, "email", "u2@mail.ru")
    assert httpx.post(f"{base}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    found = verify(engine)
    assert found.intact and not found.unsealed.get("consents")
    with engine.begin() as conn:
        conn.execute(Consent.__table__.delete().where(Consent.__table__.c.source == "one_click_unsubscribe"))
    assert not verify(engine).intact

"""Inbound touches: a reply is stored once on the person, linked to the touch it answers, and audits clean."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from crm.db import write_tx
from crm.ledger.audit import verify
from crm.ledger.inbound import Inbound, record_inbound
from crm.ledger.touches import record_touch
from crm.models import ContactPoint, Customer, Touch

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def base(engine):
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            {"id": 1, "external_id": "C1", "name": "Мария", "person_id": 1, "attributes": {}},
            {"id": 2, "external_id": "C2", "name": "Мария М.", "person_id": 1, "attributes": {}}])
        conn.execute(insert(ContactPoint.__table__), [
            {"customer_id": 2, "kind": "phone", "raw": "+79161234567", "value": "+79161234567"}])
    with write_tx(engine) as conn:
        sent = [record_touch(conn, {"person_key": "1", "customer_id": 2, "campaign": name, "purpose": "marketing",
                                    "channel": "sms", "address": "+79161234567", "status": "sent",
                                    "created_at": T0 + timedelta(hours=i), "updated_at": T0 + timedelta(hours=i)})
                for i, name in enumerate(("autumn", "winter"))]
    return sent


def test_a_reply_answers_the_latest_touch_to_that_address_and_is_stored_once(engine, base):
    message = Inbound(channel="sms", address="+79161234567", body="Да, интересно", provider_message_id="SM1",
                      received_at=T0 + timedelta(hours=3))
    with write_tx(engine) as conn:
        first, new = record_inbound(conn, message)
    with write_tx(engine) as conn:
        again, new_again = record_inbound(conn, message)  # a webhook retry
    assert (new, new_again, again) == (True, False, first)
    with engine.connect() as conn:
        row = conn.execute(select(Touch.__table__).where(Touch.__table__.c.id == first)).one()
        count = conn.execute(select(Touch.__table__.c.id).where(Touch.__table__.c.direction == "in")).all()
    assert (row.direction, row.status, row.in_reply_to, row.campaign, row.person_key) == \
        ("in", "received", base[1], "winter", "1")
    assert row.provider_message_id == "SM1" and len(count) == 1
    assert not verify(engine).problems


def test_a_reply_before_the_second_touch_answers_the_first_and_a_stranger_is_kept(engine, base):
    with write_tx(engine) as conn:
        early, _ = record_inbound(conn, Inbound(channel="sms", address="+79161234567", body="?",
                                                received_at=T0 + timedelta(minutes=30)))
        stranger, _ = record_inbound(conn, Inbound(channel="sms", address="+79990000000", body="кто это?"))
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(Touch.__table__))}
    assert rows[early].in_reply_to == base[0]
    assert (rows[stranger].customer_id, rows[stranger].in_reply_to, rows[stranger].direction) == (None, None, "in")

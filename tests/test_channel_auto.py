"""``channels: auto``: each person's channel chosen by their own response (smoothed towards the group's) and cost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from channels.choice import rank, smoothed
from channels.pricing import Prices
from crm.db import write_tx
from crm.importing import import_file
from crm.ledger.inbound import Inbound, record_inbound
from crm.ledger.policy import Decision
from crm.ledger.responses import Record, tally
from crm.ledger.touches import insert_touches, touch_row
from crm.models import Customer, Touch
from crm.persons import refresh_persons
from flows.spec import CampaignSpec, check_spec
from tests.helpers import run_cli, write_csv
from tests.test_campaigns import NOON, run

touches = Touch.__table__
EMAIL_PEOPLE, SMS_PEOPLE = range(0, 4), range(4, 8)


def test_the_ranking_follows_response_then_price():
    prices = Prices(email=Decimal(1), sms=Decimal(2))
    group = {"email": Record(40, 8), "sms": Record(40, 8)}
    fan = rank(["email", "sms"], {"sms": Record(4, 4), "email": Record(4, 0)}, group, prices, 5)
    assert fan.order == ["sms", "email"]  # (4 + 5·0.2) / 9 = 56% at 2 RUB beats (0 + 1) / 9 = 11% at 1 RUB
    assert fan.reason.startswith("auto: sms by cost per response; sms 56% (4/4 own), 2 RUB, 3.60 RUB/response; "
                                 "email 11% (0/4 own), 1 RUB, 9.00 RUB/response")
    equal = rank(["sms", "email"], {}, group, prices, 5)
    assert equal.order == ["email", "sms"]  # the same response: the cheaper message (not the spec's order)
    cheaper_sms = rank(["email", "sms"], {}, group, Prices(email=Decimal(3), sms=Decimal(2)), 5)
    assert cheaper_sms.order == ["sms", "email"]
    unknown = rank(["sms", "email"], {}, {}, prices, 5)
    assert unknown.order == ["sms", "email"] and not unknown.known and "spec's order" in unknown.reason
    assert smoothed(Record(), 0.2, 5) == 0.2 and smoothed(Record(2, 2), 0.2, 2) == 0.6  # (2 + 0.4) / 4


def test_a_purchase_is_credited_to_the_last_touch_before_it_within_the_window():
    day = datetime(2026, 10, 1, 10, tzinfo=timezone.utc)
    sent = [(day, 1, "email"), (day + timedelta(days=2), 2, "sms"), (day + timedelta(days=40), 3, "email")]
    bought = [(day + timedelta(days=5)).date(), (day + timedelta(days=70)).date()]  # the second: no touch 14 days back
    assert tally(sent, bought, set(), 14) == {"email": Record(2, 0), "sms": Record(1, 1)}
    assert tally(sent, bought, {3}, 14) == {"email": Record(2, 1), "sms": Record(1, 1)}  # a reply answers too


def import_people(engine, tmp_path, rows: list[list[str]]) -> None:
    """Import customers (id, name, first name, zone, email, phone, target) with marketing consent for email and SMS."""
    consents = [[row[0], channel, "marketing", "granted", "2025-01-01 10:00"] for row in rows
                for channel in ("email", "sms")]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "first_name", "timezone",
                                                                    "email", "phone", "attr.target"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def build(engine, tmp_path: Path) -> dict[str, int]:
    """Eight customers with email and phone (consent for both); history: A0–A3 bought after emails, never after
    SMS; B4–B7 after SMS (B7 wrote back instead), never after emails. Returns external id → customer id."""
    rows = [[f"{'A' if i in EMAIL_PEOPLE else 'B'}{i}", f"Клиент {i}", "Ян", "Europe/Moscow", f"c{i}@mail.ru",
             f"+7916200{i:04d}", "yes"] for i in range(8)]
    import_people(engine, tmp_path, rows)
    with engine.connect() as conn:
        ids = dict(conn.execute(select(Customer.__table__.c.external_id, Customer.__table__.c.id)).all())
    purchases = []
    history = []
    for i in range(8):
        key, converts = rows[i][0], ("email" if i in EMAIL_PEOPLE else "sms")
        for week in range(3):  # three rounds, a month apart: an email, then an SMS a week later
            sent = NOON - timedelta(days=120 - 30 * week)
            for channel, at in (("email", sent), ("sms", sent + timedelta(days=7))):
                history.append((ids[key], channel, rows[i][4] if channel == "email" else rows[i][5], at))
                if channel == converts and not (i == 7 and week == 0):
                    purchases.append([key, (at + timedelta(days=2)).date().isoformat(), "Визитки", "cards", 1, 900])
    import_file(engine, "purchases", write_csv(tmp_path / "p.csv", ["customer", "date", "product", "category",
                                                                    "quantity", "amount"], purchases))
    with write_tx(engine) as conn:
        for customer, channel, address, at in history:
            decision = Decision(customer_id=customer, person_id=customer, action="touch", channel=channel,
                                address=address)
            insert_touches(conn, [touch_row(decision, run_id="old", campaign="earlier", offer=f"old-{at:%m%d}",
                                            purpose="marketing", status="sent", now=at)])
        record_inbound(conn, Inbound(channel="sms", address=rows[7][5], body="Да, интересно",
                                     received_at=NOON - timedelta(days=112)))
    return ids


def auto_spec(**kwargs) -> CampaignSpec:
    values = dict(name="auto", rule={"attribute": "target", "equals": "yes"}, purpose="marketing", offer="auto-1",
                  template="winback", channels="auto", offer_values={"discount_percent": 10},
                  prices={"email": 1, "sms": 1.5})
    values.update(kwargs)
    return CampaignSpec(**values)


def chosen(engine, campaign: str = "auto") -> dict[int, tuple[str, str]]:
    with engine.connect() as conn:
        return {row.customer_id: (row.channel, row.detail) for row in conn.execute(
            select(touches).where(touches.c.campaign == campaign, touches.c.status == "sent"))}


def test_auto_sends_each_person_where_they_answer(engine, tmp_path):
    ids = build(engine, tmp_path)
    the_spec = auto_spec()
    assert the_spec.channels == ["email", "sms", "telegram", "voice"] and the_spec.channel_choice == "auto"
    summary, r = run(engine, the_spec, tmp_path)
    assert r.spec.channels == ["email", "sms"]  # winback has no telegram or voice part: those are not ranked
    assert summary["selected"] == 8 and summary["not_contacted"] == {}
    picks = chosen(engine)
    assert {picks[ids[f"A{i}"]][0] for i in EMAIL_PEOPLE} == {"email"}
    assert {picks[ids[f"B{i}"]][0] for i in SMS_PEOPLE} == {"sms"}
    a0, b7 = picks[ids["A0"]][1], picks[ids["B7"]][1]
    # the base: 12 of 24 emails answered, 12 of 24 SMS; A0's own 3 of 3 emails, 0 of 3 SMS (prior weight 5)
    assert a0 == ("auto: email by cost per response; email 69% (3/3 own), 1 RUB, 1.45 RUB/response; "
                  "sms 31% (0/3 own), 1.5 RUB, 4.80 RUB/response")
    assert b7.startswith("auto: sms by cost per response; sms ") and "(3/3 own)" in b7  # two purchases, a reply
    with engine.connect() as conn:
        costs = {row.channel: row.cost for row in conn.execute(
            select(touches).where(touches.c.campaign == "auto", touches.c.status == "sent"))}
    assert costs == {"email": Decimal(1), "sms": Decimal("1.5")}


def test_at_equal_prices_each_follows_their_own_response(engine, tmp_path):
    ids = build(engine, tmp_path)
    run(engine, auto_spec(prices={"email": 1, "sms": 1}), tmp_path)
    picks = chosen(engine)
    assert {k: picks[ids[k]][0] for k in ("A0", "A3", "B4", "B7")} == {"A0": "email", "A3": "email", "B4": "sms",
                                                                       "B7": "sms"}
    # SMS ten times the price of an email: B4's 3 of 3 SMS (69%) no longer pay; email (31%) costs less per answer
    run(engine, auto_spec(name="pricey", offer="auto-2", prices={"email": 1, "sms": 10}), tmp_path)
    pricey = chosen(engine, "pricey")
    assert {channel for channel, _ in pricey.values()} == {"email"}
    assert pricey[ids["B4"]][1].startswith("auto: email by cost per response; email 31% (0/3 own), 1 RUB, 3.20 RUB/")


def test_a_cheaper_channel_wins_among_people_with_the_same_history(engine, tmp_path):
    rows = [[f"N{i}", f"Клиент {i}", "Ян", "Europe/Moscow", f"n{i}@mail.ru", f"+7916300{i:04d}", "yes"]
            for i in range(4)]
    import_people(engine, tmp_path, rows)
    with engine.connect() as conn:
        ids = conn.execute(select(Customer.__table__.c.id).order_by(Customer.__table__.c.id)).scalars().all()
    with write_tx(engine) as conn:  # everyone: one email and one SMS, each followed by a purchase
        for customer, row in zip(ids, rows):
            for channel, days in (("email", 60), ("sms", 30)):
                decision = Decision(customer_id=customer, person_id=customer, action="touch", channel=channel,
                                    address=row[4] if channel == "email" else row[5])
                insert_touches(conn, [touch_row(decision, run_id="old", campaign="earlier", offer=f"o{days}",
                                                purpose="marketing", status="sent", now=NOON - timedelta(days=days))])
    purchases = [[row[0], (NOON - timedelta(days=d)).date().isoformat(), "Визитки", "cards", 1, 900]
                 for row in rows for d in (59, 29)]
    import_file(engine, "purchases", write_csv(tmp_path / "p.csv", ["customer", "date", "product", "category",
                                                                    "quantity", "amount"], purchases))
    # the spec lists email first, but SMS is cheaper here: at equal response SMS wins
    run(engine, auto_spec(channels={"auto": ["email", "sms"]}, prices={"email": 2, "sms": 1}), tmp_path)
    picks = chosen(engine)
    assert [channel for channel, _ in picks.values()] == ["sms"] * 4
    assert all("sms 100% (1/1 own), 1 RUB" in detail for _, detail in picks.values())


def test_with_no_history_auto_keeps_the_spec_order_and_says_so(engine, tmp_path):
    rows = [["Z1", "Клиент", "Ян", "Europe/Moscow", "z1@mail.ru", "+79163009999", "yes"]]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "first_name", "timezone",
                                                                    "email", "phone", "attr.target"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              [["Z1", c, "marketing", "granted", "2025-01-01 10:00"]
                                               for c in ("email", "sms")]))
    refresh_persons(engine)
    run(engine, auto_spec(channels={"auto": ["sms", "email"]}), tmp_path)
    [(channel, detail)] = chosen(engine).values()
    assert channel == "sms" and detail == "auto: no history in sms, email yet, so the spec's order"


def test_a_spec_with_channels_auto_is_checked(tmp_path):
    path = tmp_path / "auto.yaml"
    path.write_text("name: auto\npurpose: marketing\noffer: o\ntemplate: winback\nchannels: auto\n"
                    "segment: lapsed_customers\n", encoding="utf-8")
    checked = check_spec(path)
    assert checked.channel_choice == "auto" and checked.channels == ["email", "sms"]  # winback's parts
    shown = run_cli("campaign", "check", str(path))
    assert shown.exit_code == 0 and "(auto, marketing, auto: email, sms)" in shown.output
    path.write_text("name: auto\npurpose: marketing\noffer: o\ntemplate: winback\nchannels: {auto: [voice]}\n"
                    "segment: lapsed_customers\n", encoding="utf-8")
    try:
        check_spec(path)
    except Exception as exc:
        assert "channels: auto: template 'winback' has no part for any of voice" in str(exc)
    else:
        raise AssertionError("a spec ranking only channels its template lacks was accepted")
    path.write_text("name: auto\npurpose: marketing\noffer: o\ntemplate: winback\nchannels: best\n"
                    "segment: lapsed_customers\n", encoding="utf-8")
    try:
        check_spec(path)
    except Exception as exc:
        assert "channels: a list in order of preference" in str(exc)
    else:
        raise AssertionError("channels: best was accepted")

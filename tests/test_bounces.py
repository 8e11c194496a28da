"""Asynchronous bounces: each email leaves with its touch's signed return address (VERP), and the reports that
come back to it (RFC 3464, written here the way postfix writes them) fail the touch and bounce the address.

Real protocols: campaigns send over SMTP to aiosmtpd (with and without pipelining) or to the file
outbox, whose .eml files are the messages the reports return; the ledger's state after each report
is read back from the database (SQLite and PostgreSQL), and the history still verifies.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from channels.inbound.bounces import handle_bounce, parse_dsn, parse_verp, verp_address, verp_for
from crm.importing import import_file
from crm.keys import signing_key
from crm.ledger.audit import verify
from crm.models import Bounce, ContactPoint, Touch, TouchEvent
from crm.persons import refresh_persons
from flows.engine import run_campaign
from flows.spec import CampaignSpec
from tests.helpers import run_cli, write_csv
from tests.servers import SmtpBehaviour, SmtpServer
from touchflow.settings import Settings

touches, events, points, bounces = Touch.__table__, TouchEvent.__table__, ContactPoint.__table__, Bounce.__table__
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
SHOP = "shop@shop.example"


# --- the database and campaigns ---------------------------------------------------------------------------------------

def build(engine, tmp_path: Path, emails: list[str]) -> None:
    """One customer per address (K000…), with email consent; an address may be listed twice (two records)."""
    rows = [[f"K{i:03d}", f"Клиент {i}", address] for i, address in enumerate(emails)]
    consents = [[f"K{i:03d}", "email", "marketing", "granted", "2025-01-01 10:00"] for i in range(len(emails))]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def settings(tmp_path: Path, **kwargs) -> Settings:
    return Settings(**({"outbox_dir": str(tmp_path / "outbox"), "send_attempts": 1, "mail_from": SHOP} | kwargs))


def campaign(engine, tmp_path: Path, name: str = "bounce", now: datetime = NOW, **kwargs) -> dict:
    spec = CampaignSpec(name=name, rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                        offer=f"{name}-1", template="winback", channels=["email"], policy={"quiet_hours": "off"},
                        offer_values={"discount_percent": 5})
    return run_campaign(engine, spec, now=now, settings=settings(tmp_path, **kwargs))


def sent(engine, run_id: str) -> dict[str, int]:
    """address → touch id of a run."""
    with engine.connect() as conn:
        return dict(conn.execute(select(touches.c.address, touches.c.id).where(touches.c.run_id == run_id)).all())


def touch(engine, touch_id: int):
    with engine.connect() as conn:
        return conn.execute(select(touches).where(touches.c.id == touch_id)).one()


def statuses(engine, address: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(points.c.status).where(points.c.value == address)).scalars())


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def outbox_eml(tmp_path: Path, address: str) -> bytes:
    """The .eml the file outbox wrote for ``address`` (the newest)."""
    found = sorted(p for p in (tmp_path / "outbox" / "email").glob("*.eml")
                   if message_from_bytes(p.read_bytes(), policy=policy.compat32)["To"] == address)
    return found[-1].read_bytes()


def return_path(eml: bytes) -> str:
    return message_from_bytes(eml, policy=policy.compat32)["Return-Path"].strip("<>")


# --- reports as postfix writes them ------------------------------------------------------------------------------------
# tests/data/postfix/*.eml are real reports from postfix 3.7.11 (made by capture.py there: touches 101 and 102 under
# FIXTURE_KEY); ``postfix_dsn`` writes the same shape about any message, ``real_report`` re-addresses a real one.

POSTFIX = Path(__file__).resolve().parent / "data" / "postfix"
FIXTURE_KEY = b"touchflow test fixture key"


def real_report(name: str, touch_id: int | None = None, key: bytes | None = None, message_id: str | None = None,
                recipient: str | None = None) -> bytes:
    """A captured report, about another touch (its return address and Message-ID) and recipient when given."""
    data = (POSTFIX / f"{name}.eml").read_bytes()
    dsn = parse_dsn(data)
    if touch_id is not None:
        data = data.replace(dsn.sent_to[0].encode(), verp_address(touch_id, key, "bounces", "shop.example").encode())
    if message_id is not None:
        data = data.replace(dsn.original_message_id.encode(), message_id.encode())
    if recipient is not None:
        data = data.replace(dsn.recipients[0].final_recipient.encode(), recipient.encode())
    return data


def postfix_dsn(returned: bytes, *, recipient: str, action: str = "failed", status: str = "5.1.1",
                diagnostic: str | None = None, headers_only: bool = False, to: str | None = None,
                delivered: bool = False, queue_id: str = "B3DD820C162") -> bytes:
    """A report as postfix's bounce(8) writes it about ``returned`` (an email as sent), sent to its sender.

    ``to``: the address the report goes to (default: the returned message's envelope sender, its Return-Path);
    ``delivered``: as postfix's local(8) delivers it into a mailbox (Return-Path, X-Original-To, Delivered-To).
    """
    original = message_from_bytes(returned, policy=policy.compat32)
    sender = to or (original["Return-Path"] or "").strip("<>") or SHOP
    lines = returned.replace(b"\r\n", b"\n").split(b"\n")
    path = [lines.pop(0)] if lines[0].startswith(b"Return-Path:") else []   # postfix returns it, then its Received
    body = b"\n".join(path + [f"Received: from localhost (localhost [127.0.0.1])\n\tby mx.shop.example (Postfix) "
                               f"with ESMTP id {queue_id}\n\tfor <{recipient}>; Mon,  7 Dec 2026 18:51:26 +0000 "
                               "(UTC)".encode()] + lines)
    if headers_only:
        body = body.split(b"\n\n", 1)[0] + b"\n"
    delayed = action == "delayed"
    diagnostic = diagnostic or (
        f"smtp; 550 5.1.1 <{recipient}>: Recipient address\n    rejected: User unknown in virtual mailbox table"
        if status.startswith("5") else f"smtp; 452 {status} <{recipient}>: Mailbox full, try again later")
    boundary = f"{queue_id}.1796669486/mx.shop.example"
    notice = ("This is the mail system at host mx.shop.example.\n\n"
              + ("####################################################################\n"
                 "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
                 "####################################################################\n\n"
                 "Your message could not be delivered for more than 0 hour(s).\nIt will be retried until it is "
                 "1 day(s) old.\n" if delayed else
                 "I'm sorry to have to inform you that your message could not\nbe delivered to one or more "
                 "recipients. It's attached below.\n")
              + "\nFor further assistance, please send mail to postmaster.\n\nIf you do so, please include this "
                "problem report. You can\ndelete your own text from the attached returned message.\n\n"
                "                   The mail system\n\n"
              + f"<{recipient}>: host 127.0.0.1[127.0.0.1] said: {diagnostic.split('; ', 1)[1]} (in reply to RCPT "
                "TO command)\n")
    report = (f"Reporting-MTA: dns; mx.shop.example\nX-Postfix-Queue-ID: {queue_id}\n"
              f"X-Postfix-Sender: rfc822; {sender}\nArrival-Date: Mon,  7 Dec 2026 18:51:26 +0000 (UTC)\n\n"
              f"Final-Recipient: rfc822; {recipient}\nOriginal-Recipient: rfc822;{recipient}\nAction: {action}\n"
              f"Status: {status}\nRemote-MTA: dns; 127.0.0.1\nDiagnostic-Code: {diagnostic}\n"
              + ("Will-Retry-Until: Tue,  8 Dec 2026 18:51:26 +0000 (UTC)\n" if delayed else ""))
    returned_part = ("Content-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n"
                     if headers_only else "Content-Description: Undelivered Message\nContent-Type: message/rfc822\n")
    head = ((f"Return-Path: <>\nX-Original-To: {sender}\nDelivered-To: {sender}\n" if delivered else "")
            + "Received: by mx.shop.example (Postfix)\n\tid D2EE820C1D4; Mon,  7 Dec 2026 18:51:26 +0000 (UTC)\n"
            "Date: Mon,  7 Dec 2026 18:51:26 +0000 (UTC)\nFrom: Mail Delivery System <MAILER-DAEMON@shop.example>\n"
            f"Subject: {'Delayed Mail (still being retried)' if delayed else 'Undelivered Mail Returned to Sender'}\n"
            f"To: {sender}\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n"
            "Content-Transfer-Encoding: 8bit\nMessage-Id: <20261207185126.D2EE820C1D4@mx.shop.example>\n\n"
            "This is a MIME-encapsulated message.\n\n")
    text = (head + f"--{boundary}\nContent-Description: Notification\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n" + notice + f"\n--{boundary}\n"
            "Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n" + report
            + f"\n--{boundary}\n" + returned_part + "Content-Transfer-Encoding: 8bit\n\n")
    return text.encode() + body + f"\n--{boundary}--\n".encode()


def shape(raw: bytes) -> list:
    """What a report's structure is, without its values: the parts, their headers, the report's field names."""
    mail = message_from_bytes(raw, policy=policy.compat32)
    found = [[k for k in mail.keys() if k not in ("Return-Path", "X-Original-To", "Delivered-To")]]
    for part in mail.get_payload():
        found.append([part.get_content_type(), *part.keys()])
        if part.get_content_type() == "message/delivery-status":
            found.append([list(block.keys()) for block in part.get_payload()])
    return found


def test_the_real_postfix_reports_read_as_they_were_written():
    hard, delayed, expired = (parse_dsn((POSTFIX / f"{n}.eml").read_bytes()) for n in ("hard", "delayed", "expired"))
    assert [(d.worst.action, d.worst.status, d.worst.severity) for d in (hard, delayed, expired)] == [
        ("failed", "5.1.1", "hard"), ("delayed", "4.2.2", "soft"), ("failed", "4.2.2", "soft")]
    assert hard.worst.final_recipient == hard.worst.original_recipient == "nobody@example.org"
    assert hard.worst.diagnostic == ("550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in "
                                     "virtual mailbox table")
    assert hard.reporting_mta == "mx.shop.example" and hard.worst.remote_mta == "127.0.0.1"
    assert [parse_verp(a, FIXTURE_KEY) for a in hard.sent_to] == [101]       # To and X-Postfix-Sender: one
    assert {parse_verp(a, FIXTURE_KEY) for d in (delayed, expired) for a in d.sent_to} == {102}
    assert hard.original_message_id.endswith(".touch.101@shop.example>")          # message/rfc822
    assert delayed.original_message_id.endswith(".touch.102@shop.example>")       # text/rfc822-headers


def test_a_utf8_report_and_bare_line_ends_read_the_same():
    real = (POSTFIX / "hard.eml").read_bytes()
    utf8 = (real.replace(b"report-type=delivery-status", b"report-type=global-delivery-status")
            .replace(b"Content-Type: message/delivery-status", b"Content-Type: message/global-delivery-status")
            .replace(b"Content-Type: message/rfc822", b"Content-Type: message/global"))   # RFC 6533
    expected = parse_dsn(real)
    assert real.count(b"\r\n") == real.count(b"\n")                     # as it came over SMTP
    for variant in (utf8, real.replace(b"\r\n", b"\n"), utf8.replace(b"\r\n", b"\n")):   # as a mailbox file keeps it
        found = parse_dsn(variant)
        assert (found.recipients, found.sent_to, found.original_message_id) == (
            expected.recipients, expected.sent_to, expected.original_message_id)


@pytest.mark.parametrize("name,action,headers_only", [("hard", "failed", False), ("delayed", "delayed", True),
                                                      ("expired", "failed", False)])
def test_the_written_reports_have_the_shape_of_the_real_ones(name, action, headers_only):
    real = (POSTFIX / f"{name}.eml").read_bytes()
    status = "5.1.1" if name == "hard" else "4.2.2"
    written = postfix_dsn(b"Return-Path: <x>\nFrom: a@b\nMessage-ID: <m@b>\n\nhi\n", recipient="x@y", action=action,
                          status=status, headers_only=headers_only)
    assert shape(written) == shape(real)


# --- VERP: pure -----------------------------------------------------------------------------------------------------

def test_a_return_address_names_its_touch_and_only_the_right_key_reads_it():
    key = b"k" * 32
    address = verp_address(4217, key, "bounces", "shop.example")
    assert address.startswith("bounces+4217-") and address.endswith("@shop.example")
    assert parse_verp(address, key) == 4217
    assert parse_verp(f"<{address.upper()}>", key, "bounces") == 4217     # relays may change the case
    assert parse_verp(f"rfc822; {address}", key) == 4217
    assert parse_verp(address, b"another key") is None                       # another installation's
    assert parse_verp(address.replace("+4217-", "+4218-"), key) is None      # the tag of 4217 on 4218: forged
    assert parse_verp(address, key, local="returns") is None
    assert parse_verp("someone+4217-abc@shop.example", key) is None
    assert verp_for(key, "bounces", None, "Shop <shop@почта.рф>").address(1).endswith("@xn--80a1acny.xn--p1ai")


def test_bad_bounce_settings_are_refused_with_what_to_write():
    with pytest.raises(ValueError, match=re.escape("bounce_local 'bou+nces' must be a plain ASCII local part")):
        Settings(bounce_local="bou+nces")
    with pytest.raises(ValueError, match="bounce_domain 'a@b' is not a domain name"):
        Settings(bounce_domain="a@b")


# --- the way out --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pipelining", [False, True])
def test_a_campaign_sends_each_email_from_its_touch_s_return_address(engine, tmp_path, pipelining):
    build(engine, tmp_path, ["anna@mail.ru", "boris@yandex.ru", "vera@gmail.com"])
    with SmtpServer(SmtpBehaviour(pipelining=pipelining)) as server:
        summary = campaign(engine, tmp_path, email_transport="smtp", smtp_port=server.port, smtp_timeout=5,
                           smtp_pipelining=pipelining)
        envelopes = {e.rcpt_tos[0]: e for e in server.messages}
    key = signing_key(engine)
    ids = sent(engine, summary["run_id"])
    assert sorted(envelopes) == sorted(ids)
    for address, envelope in envelopes.items():
        assert envelope.mail_from == verp_address(ids[address], key, "bounces", "shop.example")
        assert parse_verp(envelope.mail_from, key) == ids[address]
        header = message_from_bytes(envelope.content, policy=policy.compat32)
        assert header["From"].endswith(f"<{SHOP}>") and "Return-Path" not in header   # the relay writes that


def test_the_file_outbox_writes_the_return_path_and_verp_off_sends_from_the_from_address(engine, tmp_path):
    build(engine, tmp_path, ["anna@mail.ru", "boris@yandex.ru"])
    summary = campaign(engine, tmp_path, bounce_domain="returns.shop.example", bounce_local="rp")
    key = signing_key(engine)
    for address, touch_id in sent(engine, summary["run_id"]).items():
        assert return_path(outbox_eml(tmp_path, address)) == verp_address(touch_id, key, "rp", "returns.shop.example")
    with SmtpServer() as server:
        campaign(engine, tmp_path, name="plain", now=NOW + timedelta(days=2), email_transport="smtp",
                 smtp_port=server.port, verp=False)
        assert {e.mail_from for e in server.messages} == {SHOP}


# --- the way back ---------------------------------------------------------------------------------------------------

def test_a_hard_bounce_fails_the_touch_and_bounces_the_address_on_every_record_once(engine, tmp_path):
    build(engine, tmp_path, ["nobody@example.org", "anna@mail.ru", "nobody@example.org"])
    summary = campaign(engine, tmp_path)
    ids = sent(engine, summary["run_id"])
    with engine.connect() as conn:  # two records hold the address: one touch (one person per address)
        bounced = conn.execute(select(touches.c.id).where(touches.c.run_id == summary["run_id"],
                                                          touches.c.address == "nobody@example.org",
                                                          touches.c.status == "sent")).scalar_one()
    report = postfix_dsn(outbox_eml(tmp_path, "nobody@example.org"), recipient="nobody@example.org", delivered=True)
    result = handle_bounce(engine, report)
    assert result.outcome == "recorded" and result.matched_by == "verp" and result.touch_id == bounced
    assert (result.severity, result.action, result.status) == ("hard", "failed", "5.1.1")
    assert result.recipient == "nobody@example.org" and "User unknown in virtual mailbox table" in result.diagnostic
    assert result.touch_failed and result.address_bounced
    row = touch(engine, bounced)
    assert (row.status, row.error_code) == ("failed", "5.1.1") and "Recipient address rejected" in row.error_message
    assert statuses(engine, "nobody@example.org") == ["bounced", "bounced"]
    assert statuses(engine, "anna@mail.ru") == ["active"] and touch(engine, ids["anna@mail.ru"]).status == "sent"
    assert count(engine, events, events.c.touch_id == bounced, events.c.status == "failed") == 1
    before = count(engine, events)

    again = handle_bounce(engine, report)                                    # the same report, delivered twice
    assert again.outcome == "duplicate" and not again.touch_failed
    assert count(engine, events) == before and count(engine, bounces) == 1
    report_ok = verify(engine)
    assert report_ok.intact, report_ok.to_dict()


def test_real_postfix_reports_readdressed_to_campaign_touches_fail_them(engine, tmp_path):
    build(engine, tmp_path, ["nobody@example.org", "full@mail.ru", "anna@mail.ru"])
    summary = campaign(engine, tmp_path)
    ids, key = sent(engine, summary["run_id"]), signing_key(engine)
    for name, address in (("hard", "nobody@example.org"), ("expired", "full@mail.ru")):
        touch_id = ids[address]
        report = real_report(name, touch_id, key, touch(engine, touch_id).provider_message_id, address)
        result = handle_bounce(engine, report)
        assert (result.outcome, result.touch_id, result.touch_failed) == ("recorded", touch_id, True)
        assert touch(engine, touch_id).status == "failed"
    assert statuses(engine, "nobody@example.org") == ["bounced"] and statuses(engine, "full@mail.ru") == ["active"]
    assert touch(engine, ids["anna@mail.ru"]).status == "sent"
    # the captured report as it is: touch 101 under the fixture's key is no touch of this installation
    assert handle_bounce(engine, real_report("hard")).outcome == "forged"
    assert verify(engine).intact


def test_a_delayed_report_counts_soft_and_three_in_a_row_bounce_the_address(engine, tmp_path):
    build(engine, tmp_path, ["full@mail.ru", "anna@mail.ru"])
    for week in range(3):
        summary = campaign(engine, tmp_path, name=f"week{week}", now=NOW + timedelta(days=2 * week))
        ids = sent(engine, summary["run_id"])
        eml = outbox_eml(tmp_path, "full@mail.ru")
        assert parse_verp(return_path(eml), signing_key(engine)) == ids["full@mail.ru"]
        delayed = handle_bounce(engine, postfix_dsn(eml, recipient="full@mail.ru", action="delayed", status="4.2.2",
                                                    headers_only=True))
        assert (delayed.outcome, delayed.severity, delayed.soft_in_a_row) == ("recorded", "soft", week + 1)
        assert not delayed.touch_failed and touch(engine, ids["full@mail.ru"]).status == "sent"
        if week < 2:
            assert statuses(engine, "full@mail.ru") == ["active"] and not delayed.address_bounced
    assert delayed.address_bounced and statuses(engine, "full@mail.ru") == ["bounced"]
    with engine.connect() as conn:
        reason = conn.execute(select(points.c.status_reason).where(points.c.value == "full@mail.ru")).scalar_one()
    assert reason == "3 soft bounces in a row (last 4.2.2)"
    # the relay gives up on the last one: the touch failed (not delivered), still soft, counted once
    expired = handle_bounce(engine, postfix_dsn(eml, recipient="full@mail.ru", status="4.4.7"))
    assert (expired.outcome, expired.severity, expired.touch_failed) == ("recorded", "soft", True)
    assert touch(engine, ids["full@mail.ru"]).status == "failed" and statuses(engine, "anna@mail.ru") == ["active"]
    assert verify(engine).intact


def test_a_touch_delivered_between_two_soft_bounces_breaks_the_row(engine, tmp_path):
    build(engine, tmp_path, ["full@mail.ru"])
    reports = []
    for week in range(4):                      # 3 days apart: within the default cap of 3 a week
        summary = campaign(engine, tmp_path, name=f"w{week}", now=NOW + timedelta(days=3 * week))
        assert summary["channels"] == {"email": {"sent": 1}}
        reports.append(outbox_eml(tmp_path, "full@mail.ru"))
    results = [handle_bounce(engine, postfix_dsn(reports[week], recipient="full@mail.ru", action="delayed",
                                                 status="4.2.2")) for week in (0, 2, 3)]
    assert {r.outcome for r in results} == {"recorded"}
    assert [r.soft_in_a_row for r in results] == [1, 1, 2]   # week 1 came through: 2 and 3 are a row of two
    assert statuses(engine, "full@mail.ru") == ["active"]


def test_a_forged_return_address_changes_nothing(engine, tmp_path):
    build(engine, tmp_path, ["anna@mail.ru"])
    summary = campaign(engine, tmp_path)
    touch_id = sent(engine, summary["run_id"])["anna@mail.ru"]
    eml = outbox_eml(tmp_path, "anna@mail.ru")
    forged = verp_address(touch_id, b"a guess at the key", "bounces", "shop.example")
    result = handle_bounce(engine, postfix_dsn(eml, recipient="anna@mail.ru", to=forged))
    assert result.outcome == "forged" and result.touch_id is None and forged in result.detail
    # the envelope recipient decides too: a report whose headers name the right address but came to a forged one
    also = handle_bounce(engine, postfix_dsn(eml, recipient="anna@mail.ru"), envelope_to=forged)
    assert also.outcome == "forged"
    assert touch(engine, touch_id).status == "sent" and statuses(engine, "anna@mail.ru") == ["active"]
    assert count(engine, bounces) == 0


def test_a_report_without_verp_is_matched_by_the_returned_message_id(engine, tmp_path):
    build(engine, tmp_path, ["gone@example.org"])
    summary = campaign(engine, tmp_path, verp=False)
    touch_id = sent(engine, summary["run_id"])["gone@example.org"]
    eml = outbox_eml(tmp_path, "gone@example.org")
    assert b"Return-Path" not in eml
    for headers_only in (False, True):
        dsn = parse_dsn(postfix_dsn(eml, recipient="gone@example.org", headers_only=headers_only))
        assert dsn.original_message_id == touch(engine, touch_id).provider_message_id
        assert dsn.sent_to[0] == SHOP
    result = handle_bounce(engine, postfix_dsn(eml, recipient="gone@example.org", headers_only=True))
    assert (result.outcome, result.matched_by, result.touch_id) == ("recorded", "message_id", touch_id)
    assert touch(engine, touch_id).status == "failed" and statuses(engine, "gone@example.org") == ["bounced"]


def test_what_is_not_a_bounce_is_none_and_an_unknown_report_is_unmatched(engine, tmp_path):
    reply = (b"From: Anna <anna@mail.ru>\nTo: bounces+1-0123456789ab@shop.example\nSubject: Re: offer\n"
             b"Message-ID: <r1@mail.ru>\n\nYes, please call me.\n")
    vacation = (b"From: Boris <boris@yandex.ru>\nTo: shop@shop.example\nSubject: Out of office\n"
                b"Auto-Submitted: auto-replied\n\nI am away until Monday. 550 5.1.1 is not a status here.\n")
    assert handle_bounce(engine, reply) is None and handle_bounce(engine, vacation) is None
    assert handle_bounce(engine, b"") is None and handle_bounce(engine, b"\x00\xff garbage") is None
    stranger = (b"From: shop@shop.example\nTo: someone@else.example\nMessage-ID: <x1@elsewhere>\nSubject: hi\n\nhi\n")
    result = handle_bounce(engine, postfix_dsn(stranger, recipient="someone@else.example", to=SHOP))
    assert result.outcome == "unmatched" and result.severity == "hard"
    delivered = postfix_dsn(stranger, recipient="someone@else.example", to=SHOP, action="delivered", status="2.0.0")
    assert handle_bounce(engine, delivered).outcome == "not_bounced"


def test_a_plain_text_notice_without_a_report_part_is_read_by_its_wording(engine, tmp_path):
    build(engine, tmp_path, ["olga@example.net"])
    summary = campaign(engine, tmp_path)
    touch_id = sent(engine, summary["run_id"])["olga@example.net"]
    eml = outbox_eml(tmp_path, "olga@example.net")
    qmail = (f"Return-Path: <>\nDelivered-To: {return_path(eml)}\nFrom: MAILER-DAEMON@mx.example.net\n"
             f"To: {return_path(eml)}\nSubject: failure notice\n\nHi. This is the qmail-send program at "
             "mx.example.net.\nI'm afraid I wasn't able to deliver your message to the following addresses.\n"
             "This is a permanent error; I've given up. Sorry it didn't work out.\n\n<olga@example.net>:\n"
             "192.0.2.7 does not like recipient.\nRemote host said: 550 5.1.1 <olga@example.net>... User unknown\n"
             "Giving up on 192.0.2.7.\n\n--- Below this line is a copy of the message.\n\n").encode() + eml
    result = handle_bounce(engine, qmail)
    assert (result.outcome, result.matched_by, result.touch_id, result.status) == ("recorded", "verp", touch_id,
                                                                                   "5.1.1")
    assert result.recipient == "olga@example.net" and "User unknown" in result.diagnostic
    assert statuses(engine, "olga@example.net") == ["bounced"]


# --- the command --------------------------------------------------------------------------------------------------------

def test_bounces_ingest_reads_a_file_or_stdin(engine, cli_env, tmp_path, monkeypatch):
    build(engine, tmp_path, ["nobody@example.org"])
    monkeypatch.setenv("TOUCHFLOW_MAIL_FROM", SHOP)
    monkeypatch.setenv("TOUCHFLOW_OUTBOX_DIR", str(tmp_path / "outbox"))
    from touchflow.settings import reset_settings

    reset_settings()
    summary = campaign(engine, tmp_path)
    touch_id = sent(engine, summary["run_id"])["nobody@example.org"]
    path = tmp_path / "report.eml"
    path.write_bytes(postfix_dsn(outbox_eml(tmp_path, "nobody@example.org"), recipient="nobody@example.org"))
    result = run_cli("bounces", "ingest", path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["outcome"], data["touch_id"], data["severity"]) == ("recorded", touch_id, "hard")
    again = run_cli("bounces", "ingest", "-", input=path.read_text())
    assert again.exit_code == 0 and again.stdout.startswith(f"duplicate: touch {touch_id} (by verp)"), again.output
    assert json.loads(run_cli("bounces", "ingest", "-", "--json", input="Subject: hi\n\nhello\n").stdout)[
        "outcome"] == "not_a_bounce"
    missing = run_cli("bounces", "ingest", tmp_path / "nope.eml")
    assert missing.exit_code == 2 and "no such file" in missing.output
    address = json.loads(run_cli("bounces", "address", str(touch_id), "--json").stdout)["address"]
    assert parse_verp(address, signing_key(engine)) == touch_id
    assert run_cli("bounces", "ingest", "--help").exit_code == 0

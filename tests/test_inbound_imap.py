"""`touchflow inbound poll-imap` against a real dovecot: replies stored once, marked seen after, a crash loses nothing.

Skipped when dovecot is not installed, unless TOUCHFLOW_TEST_IMAP=required (CI), which makes it a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from crm.db import write_tx
from crm.importing import import_file
from crm.ledger.audit import verify
from crm.ledger.touches import record_touch
from channels.inbound.imap import mailbox_name
from crm.models import Touch
from tests.helpers import run_cli, run_json, write_csv
from tests.imap_server import DovecotUnavailable, start_dovecot
from touchflow.settings import reset_settings

touches = Touch.__table__
_users = itertools.count(1)


@pytest.fixture(scope="module")
def dovecot():
    try:
        server = start_dovecot()
    except DovecotUnavailable as exc:
        if os.environ.get("TOUCHFLOW_TEST_IMAP") == "required":
            pytest.fail(f"a real IMAP server is required (TOUCHFLOW_TEST_IMAP=required): {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def mailbox(dovecot, engine, cli_env, tmp_path, monkeypatch):
    """A fresh mailbox on the server, the CLI pointed at it, two customers, and an email sent to one of them."""
    user, password = f"replies{next(_users)}", "imap-password"
    dovecot.add_user(user, password)
    env = {"TOUCHFLOW_IMAP_HOST": dovecot.host, "TOUCHFLOW_IMAP_PORT": str(dovecot.port), "TOUCHFLOW_IMAP_USER": user,
           "TOUCHFLOW_IMAP_PASSWORD": password, "TOUCHFLOW_IMAP_SSL": "false"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email"], [
        ["U1", "Один", "u1@mail.ru"], ["U2", "Два", "u2@mail.ru"]]))
    with write_tx(engine) as conn:
        sent = record_touch(conn, {"person_key": "1", "customer_id": 1, "campaign": "winter", "purpose": "marketing",
                                   "channel": "email", "address": "u1@mail.ru", "status": "sent",
                                   "provider_message_id": "<4f1c.touch.1@touchflow.ru>",
                                   "created_at": datetime.now(timezone.utc), "updated_at": datetime.now(timezone.utc)})
    return dovecot, user, password, sent, env


def email(sender: str, text: str, *, message_id: str | None, in_reply_to: str | None = None) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, "replies@touchflow.ru", "Re: зимняя скидка"
    if message_id:
        mail["Message-ID"] = message_id
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
    mail.set_content(text)
    return mail.as_bytes()


def inbound(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(touches.c.address, touches.c.body, touches.c.in_reply_to,
                                   touches.c.provider_message_id).where(touches.c.direction == "in")
                            .order_by(touches.c.id)).all()


def test_unseen_replies_are_stored_once_linked_and_marked_seen(engine, mailbox):
    server, user, password, sent, _ = mailbox
    server.deliver(user, password,
                   email("Один <U1@mail.ru>", "Беру!\n\n> зимняя скидка", message_id="<a1@mail.ru>",
                         in_reply_to="<4f1c.touch.1@touchflow.ru>"),
                   email("stranger@example.com", "Кто вы?", message_id=None),
                   email("", "no sender at all", message_id="<broken@x>"))
    first = run_json("inbound", "poll-imap", "--once")
    assert first | {"errors": []} == {"mailbox": "INBOX", "unseen": 3, "stored": 2, "duplicates": 0, "linked": 1,
                                      "auto_replies": 0, "bounces": 0, "failed": 1, "errors": []}
    assert "no sender address" in first["errors"][0]
    assert len(server.unseen(user, password)) == 1                      # only the unreadable one is left unseen
    rows = inbound(engine)
    assert [(r.address, r.body, r.in_reply_to) for r in rows] == [("u1@mail.ru", "Беру!", sent),
                                                                  ("stranger@example.com", "Кто вы?", None)]
    assert rows[0].provider_message_id == "<a1@mail.ru>" and rows[1].provider_message_id.startswith("sha256:")
    again = run_json("inbound", "poll-imap", "--once")
    assert (again["unseen"], again["stored"], again["failed"]) == (1, 0, 1) and len(inbound(engine)) == 2
    assert not verify(engine).problems


def test_a_crash_between_storing_and_marking_stores_nothing_twice_and_loses_nothing(engine, mailbox):
    server, user, password, _, env = mailbox
    server.deliver(user, password, email("u1@mail.ru", "Первый", message_id="<c1@mail.ru>"),
                   email("u2@mail.ru", "Второй, без Message-ID", message_id=None))
    crash = ("import os, sys, channels.inbound.imap as imap\n"
             "imap._mark_seen = lambda client, uid: os._exit(9)  # killed right after the first commit\n"
             "from touchflow.cli import app\napp()")
    died = subprocess.run([sys.executable, "-c", crash, "inbound", "poll-imap", "--once"],
                          env={**os.environ, **env}, capture_output=True, timeout=60)
    assert died.returncode == 9, died.stderr.decode()
    assert [r.body for r in inbound(engine)] == ["Первый"] and len(server.unseen(user, password)) == 2
    after = run_json("inbound", "poll-imap", "--once")
    assert (after["unseen"], after["stored"], after["duplicates"]) == (2, 1, 1)
    assert [r.body for r in inbound(engine)] == ["Первый", "Второй, без Message-ID"]
    assert server.unseen(user, password) == []


def test_mailbox_names_are_modified_utf7():
    assert mailbox_name("~peter/mail/台北/日本語") == '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'   # RFC 3501's example
    assert mailbox_name('A&B "x"') == '"A&-B \\"x\\""'


def test_the_loop_polls_again_and_bad_settings_say_what_to_fix(engine, mailbox, monkeypatch):
    server, user, password, _, _ = mailbox
    server.deliver(user, password, email("u2@mail.ru", "Да", message_id="<l1@mail.ru>"))
    result = run_cli("inbound", "poll-imap", "--interval", "0.1", "--rounds", "2", "--json")
    polls = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0 and [p["stored"] for p in polls] == [1, 0]
    monkeypatch.setenv("TOUCHFLOW_IMAP_PASSWORD", "wrong")
    reset_settings()
    refused = run_cli("inbound", "poll-imap", "--once")
    assert refused.exit_code == 1 and "refused the login" in refused.output
    monkeypatch.setenv("TOUCHFLOW_IMAP_PASSWORD", password)
    monkeypatch.setenv("TOUCHFLOW_IMAP_MAILBOX", "Нет такой")
    reset_settings()
    assert "has no mailbox" in run_cli("inbound", "poll-imap", "--once").output
    server.deliver(user, password, email("u1@mail.ru", "В папке", message_id="<f1@mail.ru>"),
                   folder='"&BB4EQgQyBDUEQgRL-"')                                 # «Ответы» in modified UTF-7
    monkeypatch.setenv("TOUCHFLOW_IMAP_MAILBOX", "Ответы")
    reset_settings()
    assert run_json("inbound", "poll-imap", "--once")["stored"] == 1
    monkeypatch.setenv("TOUCHFLOW_IMAP_PORT", str(server.port + 1 if server.port < 65535 else 1))
    monkeypatch.setenv("TOUCHFLOW_IMAP_MAILBOX", "INBOX")
    reset_settings()
    down = run_cli("inbound", "poll-imap", "--once")
    assert down.exit_code == 6 and "cannot reach the IMAP server" in down.output
    looping = run_cli("inbound", "poll-imap", "--interval", "0.1", "--rounds", "2", "--json")
    assert looping.exit_code == 0 and all("cannot reach" in json.loads(line)["error"]
                                          for line in looping.stdout.splitlines())
    monkeypatch.delenv("TOUCHFLOW_IMAP_HOST")
    reset_settings()
    unset = run_cli("inbound", "poll-imap", "--once")
    assert unset.exit_code == 1 and "imap_host" in unset.output


def test_the_running_loop_picks_up_a_reply_that_arrives_later_and_stops_on_ctrl_c(engine, mailbox):
    server, user, password, sent, env = mailbox
    loop = subprocess.Popen([sys.executable, "-m", "touchflow.cli", "inbound", "poll-imap", "--interval", "0.2", "--json"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(loop.stdout.readline())["stored"] == 0                # the first poll: nothing yet
        server.deliver(user, password, email("u1@mail.ru", "Пришло позже", message_id="<late@mail.ru>",
                                             in_reply_to="<4f1c.touch.1@touchflow.ru>"))
        polls = [json.loads(loop.stdout.readline()) for _ in range(2)]          # within two more polls
        assert sum(p["stored"] for p in polls) == 1 and sum(p["linked"] for p in polls) == 1
        loop.send_signal(signal.SIGINT)
        assert loop.wait(30) == 0 and "stopped after" in loop.stderr.read()
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    assert [(r.body, r.in_reply_to) for r in inbound(engine)] == [("Пришло позже", sent)]


def test_a_bounce_report_in_the_mailbox_fails_its_touch_and_is_no_reply(engine, mailbox):
    """A delivery status notification read by the poll goes to the bounce handler (matched by the Message-ID)."""
    from tests.test_bounces import postfix_dsn

    server, user, password, sent, _ = mailbox
    original = EmailMessage()
    original["From"], original["To"], original["Subject"] = "shop@touchflow.ru", "u1@mail.ru", "Зимняя скидка"
    original["Message-ID"] = "<4f1c.touch.1@touchflow.ru>"
    original.set_content("Скидка 5 %")
    server.deliver(user, password, postfix_dsn(original.as_bytes(), recipient="u1@mail.ru", headers_only=True,
                                               to="replies@touchflow.ru"))
    summary = run_json("inbound", "poll-imap", "--once")
    assert (summary["unseen"], summary["bounces"], summary["stored"], summary["failed"]) == (1, 1, 0, 0)
    assert server.unseen(user, password) == [] and inbound(engine) == []
    with engine.connect() as conn:
        status = conn.execute(select(touches.c.status, touches.c.error_code).where(touches.c.id == sent)).one()
    assert tuple(status) == ("failed", "5.1.1") and not verify(engine).problems

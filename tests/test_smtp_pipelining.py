"""SMTP pipelining (RFC 2920) through real servers: aiosmtpd, postfix's smtp-sink, and a scripted server
that fails at each step (4xx / 5xx on MAIL, RCPT, DATA and the content, a disconnect after each)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from channels.base import Delivery, Message
from channels.errors import (
    AddressRejected,
    ConnectionFailed,
    DeliveryUnknown,
    MessageRejected,
    NoReply,
    TransientError,
)
from channels.sending import send_all
from channels.transports.smtp import SmtpConfig, SmtpEmailChannel
from channels.transports.smtp_pipelining import content
from tests.servers import ScriptedSmtp, SmtpBehaviour, SmtpServer, free_port


def channel(port: int, pipelining: bool = True, **kwargs) -> SmtpEmailChannel:
    return SmtpEmailChannel(SmtpConfig(port=port, from_address="shop@example.com", pipelining=pipelining,
                                       timeout=kwargs.pop("timeout", 5), **kwargs))


def message(to: str = "ivan@mail.ru", text: str = "Здравствуйте!\n.точка в начале строки\nСкидка 5%.") -> Message:
    return Message(channel="email", to=to, subject="Визитки", text=text, reference="campaign:1")


def run(coro_fn):
    return asyncio.run(coro_fn())


# --- the happy paths ----------------------------------------------------------------------------------------------

def test_the_envelope_goes_as_one_group_where_a_client_waiting_for_each_reply_gets_none():
    async def go():
        async with ScriptedSmtp(hold=True) as server:
            pipelined = channel(server.port)
            delivery = await pipelined.send(message())
            await pipelined.close()
            waiting = channel(server.port, pipelining=False, timeout=0.5)
            with pytest.raises(ConnectionFailed):
                await waiting.send(message())
            await waiting.close()
            return delivery, server.contents
    delivery, contents = run(go)
    assert isinstance(delivery, Delivery) and delivery.provider_id
    assert len(contents) == 1


def test_aiosmtpd_receives_the_same_messages_pipelined_dots_and_cyrillic_intact():
    with SmtpServer(SmtpBehaviour(pipelining=True)) as server:
        ch = channel(server.port, pool_size=2)
        results = run(lambda: _send_all_and_close(ch, [message(f"user{i}@mail.ru") for i in range(30)]))
        assert all(isinstance(r, Delivery) for r in results)
        assert sorted(e.rcpt_tos[0] for e in server.messages) == sorted(f"user{i}@mail.ru" for i in range(30))
        body = message_from_bytes(server.messages[0].content, policy=policy.default).get_body(("plain",)).get_content()
        assert ".точка в начале строки" in body and "Скидка 5%." in body
        assert server.handler.connections == 2  # the pool's two connections, kept across messages


def test_without_pipelining_advertised_the_same_commands_go_one_at_a_time():
    with SmtpServer(SmtpBehaviour()) as server:
        results = run(lambda: _send_all_and_close(channel(server.port), [message(), message("olga@mail.ru")]))
        assert all(isinstance(r, Delivery) for r in results)
        assert len(server.messages) == 2


def test_login_and_smtputf8_through_the_pipelined_client():
    with SmtpServer(SmtpBehaviour(pipelining=True, smtputf8=True, login=("shop", "s3cret"))) as server:
        ok = channel(server.port, username="shop", password="s3cret")
        assert isinstance(run(lambda: _send_and_close(ok, message("иван@почта.рф"))), Delivery)
        assert server.messages[0].rcpt_tos == ["иван@xn--80a1acny.xn--p1ai"]  # the domain in IDNA, as aiosmtplib's path
        wrong = channel(server.port, username="shop", password="wrong")
        with pytest.raises(MessageRejected, match="refused: check the user and password"):
            run(lambda: _send_and_close(wrong, message()))


def test_content_is_dot_stuffed_and_ends_with_the_final_dot():
    assert content(b"a\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert content(b"line\r\n") == b"line\r\n.\r\n"


def test_an_address_that_would_break_the_command_line_is_refused_before_anything_is_sent():
    async def go():
        async with ScriptedSmtp() as server:
            ch = channel(server.port)
            with pytest.raises(MessageRejected):
                await ch.send(message("ivan@mail.ru>\r\nRCPT TO:<x@y.z"))
            await ch.close()
            return server.commands
    assert not any(c.startswith(("MAIL", "RCPT")) for c in run(go))


# --- failures at each step ----------------------------------------------------------------------------------------

FAULTS = [  # (script, recipients, the error or None for a delivery, content written)
    ({"MAIL": "451 4.3.0 try later"}, 1, TransientError, False),
    ({"MAIL": "550 5.7.1 sender refused"}, 1, MessageRejected, False),
    ({"MAIL": "close"}, 1, ConnectionFailed, False),
    ({"RCPT": "450 4.2.1 mailbox busy"}, 1, TransientError, False),
    ({"RCPT": "550 5.1.1 no such user"}, 1, AddressRejected, False),
    ({"RCPT": "close"}, 1, ConnectionFailed, False),
    ({"RCPT": "550 5.1.1 no such user", "DATA": "354 go ahead"}, 1, AddressRejected, False),  # closed, no content
    ({"RCPT b@mail.ru": "550 5.1.1 no such user"}, 2, None, True),         # partial refusal: sent to the other
    ({"RCPT b@mail.ru": "450 4.2.1 busy"}, 2, TransientError, False),      # DATA said 354: no content, closed
    ({"DATA": "451 4.3.0 queue full"}, 1, TransientError, False),
    ({"DATA": "554 5.5.1 no valid recipients"}, 1, MessageRejected, False),
    ({"DATA": "close"}, 1, ConnectionFailed, False),
    ({"content": "452 4.3.1 storage"}, 1, TransientError, True),
    ({"content": "554 5.7.1 spam"}, 1, MessageRejected, True),
    ({"content": "close"}, 1, DeliveryUnknown, True),
    ({"content": "stall"}, 1, NoReply, True),
]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("script,recipients,error,written", FAULTS, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_each_reply_at_each_step_is_classified_like_the_aiosmtplib_path(script, recipients, error, written,
                                                                        pipelining):
    to = "a@mail.ru, b@mail.ru" if recipients == 2 else "a@mail.ru"

    async def go():
        async with ScriptedSmtp(script, pipelining=pipelining) as server:
            ch = channel(server.port, timeout=0.5)
            try:
                return await ch.send(message(to)), server
            except Exception as exc:  # noqa: BLE001 - the test compares the class
                return exc, server
            finally:
                await ch.close()
    outcome, server = run(go)
    if error is None:
        assert isinstance(outcome, Delivery) and set(outcome.refused) == {"b@mail.ru"}
    else:
        assert isinstance(outcome, error), outcome
    assert bool(server.contents) == (written and script.get("content") not in ("close", "stall")), server.contents


def test_after_a_refusal_the_connection_is_reset_and_kept_for_the_next_message():
    async def go():
        async with ScriptedSmtp({"RCPT bad@mail.ru": "550 5.1.1 no such user"}) as server:
            ch = channel(server.port, pool_size=1)
            results = await send_all(ch, [message("bad@mail.ru"), message("good@mail.ru")], concurrency=1)
            await ch.close()
            return results, server
    results, server = run(go)
    assert isinstance(results[0], AddressRejected) and isinstance(results[1], Delivery)
    assert "RSET" in server.commands and sum(c.startswith("EHLO") for c in server.commands) == 1


def test_after_a_deferred_recipient_with_data_accepted_nothing_is_delivered_and_the_retry_reconnects():
    async def go():
        async with ScriptedSmtp({"RCPT b@mail.ru": "450 4.2.1 busy"}) as server:
            ch = channel(server.port, pool_size=1)
            with pytest.raises(TransientError):
                await ch.send(message("a@mail.ru, b@mail.ru"))
            server.script.clear()
            delivery = await ch.send(message("a@mail.ru, b@mail.ru"))
            await ch.close()
            return delivery, server
    delivery, server = run(go)
    assert isinstance(delivery, Delivery) and len(server.contents) == 1  # once, on the second connection
    assert sum(c.startswith("EHLO") for c in server.commands) == 2


# --- postfix's smtp-sink ------------------------------------------------------------------------------------------

def _smtp_sink() -> str:
    path = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if path is None:
        if os.environ.get("TOUCHFLOW_TEST_SMTP_SINK") == "required":
            pytest.fail("postfix's smtp-sink is required (TOUCHFLOW_TEST_SMTP_SINK=required): apt-get install postfix")
        pytest.skip("postfix's smtp-sink is not installed (apt-get install postfix)")
    return path


def test_smtp_sink_takes_every_pipelined_message_once():
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="touchflow-sink-"))  # smtp-sink drops root, then writes its dump there
    folder.chmod(0o777)
    dump = folder / "sink.dump"
    as_root = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([_smtp_sink(), *as_root, "-D", str(dump), f"127.0.0.1:{port}", "64"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "smtp-sink did not start"
                time.sleep(0.05)
        ch = channel(port, pool_size=4)
        messages = [Message(channel="email", to=f"p{i}@mail.ru", subject=f"n{i}", text=f"номер {i}\n.{i}\n")
                    for i in range(200)]
        results = run(lambda: _send_all_and_close(ch, messages, concurrency=4))
        assert all(isinstance(r, Delivery) for r in results), [r for r in results if not isinstance(r, Delivery)][:3]
        assert ch.config.pipelining
        for _ in range(50):  # smtp-sink writes its dump as each message ends
            text = dump.read_bytes() if dump.exists() else b""
            if text.count(b"\nSubject: n") >= 200:
                break
            time.sleep(0.1)
        subjects = [line for line in text.split(b"\n") if line.startswith(b"Subject: n")]
        assert sorted(subjects) == sorted(f"Subject: n{i}".encode() for i in range(200))
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


async def _send_all_and_close(ch, messages, **kwargs):
    try:
        return await send_all(ch, messages, **kwargs)
    finally:
        await ch.close()


async def _send_and_close(ch, msg):
    try:
        return await ch.send(msg)
    finally:
        await ch.close()


# --- a campaign ---------------------------------------------------------------------------------------------------

def test_a_campaign_with_pipelining_on_mails_each_person_once_and_records_a_refusal(engine, tmp_path):
    from collections import Counter
    from datetime import datetime, timezone

    from sqlalchemy import select

    from crm.models import Touch
    from flows.engine import run_campaign
    from tests.test_channel_faults import build, spec
    from touchflow.settings import Settings

    build(engine, tmp_path, 20)
    with SmtpServer(SmtpBehaviour(pipelining=True, rcpt_replies={"k3@mail.ru": "550 5.1.1 no such user"})) as server:
        settings = Settings(outbox_dir=str(tmp_path / "outbox"), send_attempts=1, email_transport="smtp",
                            smtp_port=server.port, smtp_pipelining=True)
        summary = run_campaign(engine, spec("email", "pipelined"), now=datetime.now(timezone.utc), settings=settings)
        delivered = Counter(rcpt for e in server.messages for rcpt in e.rcpt_tos)
    assert delivered == Counter({f"k{i}@mail.ru": 1 for i in range(20) if i != 3})
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.__table__).where(Touch.__table__.c.run_id == summary["run_id"])).all()
    assert Counter(r.status for r in rows) == {"sent": 19, "failed": 1}
    assert next(r for r in rows if r.status == "failed").address == "k3@mail.ru"

"""Telegram and Twilio through the real clients pointed at local servers speaking their APIs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from channels.base import Message
from channels.errors import (
    AddressRejected,
    ChannelDown,
    ConnectionFailed,
    MessageRejected,
    NoReply,
    OptedOut,
    RateLimited,
    RecipientBlocked,
    TransientError,
)
from channels.sending import Breaker, send_all, send_with_retry
from channels.transports.telegram import TelegramChannel, TelegramConfig, make_bot
from channels.telegram_links import LinkError, bind_chat, create_link, poll
from channels.transports.twilio import TwilioConfig, TwilioSmsChannel, TwilioVoiceChannel
from crm.models import ContactPoint, TelegramLink
from tests.helpers import run_json, write_csv
from tests.servers import SilentServer, TelegramStub, TwilioStub, free_port


def _run(coro):
    return asyncio.run(coro)


async def _send(channel, message, **kwargs):
    try:
        return await send_with_retry(channel, message, base_delay=0.01, **kwargs)
    finally:
        await channel.close()


# ---------------------------------------------------------------- Telegram

def telegram(stub: TelegramStub) -> TelegramChannel:
    return TelegramChannel(TelegramConfig(token=stub.token, base_url=stub.url))


def test_telegram_sends_html_to_the_chat():
    with TelegramStub() as stub:
        delivery = _run(_send(telegram(stub), Message(channel="telegram", to="1001",
                                                      html="<b>Визитки</b> &amp; скидка")))
    (sent,) = stub.sent
    assert sent["chat_id"] == "1001" and sent["parse_mode"] == "HTML" and sent["text"] == "<b>Визитки</b> &amp; скидка"
    assert delivery.provider_id == "1"
    assert [m for m, _, _ in stub.requests][:1] == ["getMe"]


def test_telegram_blocked_bot_marks_the_recipient_blocked():
    with TelegramStub() as stub:
        stub.blocked.add("1002")
        with pytest.raises(RecipientBlocked) as err:
            _run(_send(telegram(stub), Message(channel="telegram", to="1002", text="hi")))
    assert err.value.action == "blocked" and "blocked by the user" in err.value.provider_message


def test_telegram_retry_after_is_honoured_and_the_send_succeeds():
    with TelegramStub() as stub:
        stub.retry_after["1003"] = 1
        with pytest.raises(RateLimited) as err:
            _run(_send(telegram(stub), Message(channel="telegram", to="1003", text="hi"), attempts=1))
        assert err.value.retry_after == 1
        stub.retry_after["1003"] = 1
        delivery = _run(_send(telegram(stub), Message(channel="telegram", to="1003", text="hi"), attempts=2,
                              rate=30, limiter_key="telegram-test"))
    assert delivery.provider_id and len(stub.sent) == 1


def test_telegram_unknown_chat_is_rejected():
    with TelegramStub() as stub:
        stub.missing.add("1004")
        with pytest.raises(AddressRejected):
            _run(_send(telegram(stub), Message(channel="telegram", to="1004", text="hi")))


def test_telegram_unreachable_is_connection_failed_and_unanswered_is_no_reply():
    nowhere = TelegramChannel(TelegramConfig(token="1:x", base_url=f"http://127.0.0.1:{free_port()}", timeout=1))
    with pytest.raises(ConnectionFailed, match="cannot reach the Telegram Bot API") as err:
        _run(_send(nowhere, Message(channel="telegram", to="1001", text="hi"), attempts=1))
    assert err.value.code == "connection_failed"
    with SilentServer() as silent:        # getMe never answered: nothing of ours was sent, so unreachable
        with pytest.raises(ConnectionFailed):
            _run(_send(TelegramChannel(TelegramConfig(token="1:x", base_url=silent.url, timeout=0.3)),
                       Message(channel="telegram", to="1001", text="hi"), attempts=1))
    with TelegramStub() as stub:          # sendMessage taken and never answered: maybe delivered, never resent
        stub.stall["1001"] = 1.5
        with pytest.raises(NoReply) as err:
            _run(_send(TelegramChannel(TelegramConfig(token=stub.token, base_url=stub.url, timeout=0.3)),
                       Message(channel="telegram", to="1001", text="hi"), attempts=3))
        assert len(stub.sent) == 1 and not err.value.retryable


def test_telegram_wrong_token_and_bad_chat_id_are_answers_not_outages():
    with TelegramStub() as stub:
        with pytest.raises(MessageRejected, match="TOUCHFLOW_TELEGRAM_BOT_TOKEN"):
            _run(_send(TelegramChannel(TelegramConfig(token="999:wrong", base_url=stub.url)),
                       Message(channel="telegram", to="1001", text="hi")))
        with pytest.raises(AddressRejected, match="not a Telegram chat id"):
            _run(_send(telegram(stub), Message(channel="telegram", to="@someone", text="hi")))
    assert stub.sent == []


def test_deep_link_binds_the_chat_once(engine, cli_env, tmp_path):
    run_json("import", "customers", write_csv(tmp_path / "c.csv", ["external_id", "name"], [["T1", "Телеграмов"]]))
    link = run_json("telegram", "link", "T1")["link"]
    assert link.startswith("https://t.me/touchflow_bot?start=")
    token = link.split("start=", 1)[1]
    with engine.connect() as conn:
        stored = conn.execute(select(TelegramLink.__table__)).one()
    assert stored.token_hash != token and stored.used_at is None
    with TelegramStub() as stub:
        stub.add_start(55501, f"/start {token}")
        stub.add_start(55502, f"/start {token}")          # a second use of the same token
        stub.add_start(55503, "/start forged-token")
        bot = make_bot(TelegramConfig(token=stub.token, base_url=stub.url))
        bound = _run(poll(engine, bot, stop_after=3, timeout=0))
    assert bound == 1
    with engine.connect() as conn:
        chats = conn.execute(select(ContactPoint.__table__.c.value).where(
            ContactPoint.__table__.c.kind == "telegram")).scalars().all()
    assert chats == ["55501"]
    replies = {int(p["chat_id"]): p["text"] for p in stub.sent}
    assert replies[55501].startswith("Готово") and replies[55502].startswith("Не получилось")
    assert replies[55503].startswith("Не получилось")


def test_expired_link_is_refused(engine, cli_env, tmp_path):
    run_json("import", "customers", write_csv(tmp_path / "c.csv", ["external_id"], [["T2"]]))
    link, _ = create_link(engine, "T2", "touchflow_bot")
    with engine.begin() as conn:
        conn.execute(update(TelegramLink.__table__).values(expires_at=datetime.now(timezone.utc) - timedelta(days=1)))
    with pytest.raises(LinkError, match="expired"):
        bind_chat(engine, link.split("start=")[1], 777)
    with pytest.raises(LinkError, match="no customer"):
        create_link(engine, "NOPE", "touchflow_bot")


# ---------------------------------------------------------------- Twilio

def twilio_config(stub: TwilioStub, **kwargs) -> TwilioConfig:
    return TwilioConfig(account_sid=stub.account_sid, auth_token=stub.auth_token, api_base_url=stub.url,
                        status_callback="https://t.example/twilio/status", **kwargs)


def test_sms_request_fields_reach_twilio():
    with TwilioStub() as stub:
        delivery = _run(_send(TwilioSmsChannel(twilio_config(stub, from_number="+15005550006")),
                              Message(channel="sms", to="+79161234567", text="Визитки заканчиваются")))
        ((resource, fields),) = stub.created
    assert resource == "Messages.json"
    assert fields == {"To": "+79161234567", "From": "+15005550006", "Body": "Визитки заканчиваются",
                      "StatusCallback": "https://t.example/twilio/status"}
    assert delivery.provider_id.startswith("SM") and delivery.status == "queued"


def test_sms_through_a_messaging_service():
    with TwilioStub() as stub:
        _run(_send(TwilioSmsChannel(twilio_config(stub, messaging_service_sid="MG123")),
                   Message(channel="sms", to="+79161234567", text="hi")))
        ((_, fields),) = stub.created
    assert fields["MessagingServiceSid"] == "MG123" and "From" not in fields


def test_21610_is_an_opt_out():
    with TwilioStub() as stub:
        stub.failures["+79160021610"] = [(400, 21610)]
        with pytest.raises(OptedOut) as err:
            _run(_send(TwilioSmsChannel(twilio_config(stub, from_number="+15005550006")),
                       Message(channel="sms", to="+79160021610", text="hi")))
    assert err.value.code == "21610" and err.value.action == "opt_out"


def test_20429_and_503_are_retried_until_accepted():
    with TwilioStub() as stub:
        stub.failures["+79160020429"] = [(429, 20429), (503, 20500)]
        delivery = _run(_send(TwilioSmsChannel(twilio_config(stub, from_number="+15005550006")),
                              Message(channel="sms", to="+79160020429", text="hi"), attempts=3))
        assert delivery.provider_id.startswith("SM")
        assert [p for p, _, _ in stub.requests].count(f"/2010-04-01/Accounts/{stub.account_sid}/Messages.json") == 3
        stub.failures["+79160000503"] = [(503, 20500)] * 5
        with pytest.raises(TransientError):
            _run(_send(TwilioSmsChannel(twilio_config(stub, from_number="+15005550006")),
                       Message(channel="sms", to="+79160000503", text="hi"), attempts=2))


def test_bad_number_is_rejected_and_wrong_credentials_refused():
    with TwilioStub() as stub:
        stub.failures["+70000000000"] = [(400, 21211)]
        with pytest.raises(AddressRejected):
            _run(_send(TwilioSmsChannel(twilio_config(stub, from_number="+15005550006")),
                       Message(channel="sms", to="+70000000000", text="hi")))
        bad = TwilioConfig(account_sid=stub.account_sid, auth_token="wrong", api_base_url=stub.url,
                           from_number="+15005550006")
        with pytest.raises(Exception) as err:
            _run(_send(TwilioSmsChannel(bad), Message(channel="sms", to="+79161234567", text="hi")))
        assert "20003" in str(getattr(err.value, "code", "")) and "wrong" not in repr(TwilioSmsChannel(bad))


def test_voice_call_reads_the_text_with_say():
    with TwilioStub() as stub:
        _run(_send(TwilioVoiceChannel(twilio_config(stub, from_number="+15005550006")),
                   Message(channel="voice", to="+79161234567", text="Здравствуйте! Подходит срок ТО.")))
        ((resource, fields),) = stub.created
    assert resource == "Calls.json"
    assert fields["Twiml"] == ('<?xml version="1.0" encoding="UTF-8"?><Response><Say language="ru-RU" '
                               'voice="alice">Здравствуйте! Подходит срок ТО.</Say></Response>')


def test_twilio_unreachable_is_connection_failed_and_the_breaker_stops_the_channel():
    config = TwilioConfig(account_sid="AC" + "0" * 32, auth_token="t", from_number="+15005550006",
                          api_base_url=f"http://127.0.0.1:{free_port()}", timeout=1)
    channel = TwilioSmsChannel(config)

    async def go():
        return await send_all(channel, [Message(channel="sms", to=f"+7916000{i:04d}", text="hi") for i in range(20)],
                              concurrency=1, breaker=Breaker(3), attempts=1)

    results = _run(go())
    assert [type(r) for r in results] == [ConnectionFailed] * 3 + [ChannelDown] * 17
    assert results[0].code == "connection_failed" and "cannot reach Twilio" in str(results[0])


def test_twilio_that_takes_the_request_and_never_answers_is_no_reply_not_resent():
    with SilentServer() as silent:
        config = TwilioConfig(account_sid="AC" + "0" * 32, auth_token="t", from_number="+15005550006",
                              api_base_url=silent.url, timeout=0.3)
        with pytest.raises(NoReply) as err:
            _run(_send(TwilioSmsChannel(config), Message(channel="sms", to="+79161234567", text="hi"), attempts=3))
        assert silent.accepted == 1                # one request: Twilio may have created it, so no second one
    assert err.value.code == "no_reply" and not err.value.retryable

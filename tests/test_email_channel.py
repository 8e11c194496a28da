"""The email channel through a real SMTP conversation with an aiosmtpd server."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy

import pytest

from channels.base import Message
from channels.email import SmtpConfig, SmtpEmailChannel
from channels.errors import AddressRejected, DeliveryUnknown, TransientError
from channels.sending import send_all
from channels.unsubscribe import make_token, unsubscribe_url, verify_token
from tests.servers import SmtpBehaviour, SmtpServer

KEY = b"test-key"


def channel_for(server: SmtpServer, **kwargs) -> SmtpEmailChannel:
    return SmtpEmailChannel(SmtpConfig(host="127.0.0.1", port=server.port, from_address="shop@example.com",
                                       timeout=kwargs.pop("timeout", 5), **kwargs))


def message(to: str = "ivan@mail.ru", **kwargs) -> Message:
    token = make_token(KEY, 7, "email", to)
    return Message(channel="email", to=to, subject="Визитки скоро закончатся", text="Здравствуйте, Иван!\nСкидка 5%.",
                   html="<p>Здравствуйте, <b>Иван</b>!</p>", unsubscribe_url=unsubscribe_url("https://t.example", token),
                   reference="campaign:42", **kwargs)


def send(channel, msg):
    async def go():
        try:
            return await channel.send(msg)
        finally:
            await channel.close()
    return asyncio.run(go())


def test_the_server_receives_both_parts_cyrillic_and_one_click_headers():
    with SmtpServer() as server:
        delivery = send(channel_for(server), message())
        (envelope,) = server.messages
    assert envelope.mail_from == "shop@example.com" and envelope.rcpt_tos == ["ivan@mail.ru"]
    raw = envelope.original_content
    assert b"Content-Type: multipart/alternative" in raw
    assert b"=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0]          # the Cyrillic subject is encoded
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "Визитки скоро закончатся"
    assert parsed["Message-ID"] == delivery.provider_id and parsed["Message-ID"].endswith("@example.com>")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = parsed["List-Unsubscribe"].strip("<>")
    claim = verify_token(KEY, url.rsplit("/", 1)[1])
    assert (claim.customer_id, claim.channel) == (7, "email")
    plain = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert "Здравствуйте, Иван!" in plain and "<b>Иван</b>" in html


def test_a_pool_of_persistent_connections_carries_many_messages():
    with SmtpServer() as server:
        channel = channel_for(server, pool_size=2)
        messages = [message(f"c{i}@mail.ru") for i in range(12)]

        async def go():
            try:
                return await send_all(channel, messages, concurrency=2)
            finally:
                await channel.close()

        results = asyncio.run(go())
        assert all(not isinstance(r, Exception) for r in results)
        assert sorted(e.rcpt_tos[0] for e in server.messages) == sorted(m.to for m in messages)
        assert server.handler.connections == 2


def test_421_at_data_is_transient():
    with SmtpServer(SmtpBehaviour(data_reply="421 4.3.2 Service not available, closing channel")) as server:
        with pytest.raises(TransientError) as err:
            send(channel_for(server), message())
    assert err.value.code == "421" and "Service not available" in err.value.provider_message


def test_550_for_the_only_recipient_rejects_the_address():
    with SmtpServer(SmtpBehaviour(rcpt_replies={"gone@mail.ru": "550 5.1.1 No such user"})) as server:
        with pytest.raises(AddressRejected) as err:
            send(channel_for(server), message("gone@mail.ru"))
        assert err.value.action == "bounced" and err.value.code == "550"
        assert server.messages == []


def test_550_for_one_of_two_recipients_is_a_partial_refusal():
    with SmtpServer(SmtpBehaviour(rcpt_replies={"gone@mail.ru": "550 5.1.1 No such user"})) as server:
        delivery = send(channel_for(server), message("ivan@mail.ru, gone@mail.ru"))
        (envelope,) = server.messages
    assert envelope.rcpt_tos == ["ivan@mail.ru"]
    assert delivery.refused == {"gone@mail.ru": "550 5.1.1 No such user"}


def test_disconnect_after_data_leaves_the_delivery_unknown():
    with SmtpServer(SmtpBehaviour(disconnect_after_data=True)) as server:
        with pytest.raises(DeliveryUnknown):
            send(channel_for(server), message())


def test_a_stall_past_the_timeout_after_data_is_unknown_not_retried():
    with SmtpServer(SmtpBehaviour(stall_seconds=3)) as server:
        with pytest.raises(DeliveryUnknown) as err:
            send(channel_for(server, timeout=1), message())
    assert not err.value.retryable


def test_no_server_is_transient():
    channel = SmtpEmailChannel(SmtpConfig(host="127.0.0.1", port=1, timeout=2))
    with pytest.raises(TransientError, match="cannot connect"):
        send(channel, message())


def test_the_password_never_appears_in_reprs():
    channel = SmtpEmailChannel(SmtpConfig(username="shop", password="hunter2-very-secret"))
    assert "hunter2" not in repr(channel) and "***" in repr(channel)

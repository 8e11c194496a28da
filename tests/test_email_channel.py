"""The email channel through a real SMTP conversation with an aiosmtpd server."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, message_from_string, policy

import pytest

from channels.base import Delivery, Message
from channels.transports.smtp import SmtpConfig, SmtpEmailChannel
from channels.errors import (
    AddressNotSupported,
    AddressRejected,
    ChannelDown,
    ConnectionFailed,
    DeliveryUnknown,
    MessageRejected,
    NoReply,
    TransientError,
)
from channels.sending import Breaker, send_all
from channels.unsubscribe import make_token, unsubscribe_url, verify_token
from tests.servers import SilentServer, SmtpBehaviour, SmtpServer

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


def send_many(channel, messages, **kwargs):
    async def go():
        try:
            return await send_all(channel, messages, **kwargs)
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
    assert isinstance(err.value, NoReply) and err.value.code == "no_reply"   # the Breaker counts it


def test_no_server_is_transient():
    channel = SmtpEmailChannel(SmtpConfig(host="127.0.0.1", port=1, timeout=2))
    with pytest.raises(TransientError, match="cannot connect"):
        send(channel, message())


def test_the_password_never_appears_in_reprs():
    channel = SmtpEmailChannel(SmtpConfig(username="shop", password="hunter2-very-secret"))
    assert "hunter2" not in repr(channel) and "***" in repr(channel)


# ---------------------------------------------------------------- non-ASCII addresses (RFC 5890, 6531, 6532)

def test_an_idn_domain_goes_out_in_its_ascii_form_through_any_relay():
    with SmtpServer() as server:                                      # no SMTPUTF8
        send(channel_for(server), message("ivan@почта.рф"))
        (envelope,) = server.messages
    assert envelope.rcpt_tos == ["ivan@xn--80a1acny.xn--p1ai"] and "SMTPUTF8" not in envelope.mail_options
    parsed = message_from_bytes(envelope.original_content, policy=policy.default)
    assert parsed["To"] == "ivan@xn--80a1acny.xn--p1ai" and envelope.original_content.isascii()


def test_a_utf8_mailbox_goes_out_with_smtputf8_when_the_relay_offers_it():
    with SmtpServer(SmtpBehaviour(smtputf8=True)) as server:
        delivery = send(channel_for(server), message("иван@почта.рф", from_name="Типография «Оттиск»"))
        (envelope,) = server.messages
    assert envelope.mail_options == ["SMTPUTF8"] and envelope.rcpt_tos == ["иван@xn--80a1acny.xn--p1ai"]
    raw = envelope.original_content
    assert "To: иван@почта.рф".encode() in raw                        # RFC 6532: the header in UTF-8
    parsed = message_from_string(raw.decode("utf-8"), policy=policy.default)
    assert parsed["Subject"] == "Визитки скоро закончатся" and parsed["Message-ID"] == delivery.provider_id
    assert parsed["From"].addresses[0].display_name == "Типография «Оттиск»"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Здравствуйте, Иван!" in parsed.get_body(("plain",)).get_content()
    assert "<b>Иван</b>" in parsed.get_body(("html",)).get_content()


def test_a_utf8_mailbox_through_a_relay_without_smtputf8_fails_alone_and_is_not_bounced():
    with SmtpServer() as server:
        results = send_many(channel_for(server, pool_size=1),
                            [message("a@mail.ru"), message("иван@почта.рф"), message("b@mail.ru")], concurrency=1)
        delivered = sorted(e.rcpt_tos[0] for e in server.messages)
        connections = server.handler.connections
    ok_a, refused, ok_b = results
    assert isinstance(ok_a, Delivery) and isinstance(ok_b, Delivery) and delivered == ["a@mail.ru", "b@mail.ru"]
    assert isinstance(refused, AddressNotSupported) and isinstance(refused, MessageRejected)
    assert refused.action is None and refused.code == "smtputf8_unsupported"       # the address stays usable
    assert "does not support SMTPUTF8" in str(refused) and "иван@почта.рф" in str(refused)
    assert connections == 1                                           # the connection was kept


def test_a_message_that_cannot_be_built_is_rejected_alone_before_anything_is_sent():
    unbuildable = [message("ivan@почта..рф"),                        # an empty IDNA label
                   message(headers={"X-Кампания": "весна"}),          # a header name that is not ASCII
                   message("")]                                       # no recipient at all
    with SmtpServer() as server:
        results = send_many(channel_for(server, pool_size=1), unbuildable + [message("ok@mail.ru")], concurrency=1)
        assert [e.rcpt_tos for e in server.messages] == [["ok@mail.ru"]]
        assert server.handler.connections == 1
    *bad, good = results
    assert isinstance(good, Delivery)
    for error in bad:                      # not DeliveryUnknown: definitely not handed over, nothing to hold
        assert type(error) is MessageRejected and error.code == "unbuildable", error
        assert "cannot build the email" in str(error)


# ---------------------------------------------------------------- servers that cannot be reached

@pytest.mark.parametrize("greeting, stage", [
    (b"", "Timed out waiting for server ready message"),              # accepts and never greets
    (b"554 5.3.2 no service here\r\n", "554"),                         # greets with a refusal
    (b"220 hello\r\n", "Timed out"),                                  # greets, then never answers EHLO
])
def test_a_server_that_accepts_but_does_not_serve_costs_a_few_timeouts_not_one_per_message(greeting, stage):
    with SilentServer(greeting) as silent:
        channel = SmtpEmailChannel(SmtpConfig(port=silent.port, timeout=0.3, pool_size=2))
        results = send_many(channel, [message(f"c{i}@mail.ru") for i in range(40)], concurrency=2,
                            breaker=Breaker(3), attempts=1)
        accepted = silent.accepted
    tried = [r for r in results if not isinstance(r, ChannelDown)]
    assert all(type(r) is ConnectionFailed and stage in str(r) for r in tried), tried
    assert 3 <= len(tried) <= 4 and accepted == len(tried)             # the breaker's limit (+1 in flight)
    assert all(r.code == "channel_down" for r in results[len(tried):])


def test_a_refused_login_stays_message_rejected_and_a_right_one_sends():
    behaviour = SmtpBehaviour(login=("shop", "right-password"))
    with SmtpServer(behaviour) as server:
        wrong = channel_for(server, username="shop", password="wrong-password")
        with pytest.raises(MessageRejected, match="login .* refused") as err:
            send(wrong, message())
        assert not isinstance(err.value, ConnectionFailed)
        send(channel_for(server, username="shop", password="right-password"), message())
        assert len(server.messages) == 1


def test_starttls_the_server_lacks_is_connection_failed_and_login_it_lacks_is_rejected():
    with SmtpServer() as server:                      # offers neither STARTTLS nor AUTH
        with pytest.raises(ConnectionFailed, match="STARTTLS"):
            send(channel_for(server, start_tls=True), message())
        with pytest.raises(MessageRejected, match="impossible") as err:
            send(channel_for(server, username="shop", password="secret"), message())
        assert not isinstance(err.value, ConnectionFailed) and server.messages == []

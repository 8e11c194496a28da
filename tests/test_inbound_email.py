"""Reading replies: providers' JSON and RFC 822 bytes parsed alike, the quoted message cut off, the signature checked."""

from __future__ import annotations

import base64
from email.message import EmailMessage

import pytest

from channels.base import Message
from channels.inbound.email import InboundEmailError, from_bytes, from_json, message_ids, strip_quoted
from channels.inbound.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, sign, verify
from channels.transports.mime import build_email


def reply_to(original: bytes, text: str, *, html: str | None = None, sender: str = "Мария <Maria@Mail.ru>") -> bytes:
    """A reply as a mail client writes it: Re: subject, In-Reply-To and References naming the original."""
    first = from_bytes(original)
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = first.sender
    mail["Subject"] = "Re: " + first.subject
    mail["Message-ID"] = "<reply-1@mail.ru>"
    mail["In-Reply-To"] = first.message_id
    mail["References"] = f"<older@x.ru> {first.message_id}"
    mail.set_content(text)
    if html:
        mail.add_alternative(html, subtype="html")
    return mail.as_bytes()


def test_a_reply_to_our_own_email_names_its_message_id_and_the_quote_is_cut_off():
    original, message_id = build_email(Message(channel="email", to="maria@mail.ru", subject="Скидка 10% на кофе", text="Приходите!",
                                               reference="touch:42"), "shop@touchflow.ru")
    assert ".touch.42@" in message_id
    data = reply_to(original, "Да, интересно. Когда можно прийти?\n\n"
                              "пн, 7 дек. 2026 г. в 10:00, touchflow <shop@touchflow.ru>:\n> Приходите!\n")
    parsed = from_bytes(data)
    assert (parsed.sender, parsed.subject, parsed.message_id) == ("maria@mail.ru", "Re: Скидка 10% на кофе",
                                                                    "<reply-1@mail.ru>")
    assert parsed.answers == (message_id, "<older@x.ru>")       # In-Reply-To first, then References newest first
    assert parsed.reply == "Да, интересно. Когда можно прийти?"
    assert "Приходите!" in parsed.text and parsed.raw == data and parsed.fingerprint == "<reply-1@mail.ru>"


def test_provider_json_shapes_read_alike_and_raw_mime_wins():
    postmark = {"FromFull": {"Email": "Ivan@Example.com", "Name": "Иван"}, "From": "Ivan@Example.com",
                "To": "shop@touchflow.ru", "Subject": "Re: offer", "TextBody": "Yes please\n\nOn Mon, Dec 7, 2026 "
                "at 10:00 AM touchflow <shop@touchflow.ru>\nwrote:\n> offer\n",
                "Headers": [{"Name": "In-Reply-To", "Value": "<a1@touchflow.ru>"},
                            {"Name": "Message-ID", "Value": "<p1@example.com>"}]}
    generic = {"from": "Иван <ivan@example.com>", "to": ["shop@touchflow.ru"], "subject": "Re: offer",
               "html": "<div>Yes please</div><blockquote>offer</blockquote>",
               "headers": "In-Reply-To: <a1@touchflow.ru>\r\nMessage-ID: <p1@example.com>\r\n"}
    for payload in (postmark, generic):
        parsed = from_json(payload)
        assert (parsed.sender, parsed.reply, parsed.in_reply_to, parsed.message_id) == \
            ("ivan@example.com", "Yes please", ("<a1@touchflow.ru>",), "<p1@example.com>"), payload
    raw = reply_to(build_email(Message(channel="email", to="ivan@example.com", subject="offer", text="offer"), "shop@touchflow.ru")[0],
                   "Из сырого письма")
    assert from_json({"from": "someone@else.ru", "text": "ignored", "raw": raw.decode()}).reply == "Из сырого письма"
    encoded = {"raw_base64": base64.b64encode(raw).decode()}
    assert from_json(encoded).sender == "maria@mail.ru"
    body_named_email = from_json({"from": "a@b.ru", "email": "Спасибо\nОтвечу завтра"})   # text, not a message
    assert body_named_email.sender == "a@b.ru"
    encoded_words = from_json({"from": "a@b.ru", "text": "ok", "headers": {"Subject": "=?utf-8?b?0J7RgtCy0LXRgg==?="}})
    assert encoded_words.subject == "Ответ"


def test_html_only_replies_and_encoded_headers():
    mail = EmailMessage()
    mail["From"] = "=?utf-8?b?0JzQsNGA0LjRjw==?= <maria@mail.ru>"
    mail["Subject"] = "=?utf-8?b?0J7RgtCy0LXRgg==?="
    mail.set_content("<p>Перезвоните мне</p><p>пожалуйста</p><div class=gmail_quote>"
                     "<blockquote>старое письмо</blockquote></div>", subtype="html")
    parsed = from_bytes(mail.as_bytes())
    assert parsed.subject == "Ответ" and parsed.reply == "Перезвоните мне\n\nпожалуйста"
    assert parsed.message_id is None and parsed.fingerprint.startswith("sha256:")
    assert from_bytes(mail.as_bytes()).fingerprint == parsed.fingerprint      # the same bytes, the same id


@pytest.mark.parametrize("text, reply", [
    ("Thanks!\n\nOn Mon, 7 Dec 2026 at 10:00, touchflow <shop@touchflow.ru> wrote:\n> Hello\n", "Thanks!"),
    ("Спасибо\n\n07.12.2026, 10:00, \"touchflow\" <shop@touchflow.ru>:\n>Привет\n", "Спасибо"),
    ("Ок\n\n7 декабря 2026 г., 10:00 пользователь touchflow <shop@touchflow.ru> написал:\n> Привет\n", "Ок"),
    ("Sure\n\n-----Original Message-----\nFrom: touchflow\nSent: Monday\nTo: me\nSubject: offer\n\nHello", "Sure"),
    ("Да\n\nFrom: touchflow <shop@touchflow.ru>\nSent: Monday, December 7, 2026\nTo: maria@mail.ru\n"
     "Subject: offer\n\nHello", "Да"),
    ("> Do you want it?\nYes\n> Which size?\nM\n", "Yes\nM"),                     # answers between the quotes
    ("Here is what my colleague wrote:\nit works\n", "Here is what my colleague wrote:\nit works"),
    ("Call me\n-- \nMaria\n+7 916 123-45-67", "Call me"),
    ("> only a quote\n", ""),
])
def test_strip_quoted(text, reply):
    assert strip_quoted(text) == reply


def test_unreadable_payloads_say_what_is_wrong():
    with pytest.raises(InboundEmailError, match="no sender address"):
        from_json({"to": "shop@touchflow.ru", "text": "hi"})
    with pytest.raises(InboundEmailError, match="JSON object"):
        from_json([1, 2])
    with pytest.raises(InboundEmailError, match="'headers' item"):
        from_json({"from": "a@b.ru", "headers": [42]})
    with pytest.raises(InboundEmailError, match="empty"):
        from_bytes(b"  ")
    assert message_ids("<a@b> <c@d>") == ("<a@b>", "<c@d>") and message_ids("bare@id") == ("<bare@id>",)


def test_signature_signs_the_timestamp_with_the_body_and_expires():
    body = b'{"from": "a@b.ru"}'
    headers = sign("s3cret", body, timestamp=1_000_000)
    verify("s3cret", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], now=1_000_100)
    for secret, data, stamp, now, reason in (
            ("other", body, headers[TIMESTAMP_HEADER], 1_000_100, "does not match"),
            ("s3cret", body + b" ", headers[TIMESTAMP_HEADER], 1_000_100, "does not match"),
            ("s3cret", body, "1000001", 1_000_100, "does not match"),               # a fresh time on an old body
            ("s3cret", body, headers[TIMESTAMP_HEADER], 1_000_400, "from now"),
            ("s3cret", body, "soon", 1_000_100, "unix seconds"),
            ("s3cret", body, None, 1_000_100, "missing")):
        with pytest.raises(SignatureError, match=reason):
            verify(secret, data, stamp, headers[SIGNATURE_HEADER], now=now)
    with pytest.raises(SignatureError, match="sha256="):
        verify("s3cret", body, headers[TIMESTAMP_HEADER], "md5=abc", now=1_000_100)

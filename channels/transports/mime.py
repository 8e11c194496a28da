"""Build the bytes of an email: multipart/alternative (plain + HTML), UTF-8 base64, one-click unsubscribe.

Written directly rather than through ``email.message``: building the MIME tree costs more than
rendering and sending together (~2.5 ms with the default policy, ~0.7 ms with compat32); this
writes the same structure in a fraction of that. Non-ASCII headers become RFC 2047 encoded words;
bodies are base64 in 76-character lines.

Addresses cannot be encoded words. A non-ASCII domain is written in its IDNA form (still the fast
path); a non-ASCII mailbox (``иван@почта.рф``) makes an RFC 6532 message with UTF-8 headers,
built by the standard library (``policy.SMTPUTF8``), which only a relay offering SMTPUTF8 takes.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from channels.base import Message
from channels.transports.addresses import wire_address, wire_addresses

_CRLF = "\r\n"
_date_cache: tuple[int, str] = (0, "")


def _date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def encode_word(value: str) -> str:
    """An RFC 2047 header value: ASCII as it is, otherwise UTF-8 base64 encoded words of ≤ 45 bytes each.

    Words are cut only between characters (a UTF-8 continuation byte is never first in a word).
    """
    if value.isascii():
        return value
    data = value.encode("utf-8")
    words, start = [], 0
    while start < len(data):
        end = min(start + 45, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1
        words.append(data[start:end])
        start = end
    return (_CRLF + " ").join(f"=?utf-8?b?{base64.b64encode(w).decode()}?=" for w in words)


def _body(text: str) -> str:
    data = base64.encodebytes(text.encode("utf-8")).decode()
    return data.replace("\n", _CRLF)


def _part(subtype: str, text: str) -> str:
    return (f"Content-Type: text/{subtype}; charset=\"utf-8\"{_CRLF}Content-Transfer-Encoding: base64{_CRLF}{_CRLF}"
            f"{_body(text)}")


def build_email(message: Message, from_address: str, *, domain: str | None = None) -> tuple[bytes, str]:
    """Return (RFC 5322 bytes, Message-ID) for ``message``.

    Raises ``channels.transports.addresses.AddressError`` for an address that cannot be written.
    """
    if message.to.isascii() and from_address.isascii():
        return _build(message, from_address, message.to, domain)
    sender, recipients = wire_address(from_address), wire_addresses(message.to)
    to = ", ".join(r.header for r in recipients)
    domain = domain or sender.envelope.rpartition("@")[2]
    if sender.utf8 or any(r.utf8 for r in recipients):
        return _build_utf8(message, sender.header, to, domain)
    return _build(message, sender.header, to, domain)


def with_return_path(data: bytes, envelope_from: str | None) -> bytes:
    """``data`` with a first ``Return-Path: <envelope_from>`` line, as the final MTA writes it on delivery.

    Only for copies that have no envelope (the file outbox's .eml files): a message sent over SMTP
    carries its envelope sender in MAIL FROM, and RFC 5321 (4.4) has senders not write Return-Path.
    """
    if not envelope_from:
        return data
    return f"Return-Path: <{envelope_from}>{_CRLF}".encode("ascii") + data


def _message_id(message: Message, domain: str) -> str:
    reference = (message.reference or "").replace(":", ".")[:40]
    return f"<{uuid.uuid4().hex}{'.' + reference if reference else ''}@{domain}>"


def _build(message: Message, from_address: str, to: str, domain: str | None) -> tuple[bytes, str]:
    """The hand-written path: every address is ASCII."""
    domain = domain or from_address.rpartition("@")[2] or "touchflow.local"
    message_id = _message_id(message, domain)
    sender = from_address
    if message.from_name:
        sender = f"{encode_word(message.from_name)} <{from_address}>" if not message.from_name.isascii() else \
            formataddr((message.from_name, from_address))
    headers = [f"From: {sender}", f"To: {to}", f"Subject: {encode_word(message.subject or '')}",
               f"Date: {_date()}", f"Message-ID: {message_id}", "MIME-Version: 1.0"]
    if message.unsubscribe_url:
        headers.append(f"List-Unsubscribe: <{message.unsubscribe_url}>")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    for key, value in message.headers.items():
        headers.append(f"{key}: {encode_word(value)}")
    if message.html:
        boundary = f"=_tf_{os.urandom(12).hex()}"
        content_type = f"Content-Type: multipart/alternative; boundary=\"{boundary}\""
        body = (f"--{boundary}{_CRLF}{_part('plain', message.text or '')}{_CRLF}--{boundary}{_CRLF}"
                f"{_part('html', message.html)}{_CRLF}--{boundary}--{_CRLF}")
    else:
        content_type = f"Content-Type: text/plain; charset=\"utf-8\"{_CRLF}Content-Transfer-Encoding: base64"
        body = _body(message.text or "")
    if message.attachments:
        mixed = f"=_tf_{os.urandom(12).hex()}"
        parts = [f"--{mixed}{_CRLF}{content_type}{_CRLF}{_CRLF}{body}"]
        for name, content, mime_type in message.attachments:
            encoded_name = encode_word(name).replace(_CRLF + " ", "")
            parts.append(f"--{mixed}{_CRLF}Content-Type: {mime_type}; name=\"{encoded_name}\"{_CRLF}"
                         f"Content-Disposition: attachment; filename=\"{encoded_name}\"{_CRLF}"
                         f"Content-Transfer-Encoding: base64{_CRLF}{_CRLF}"
                         f"{base64.encodebytes(content).decode().replace(chr(10), _CRLF)}")
        content_type = f"Content-Type: multipart/mixed; boundary=\"{mixed}\""
        body = _CRLF.join(parts) + f"{_CRLF}--{mixed}--{_CRLF}"
    headers.append(content_type)
    return (_CRLF.join(headers) + _CRLF + _CRLF + body).encode("ascii"), message_id


_SMTPUTF8 = policy.SMTPUTF8.clone(linesep=_CRLF)


def _build_utf8(message: Message, from_address: str, to: str, domain: str) -> tuple[bytes, str]:
    """An RFC 6532 message (UTF-8 headers) for a UTF-8 mailbox; ~40x slower than ``_build``, and rare."""
    message_id = _message_id(message, domain)
    mail = EmailMessage(policy=_SMTPUTF8)
    mail["From"] = Address(display_name=message.from_name or "", addr_spec=from_address)
    mail["To"] = to
    mail["Subject"] = message.subject or ""
    mail["Date"] = _date()
    mail["Message-ID"] = message_id
    if message.unsubscribe_url:
        mail["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for key, value in message.headers.items():
        mail[key] = value
    mail.set_content(message.text or "", cte="base64")
    if message.html:
        mail.add_alternative(message.html, subtype="html", cte="base64")
    for name, content, mime_type in message.attachments:
        maintype, _, subtype = mime_type.partition("/")
        mail.add_attachment(content, maintype=maintype, subtype=subtype or "octet-stream", filename=name)
    return mail.as_bytes(), message_id

"""Build the bytes of an email: multipart/alternative (plain + HTML), UTF-8 base64, one-click unsubscribe.

Written directly rather than through ``email.message``: building the MIME tree costs more than
rendering and sending together (~2.5 ms with the default policy, ~0.7 ms with compat32); this
writes the same structure in a fraction of that. Non-ASCII headers become RFC 2047 encoded words;
bodies are base64 in 76-character lines.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from email.utils import formataddr, formatdate

from channels.base import Message

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
    """Return (RFC 5322 bytes, Message-ID) for ``message``."""
    domain = domain or from_address.rpartition("@")[2] or "touchflow.local"
    reference = (message.reference or "").replace(":", ".")[:40]
    message_id = f"<{uuid.uuid4().hex}{'.' + reference if reference else ''}@{domain}>"
    sender = from_address
    if message.from_name:
        sender = f"{encode_word(message.from_name)} <{from_address}>" if not message.from_name.isascii() else \
            formataddr((message.from_name, from_address))
    headers = [f"From: {sender}", f"To: {message.to}", f"Subject: {encode_word(message.subject or '')}",
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

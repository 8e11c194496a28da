"""Build the bytes of an email: multipart/alternative (plain + HTML), UTF-8, one-click unsubscribe.

Uses the compat32 ``email.mime`` classes: a third of ``EmailMessage``'s cost per message.
"""

from __future__ import annotations

from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, make_msgid

from channels.base import Message


def _header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def build_email(message: Message, from_address: str, *, domain: str | None = None) -> tuple[bytes, str]:
    """Return (RFC 5322 bytes, Message-ID) for ``message``."""
    domain = domain or from_address.rpartition("@")[2] or "touchflow.local"
    message_id = make_msgid(idstring=(message.reference or None) and message.reference.replace(":", ".")[:40],
                             domain=domain)
    if message.html:
        mime = MIMEMultipart("alternative")
        mime.attach(MIMEText(message.text or "", "plain", "utf-8"))
        mime.attach(MIMEText(message.html, "html", "utf-8"))
    else:
        mime = MIMEText(message.text or "", "plain", "utf-8")
    name = message.from_name
    mime["From"] = formataddr((str(Header(name, "utf-8")) if name and not name.isascii() else name or "",
                               from_address)) if name else from_address
    mime["To"] = message.to
    mime["Subject"] = _header(message.subject or "")
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    mime["Message-ID"] = message_id
    if message.unsubscribe_url:
        mime["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for key, value in message.headers.items():
        mime[key] = _header(value)
    return mime.as_bytes(), message_id

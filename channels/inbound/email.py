"""An incoming email as plain data: from a mail provider's inbound-parse JSON or from RFC 822 bytes.

Pure functions, no database. ``from_json`` takes the shapes the common providers post (a ``from``,
``to``, ``subject``, ``text`` / ``html`` and ``headers`` as a mapping, a list of name/value pairs or
the raw header block; Postmark's ``TextBody`` / ``HtmlBody`` / ``Headers`` too), and prefers the raw
MIME when the payload carries it (``raw``, ``mime``, ``raw_email``; ``raw_base64``): the raw
message is what was sent, the provider's fields are its reading of it. ``from_bytes`` reads a
message fetched from a mailbox.

``strip_quoted`` cuts the previous message off a reply (the ``>`` lines, the "On … wrote:" /
"… написал(а):" attribution and what follows it, an "Original Message" block, the signature), so
the history shows what the person wrote, not our own message again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from typing import Any

from touchflow.errors import InputError

RAW_FIELDS = ("raw", "mime", "raw_email", "rawemail", "email")  # SendGrid's "send raw" posts it as "email"
TEXT_FIELDS = ("text", "textbody", "plain", "body-plain", "body_plain", "text_body")
HTML_FIELDS = ("html", "htmlbody", "body-html", "body_html", "html_body")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_LOOKS_LIKE_MIME = re.compile(r"^[!-9;-~]+:.*?(\r?\n)\r?\n", re.DOTALL)  # a header line first, then a blank line


class InboundEmailError(InputError):
    """An inbound email payload that cannot be read; the message says which field and what was expected."""


@dataclass(frozen=True)
class ParsedEmail:
    """One incoming email: who wrote, what (as sent, and with the quoted previous message cut off), and its ids."""

    sender: str  # the From address, lower-cased ('' when the message names none)
    to: tuple[str, ...]
    subject: str
    text: str  # the plain text as sent (made from the HTML when there is no plain part)
    reply: str  # ``text`` without the quoted previous message
    message_id: str | None  # as in the header, with its angle brackets
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]  # every header, in order (names as written)
    content_type: str  # e.g. multipart/report for a delivery status notification
    raw: bytes | None = None

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def answers(self) -> tuple[str, ...]:
        """The Message-IDs this email answers, most likely first: In-Reply-To, then References newest first."""
        seen: list[str] = []
        for ident in (*self.in_reply_to, *reversed(self.references)):
            if ident not in seen:
                seen.append(ident)
        return tuple(seen)

    @property
    def fingerprint(self) -> str:
        """A stable id for deduplication: the Message-ID, else a digest of the raw message or of its parts."""
        if self.message_id:
            return self.message_id
        data = self.raw if self.raw is not None else "\0".join((self.sender, self.subject, self.text)).encode()
        return "sha256:" + hashlib.sha256(data).hexdigest()


def message_ids(value: str | None) -> tuple[str, ...]:
    """The ``<id>`` tokens of a Message-ID, In-Reply-To or References header; a bare id gets its brackets."""
    if not value:
        return ()
    found = tuple(_MESSAGE_ID.findall(value))
    if found:
        return found
    bare = value.strip()
    return (f"<{bare}>",) if bare and " " not in bare else ()


def from_bytes(data: bytes) -> ParsedEmail:
    """Parse an RFC 822 (5322) message; ``InboundEmailError`` when ``data`` is not one."""
    if not isinstance(data, (bytes, bytearray)) or not data.strip():
        raise InboundEmailError("the raw email is empty; expected the RFC 822 message bytes")
    message = BytesParser(policy=policy.default).parsebytes(bytes(data))
    headers = tuple((key, _header_text(message, key, value)) for key, value in message.raw_items())
    if not headers:
        raise InboundEmailError("the raw email has no headers; expected an RFC 822 message (headers, a blank line, "
                                "the body)")
    text = _body_text(message)
    found = ParsedEmail(sender="", to=(), subject="", text=text, reply="", message_id=None, in_reply_to=(),
                        references=(), headers=headers, content_type=message.get_content_type(), raw=bytes(data))
    return _completed(found)


def from_json(payload: Any) -> ParsedEmail:
    """Parse a provider's inbound-parse JSON object; the raw MIME in it, when there is one, wins."""
    if not isinstance(payload, Mapping):
        raise InboundEmailError(f"the inbound email must be a JSON object, not {type(payload).__name__}")
    fields = {str(key).lower(): value for key, value in payload.items()}
    raw = _raw_of(fields)
    if raw is not None:
        return from_bytes(raw)
    headers = _headers_of(fields.get("headers"))
    named = {key.lower() for key, _ in headers}
    for field, header in (("from", "From"), ("to", "To"), ("subject", "Subject"), ("message_id", "Message-ID"),
                          ("messageid", "Message-ID"), ("message-id", "Message-ID"), ("in_reply_to", "In-Reply-To"),
                          ("in-reply-to", "In-Reply-To"), ("references", "References")):
        value = _address_field(fields.get(field)) if field in ("from", "to") else fields.get(field)
        if value and header.lower() not in named:
            headers += ((header, str(value)),)
            named.add(header.lower())
    text = _first_text(fields, TEXT_FIELDS)
    if not text:
        text = html_to_text(_first_text(fields, HTML_FIELDS))
    found = ParsedEmail(sender="", to=(), subject="", text=text, reply="", message_id=None, in_reply_to=(),
                        references=(), headers=headers, content_type=_content_type(headers))
    return _completed(found)


def _completed(found: ParsedEmail) -> ParsedEmail:
    """Fill the fields read from the headers (sender, recipients, subject, ids) and the stripped reply."""
    sender = parseaddr(found.header("From") or "")[1].strip().lower()
    if not sender or "@" not in sender:
        raise InboundEmailError(f"the inbound email has no sender address (From: {found.header('From')!r}); "
                                "expected 'from' as an address like 'Name <name@example.com>'")
    recipients = tuple(address.lower() for _, address in getaddresses([found.header("To") or ""]) if address)
    ids = message_ids(found.header("Message-ID"))
    return ParsedEmail(sender=sender, to=recipients, subject=(found.header("Subject") or "").strip(), text=found.text,
                       reply=strip_quoted(found.text), message_id=ids[0] if ids else None,
                       in_reply_to=message_ids(found.header("In-Reply-To")),
                       references=message_ids(found.header("References")), headers=found.headers,
                       content_type=found.content_type, raw=found.raw)


def _header_text(message: EmailMessage, key: str, value: str) -> str:
    """A header's decoded text (encoded words undone); the raw value when it cannot be decoded."""
    try:
        return str(message.policy.header_factory(key, value))
    except Exception:  # a malformed header is kept as written rather than losing the message
        return str(value)


def _body_text(message: EmailMessage) -> str:
    """The plain-text body, else the HTML body as text; undecodable charsets are read with replacement."""
    for kind in ("plain", "html"):
        part = message.get_body(preferencelist=(kind,))
        if part is None:
            continue
        try:
            content = part.get_content()
        except (LookupError, UnicodeError, AssertionError):  # an unknown or lying charset
            content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        return content if kind == "plain" else html_to_text(content)
    return ""


def _raw_of(fields: dict[str, Any]) -> bytes | None:
    """The raw MIME a payload carries (as text, or base64 in ``raw_base64``), or None."""
    encoded = fields.get("raw_base64") or fields.get("mime_base64")
    if isinstance(encoded, str) and encoded.strip():
        try:
            return base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError):
            raise InboundEmailError("'raw_base64' is not base64; send the RFC 822 message base64-encoded") from None
    for name in RAW_FIELDS:
        value = fields.get(name)
        if isinstance(value, str) and _LOOKS_LIKE_MIME.match(value.lstrip()):
            return value.lstrip().encode("utf-8", "surrogateescape")
    return None


def _headers_of(value: Any) -> tuple[tuple[str, str], ...]:
    """Headers given as a mapping, a list of ``{name, value}`` objects or pairs, or the raw header block."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        parsed = HeaderParser(policy=policy.default).parsestr(value.strip() + "\n\n", headersonly=True)
        return tuple((key, str(item)) for key, item in parsed.items())
    if isinstance(value, Mapping):
        return tuple((str(key), _decoded(str(key), item)) for key, item in value.items() if item is not None)
    if isinstance(value, list):
        pairs = []
        for item in value:
            if isinstance(item, Mapping):
                lowered = {str(k).lower(): v for k, v in item.items()}
                if "name" in lowered:
                    pairs.append((str(lowered["name"]), _decoded(str(lowered["name"]), lowered.get("value") or "")))
                    continue
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((str(item[0]), _decoded(str(item[0]), item[1])))
                continue
            raise InboundEmailError(f"'headers' item {item!r} is neither {{'name': …, 'value': …}} nor a pair")
        return tuple(pairs)
    raise InboundEmailError(f"'headers' must be an object, a list of name/value pairs or the header text, "
                            f"not {type(value).__name__}")


def _decoded(name: str, value: Any) -> str:
    """A header value as text, RFC 2047 encoded words undone (providers pass some headers on as written)."""
    text = str(value)
    try:
        return str(policy.default.header_factory(name, text)) if "=?" in text else text
    except Exception:  # a malformed header is kept as written rather than losing the message
        return text


def _address_field(value: Any) -> str | None:
    """``from`` / ``to`` as a header value: a string, an ``{email, name}`` object, or a list of either."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        lowered = {str(k).lower(): v for k, v in value.items()}
        address = lowered.get("email") or lowered.get("address") or ""
        name = lowered.get("name") or ""
        return f"{name} <{address}>" if name else str(address)
    if isinstance(value, list):
        return ", ".join(filter(None, (_address_field(item) for item in value)))
    raise InboundEmailError(f"an address field must be a string, an object or a list, not {type(value).__name__}")


def _first_text(fields: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        value = fields.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _content_type(headers: tuple[tuple[str, str], ...]) -> str:
    value = next((v for k, v in headers if k.lower() == "content-type"), "text/plain")
    return value.split(";", 1)[0].strip().lower() or "text/plain"


# --- the reply without the previous message --------------------------------------------------------------

_ATTRIBUTION = re.compile(
    r"^\s*(on\s.{0,300}\swrote|.{0,300}\s(написал\(а\)|написала|написал|пишет|wrote))\s*:\s*$", re.IGNORECASE)
_ADDRESS_COLON = re.compile(r"^.{0,300}<[^<>\s]+@[^<>\s]+>\s*:\s*$")  # Gmail, Yandex, Mail.ru in Russian
_ATTRIBUTION_START = re.compile(r"^\s*(on\s|\d|(пн|вт|ср|чт|пт|сб|вс|mon|tue|wed|thu|fri|sat|sun)\w*,)", re.IGNORECASE)
_SEPARATOR = re.compile(r"^\s*(-{2,}\s*(original message|исходное сообщение|пересылаемое сообщение|"
                        r"forwarded message)\s*-{2,}|_{20,})\s*$", re.IGNORECASE)
_OUTLOOK_FIELD = re.compile(r"^\s*\**(from|sent|to|subject|date|от|отправлено|кому|тема|дата)\**\s*:", re.IGNORECASE)


def strip_quoted(text: str) -> str:
    """``text`` without the quoted previous message: what the person wrote themselves ('' when nothing is left)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        if line.rstrip() == "--" or line == "-- ":  # the RFC 3676 signature delimiter
            break
        if _SEPARATOR.match(line) or _attribution_at(lines, index) or _outlook_block_at(lines, index):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept).strip()


def _attribution_at(lines: list[str], index: int) -> bool:
    """An "On … wrote:" / "… написал(а):" / "…, Name <address>:" line, or one wrapped over two lines.

    It must name a date or an address (a digit or an ``@``), so a sentence of the reply ending in
    "wrote:" is not taken for one; a wrapped one must start like one ("On …", a date, a weekday).
    """
    if _is_attribution(lines[index]):
        return True
    if index + 1 >= len(lines) or not _ATTRIBUTION_START.match(lines[index]) or _is_attribution(lines[index + 1]):
        return False
    return _is_attribution(lines[index] + " " + lines[index + 1])


def _is_attribution(text: str) -> bool:
    return len(text) < 400 and bool(_ATTRIBUTION.match(text) or _ADDRESS_COLON.match(text)) and \
        ("@" in text or any(ch.isdigit() for ch in text))


def _outlook_block_at(lines: list[str], index: int) -> bool:
    """An Outlook-style quoted header block: a From: line followed closely by two more header fields."""
    if not re.match(r"^\s*\**(from|от)\**\s*:", lines[index], re.IGNORECASE):
        return False
    following = lines[index + 1:index + 5]
    return sum(1 for line in following if _OUTLOOK_FIELD.match(line)) >= 2


class _Text(HTMLParser):
    """HTML to plain text: block elements become line breaks; scripts, styles and quoted blocks are dropped."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
    DROPPED = {"script", "style", "head", "title", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.dropped = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.DROPPED:
            self.dropped += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.DROPPED:
            self.dropped = max(0, self.dropped - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.dropped:
            self.parts.append(re.sub(r"[ \t\r\n]+", " ", data))


def html_to_text(markup: str) -> str:
    """The text of an HTML body, without quoted ``<blockquote>`` parts (where mail clients put the previous message)."""
    if not markup:
        return ""
    parser = _Text()
    parser.feed(markup)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()

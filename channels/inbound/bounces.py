"""Bounces: per-touch return addresses (VERP) on the way out, delivery status notifications on the way back.

Every email goes out with its own envelope sender, ``bounces+<touch id>-<tag>@<bounce domain>``
(``verp_address``); the tag is an HMAC of the touch id under a key derived from the
installation's signing key, so a bounce names the touch it is about and a forged one (someone
mailing ``bounces+42-…`` to fail touch 42) does not verify (``parse_verp``). Relays send their
reports to that address (RFC 5321's reverse path), whatever the report's headers say.

``parse_dsn`` reads a report (RFC 3464: ``multipart/report; report-type=delivery-status``, as
postfix, Exim, Exchange and Gmail send them; and, minimally, a plain-text "Undelivered Mail"
notice with a status code in its text) into plain data: each recipient's Action, Status,
Diagnostic-Code, Final-Recipient, the addresses the report was sent to, and the original
message's Message-ID. ``handle_bounce`` finds the touch (the VERP address, else the Message-ID
against ``touches.provider_message_id``) and records it through ``crm.ledger.bounces``.
"""

from __future__ import annotations

import email
import hashlib
import hmac
import re
from dataclasses import asdict, dataclass, field
from email import policy
from email.message import Message as MimeMessage
from email.parser import BytesHeaderParser
from functools import lru_cache
from typing import Any

from touchflow.errors import ConfigError

TAG_LENGTH = 12  # hex digits of the tag: 48 bits, far beyond guessing by mail
_VERP = re.compile(r"(?P<local>[^@\s<>]+)\+(?P<touch>\d{1,18})-(?P<tag>[0-9a-fA-F]{%d})@(?P<domain>[^@\s<>]+)"
                   % TAG_LENGTH)
_ADDRESS = re.compile(r"[^\s<>\"';:,()]+@[A-Za-z0-9.\-\[\]:]+[A-Za-z0-9\]]")


# --- VERP -----------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC already keyed with the VERP key derived from ``key``: each tag copies it (no key set-up per message)."""
    derived = hmac.new(key, b"touchflow-verp-v1", hashlib.sha256).digest()
    return hmac.new(derived, digestmod=hashlib.sha256)


def verp_tag(touch_id: int, key: bytes) -> str:
    """The tag that signs ``touch_id`` in a return address."""
    mac = _keyed(key).copy()
    mac.update(str(int(touch_id)).encode())
    return mac.hexdigest()[:TAG_LENGTH]


def verp_address(touch_id: int, key: bytes, local: str, domain: str) -> str:
    """``local+<touch id>-<tag>@domain``: the return address of one touch."""
    return f"{local}+{int(touch_id)}-{verp_tag(touch_id, key)}@{domain}"


def verp_candidate(address: str, local: str | None = None) -> tuple[int, str] | None:
    """(touch id, tag) when ``address`` has the shape of a return address (with ``local`` before the '+', if given)."""
    found = _VERP.fullmatch(_bare(address))
    if found is None or (local is not None and found["local"].lower() != local.lower()):
        return None
    return int(found["touch"]), found["tag"].lower()


def parse_verp(address: str, key: bytes, local: str | None = None) -> int | None:
    """The touch id of a return address whose tag verifies under ``key``; None for anything else."""
    candidate = verp_candidate(address, local)
    if candidate is None:
        return None
    touch_id, tag = candidate
    return touch_id if hmac.compare_digest(verp_tag(touch_id, key), tag) else None


def _bare(address: str) -> str:
    """``<a@b>``, ``rfc822; a@b`` or ``Name <a@b>`` → ``a@b``."""
    address = address.strip()
    if ";" in address and "@" in address.partition(";")[2]:
        address = address.partition(";")[2].strip()
    if "<" in address and ">" in address:
        address = address[address.rfind("<") + 1:address.rfind(">")]
    return address.strip()


class Verp:
    """The return addresses of one installation: ``address(touch_id)`` for each message (a few microseconds)."""

    def __init__(self, key: bytes, local: str, domain: str) -> None:
        if not local or "+" in local or "@" in local or not local.isascii() or any(c.isspace() for c in local):
            raise ConfigError(f"bounce_local={local!r}: it must be a plain ASCII local part without '+', '@' or spaces "
                             "(e.g. bounces)")
        if not domain or "@" in domain or any(c.isspace() for c in domain):
            raise ConfigError(f"bounce_domain={domain!r} is not a domain; set TOUCHFLOW_BOUNCE_DOMAIN (e.g. "
                             "bounces.example.com) or a mail_from with a domain")
        from channels.transports.addresses import ascii_domain

        self.key, self.local, self.domain = key, local, ascii_domain(domain)
        self._mac = _keyed(key)

    def address(self, touch_id: int) -> str:
        """``verp_address(touch_id, key, local, domain)``, with the keyed HMAC at hand."""
        mac = self._mac.copy()
        mac.update(str(touch_id).encode())
        return f"{self.local}+{touch_id}-{mac.hexdigest()[:TAG_LENGTH]}@{self.domain}"


@lru_cache(maxsize=16)
def verp_for(key: bytes, local: str, domain: str | None, mail_from: str) -> Verp:
    """The installation's ``Verp`` (built once per key and settings); ``domain`` None: the domain of ``mail_from``."""
    return Verp(key, local, domain or _bare(mail_from).rpartition("@")[2])


# --- reading reports --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipient:
    """One recipient's block of a report (RFC 3464, 2.3)."""

    final_recipient: str | None
    action: str                      # failed, delayed, delivered, relayed, expanded
    status: str                      # 5.1.1; "5.0.0" / "4.0.0" when the report gave none
    diagnostic: str | None = None
    original_recipient: str | None = None
    remote_mta: str | None = None

    @property
    def severity(self) -> str | None:
        """``hard`` (failed, 5.x.x), ``soft`` (delayed, or failed with 4.x.x), None (delivered, relayed, expanded)."""
        if self.action == "delayed":
            return "soft"
        if self.action == "failed":
            return "soft" if self.status.startswith("4") else "hard"
        return None


@dataclass(frozen=True)
class Dsn:
    """What a report says: its recipients, where it was sent (VERP candidates), the original Message-ID."""

    recipients: tuple[Recipient, ...]
    sent_to: tuple[str, ...]                    # envelope recipient, Delivered-To, X-Original-To, To, X-Postfix-Sender
    original_message_id: str | None = None
    reporting_mta: str | None = None
    message_id: str | None = None               # the report's own
    standard: bool = True                       # multipart/report (False: a plain-text notice read by its wording)

    @property
    def worst(self) -> Recipient | None:
        """The recipient that decides: a hard bounce before a soft one; None when nobody bounced."""
        ranked = [r for r in self.recipients if r.severity is not None]
        ranked.sort(key=lambda r: r.severity != "hard")
        return ranked[0] if ranked else None


STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")  # RFC 3464; RFC 6533 (UTF-8)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([45])\d\d(?=[ -])")
_BOUNCE_SUBJECT = re.compile(r"undeliver|returned mail|delivery status notification|delivery fail|mail delivery fail|"
                             r"failure notice|could not be delivered|non.?delivery|delivery has failed|"
                             r"delayed mail|delivery delayed|warning: message", re.I)
_MAILER = re.compile(r"mailer-daemon|postmaster|mail delivery (sub)?system", re.I)
_MESSAGE_ID = re.compile(r"^message-id:[ \t]*(<[^>\s]+>)", re.I | re.M)


def _one_line(value: Any) -> str | None:
    """A header value unfolded into one line (None when absent or empty)."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _type_value(value: str | None) -> str | None:
    """``rfc822; a@b`` → ``a@b``; ``smtp; 550 …`` → ``550 …`` (the value after the type, RFC 3464 2.1.2)."""
    if value is None:
        return None
    _, semicolon, rest = value.partition(";")
    return (rest.strip() if semicolon else value.strip()) or None


def _status(value: str | None, action: str) -> str:
    found = _STATUS.search(value or "")
    if found:
        return found.group(0)
    return "4.0.0" if action == "delayed" else "5.0.0"


def parse_dsn(raw: bytes, envelope_to: str | None = None) -> Dsn | None:
    """Read a delivery status notification; None when ``raw`` is not one (a reply, an auto-reply, junk)."""
    mail = email.message_from_bytes(raw, policy=policy.compat32)
    sent_to = _sent_to(mail, envelope_to)
    if mail.get_content_type() == "multipart/report" and \
            (mail.get_param("report-type") or "").lower() in ("delivery-status", "global-delivery-status"):
        return _standard(mail, sent_to)
    return _plain(mail, sent_to)


def _sent_to(mail: MimeMessage, envelope_to: str | None) -> list[str]:
    found = [envelope_to] if envelope_to else []
    for name in ("Delivered-To", "X-Original-To", "To", "Envelope-To", "X-Envelope-To"):
        for value in mail.get_all(name) or []:
            found.extend(a for a in _ADDRESS.findall(str(value)))
    return [_bare(a) for a in found if a]


def _standard(mail: MimeMessage, sent_to: list[str]) -> Dsn | None:
    """An RFC 3464 report: the per-message block, one block per recipient, the returned headers."""
    status_part = next((p for p in mail.walk() if p.get_content_type() in STATUS_PARTS), None)
    if status_part is None:
        return None
    blocks = _blocks(status_part)
    if not blocks:
        return None
    per_message, per_recipient = blocks[0], blocks[1:]
    postfix_sender = _type_value(_one_line(per_message.get("X-Postfix-Sender")))
    if postfix_sender:
        sent_to.append(_bare(postfix_sender))
    recipients = []
    for block in per_recipient:
        action = (_one_line(block.get("Action")) or "").lower().split(" ")[0]
        if not action:
            continue
        recipients.append(Recipient(
            final_recipient=_bare(_type_value(_one_line(block.get("Final-Recipient"))) or "") or None,
            original_recipient=_bare(_type_value(_one_line(block.get("Original-Recipient"))) or "") or None,
            action=action, status=_status(_one_line(block.get("Status")), action),
            diagnostic=_type_value(_one_line(block.get("Diagnostic-Code"))),
            remote_mta=_type_value(_one_line(block.get("Remote-MTA")))))
    return Dsn(recipients=tuple(recipients), sent_to=tuple(dict.fromkeys(sent_to)),
               original_message_id=_original_message_id(mail),
               reporting_mta=_type_value(_one_line(per_message.get("Reporting-MTA"))),
               message_id=_one_line(mail.get("Message-ID")))


def _blocks(part: MimeMessage) -> list[MimeMessage]:
    """The header blocks of a status part: message/delivery-status comes split by the parser; any other (UTF-8,
    RFC 6533, which the parser takes for one message whose body holds the other blocks; base64) is split here."""
    payload = part.get_payload()
    encoded = part.get("Content-Transfer-Encoding", "").lower() == "base64"
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list) and payload and not encoded:
        return payload
    if isinstance(payload, list) and payload and not encoded:
        data = payload[0].as_bytes() if isinstance(payload[0], MimeMessage) else b""
    else:
        data = part.get_payload(decode=True) or (payload.encode() if isinstance(payload, str) else b"")
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    parser = BytesHeaderParser(policy=policy.compat32)
    return [parser.parsebytes(chunk.strip().encode() + b"\n") for chunk in re.split(r"\n[ \t]*\n", text)
            if chunk.strip()]


def _original_message_id(mail: MimeMessage) -> str | None:
    """The returned message's Message-ID: from a message/rfc822 part, text/rfc822-headers, or a quoted copy."""
    for part in mail.walk():
        kind, found = part.get_content_type(), None
        if kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            found = (inner if isinstance(inner, MimeMessage) else _headers(part)).get("Message-ID")
        elif kind in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            found = _headers(part).get("Message-ID")
        if found:
            return _one_line(found)
    return None


def _headers(part: MimeMessage) -> MimeMessage:
    """A part's content read as a header block (returned headers, or a message the parser left as text)."""
    return BytesHeaderParser(policy=policy.compat32).parsebytes(part.get_payload(decode=True) or b"")


def _text_of(mail: MimeMessage) -> str:
    """The report's own text parts (not the returned message), decoded."""
    texts = []
    for part in mail.walk():
        if part.get_content_type() == "message/rfc822":
            break
        if part.get_content_maintype() == "text":
            data = part.get_payload(decode=True) or b""
            try:
                texts.append(data.decode(part.get_content_charset() or "utf-8", "replace"))
            except LookupError:  # a charset Python does not know
                texts.append(data.decode("utf-8", "replace"))
    return "\n".join(texts)


def _plain(mail: MimeMessage, sent_to: list[str]) -> Dsn | None:
    """A notice that is not RFC 3464 (qmail, some gateways): a mailer's "undelivered" subject and a status in its
    text; the recipient is the first address quoted before it, the original Message-ID the one quoted in it."""
    sender = str(mail.get("From") or "")
    subject = _one_line(mail.get("Subject")) or ""
    if not (_MAILER.search(sender) or (mail.get("Return-Path") or "").strip() == "<>") or \
            not _BOUNCE_SUBJECT.search(subject):
        return None
    text = _text_of(mail)
    status = _STATUS.search(text)
    code = None if status else _SMTP_CODE.search(text)
    if status is None and code is None:
        return None
    where = (status or code).start()
    action = "delayed" if re.search(r"delay|still being retried|will be retried", subject, re.I) else "failed"
    status_text = status.group(0) if status else f"{code.group(1)}.0.0"
    before = _ADDRESS.findall(text[:where]) or _ADDRESS.findall(text)
    own = {a.lower() for a in sent_to}
    recipient = next((_bare(a) for a in reversed(before) if _bare(a).lower() not in own), None)
    line_start = text.rfind("\n", 0, where) + 1
    line_end = text.find("\n", where)
    diagnostic = _one_line(text[line_start:line_end if line_end >= 0 else None])
    quoted = _MESSAGE_ID.findall(text)
    return Dsn(recipients=(Recipient(final_recipient=recipient, action=action, status=status_text,
                                     diagnostic=diagnostic),),
               sent_to=tuple(dict.fromkeys(sent_to)), original_message_id=_original_message_id(mail) or
               (quoted[-1] if quoted else None), message_id=_one_line(mail.get("Message-ID")), standard=False)


# --- recording --------------------------------------------------------------------------------------------------------

@dataclass
class BounceResult:
    """What ``handle_bounce`` did with a report (``outcome``: recorded, duplicate, forged, unmatched, not_bounced,
    not_email)."""

    outcome: str
    touch_id: int | None = None
    matched_by: str | None = None          # verp or message_id
    severity: str | None = None
    action: str | None = None
    status: str | None = None
    recipient: str | None = None
    diagnostic: str | None = None
    touch_failed: bool = False
    address_bounced: bool = False
    soft_in_a_row: int = 0
    detail: str | None = None
    recipients: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def handle_bounce(engine, raw: bytes, envelope_to: str | None = None, *, settings=None,
                  key: bytes | None = None) -> BounceResult | None:
    """Record a delivery status notification through the ledger; None when ``raw`` is not a bounce.

    ``envelope_to`` is the address the report was delivered to (RCPT TO, when the route knows it).
    A report sent to a return address whose tag does not verify is ``forged``: nothing changes,
    whatever else it says. ``key``: the signing key (default: the installation's).
    """
    from crm.keys import configured_secret, signing_key
    from crm.ledger import bounces
    from touchflow.settings import get_settings

    dsn = parse_dsn(raw, envelope_to)
    if dsn is None:
        return None
    settings = settings or get_settings()
    key = key or signing_key(engine, configured_secret(settings))
    listed = [asdict(r) | {"severity": r.severity} for r in dsn.recipients]
    worst = dsn.worst
    if worst is None:
        return BounceResult("not_bounced", detail="the report says the message was delivered or relayed",
                            recipients=listed)
    found = dict(action=worst.action, status=worst.status, recipient=worst.final_recipient,
                 diagnostic=worst.diagnostic, severity=worst.severity, recipients=listed)
    touch_id, matched_by, forged = _touch_of(engine, dsn, key, settings.bounce_local, envelope_to)
    if touch_id is None:
        if forged:
            return BounceResult("forged", detail=f"sent to {forged}, whose tag does not verify: ignored", **found)
        return BounceResult("unmatched", detail="neither a return address of ours nor a Message-ID we sent",
                            **found)
    done = bounces.record(engine, bounces.Report(touch_id, worst.action, worst.status, worst.diagnostic),
                          soft_limit=settings.soft_bounce_limit)
    found["severity"] = done.get("severity", found["severity"])
    return BounceResult(done["outcome"], touch_id=touch_id, matched_by=matched_by,
                        touch_failed=done.get("touch_failed", False),
                        address_bounced=done.get("address_bounced", False),
                        soft_in_a_row=done.get("soft_in_a_row", 0), **found)


def _touch_of(engine, dsn: Dsn, key: bytes, local: str,
              envelope_to: str | None) -> tuple[int | None, str | None, str | None]:
    """(touch id, how it was found, a return address that did not verify) for a report.

    The envelope recipient, when it is a return address, decides alone: the headers are the sender's to write.
    """
    forged = None
    ours = envelope_to and verp_candidate(envelope_to, local) is not None
    for address in ([_bare(envelope_to)] if ours else dsn.sent_to):
        if verp_candidate(address, local) is None:
            continue
        touch_id = parse_verp(address, key, local)
        if touch_id is not None:
            return touch_id, "verp", None
        forged = forged or address
    if forged or not dsn.original_message_id:
        return None, None, forged
    return _by_message_id(engine, dsn.original_message_id), "message_id", None


_TOUCH_IN_ID = re.compile(r"\.touch\.(\d{1,18})@")  # our Message-IDs carry the touch (channels.transports.mime)


def _by_message_id(engine, message_id: str) -> int | None:
    """The touch that sent ``message_id`` (as ``provider_message_id``): by the touch id it carries, else searched."""
    from sqlalchemy import select

    from crm.models import Touch

    touches = Touch.__table__
    forms = list(dict.fromkeys([message_id, f"<{message_id.strip('<>')}>", message_id.strip("<>")]))
    hint = _TOUCH_IN_ID.search(message_id)
    query = select(touches.c.id).where(touches.c.provider_message_id.in_(forms))
    if hint:
        query = query.where(touches.c.id == int(hint.group(1)))
    with engine.connect() as conn:
        return conn.execute(query.order_by(touches.c.id.desc()).limit(1)).scalar()

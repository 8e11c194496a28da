"""Polling a mailbox over IMAP (``imaplib``): every unseen message stored once as an inbound email, then marked seen.

The order is what makes it safe: a message is fetched with ``BODY.PEEK[]`` (which leaves it unseen),
stored and committed (``ingest_email``), and only then flagged ``\\Seen``. A process that dies between
the two leaves the message unseen: the next poll fetches it again and the ledger, which keeps a
message once by its Message-ID (a digest of the bytes when it has none), stores nothing new and the
flag is set. A process that dies before the commit stored nothing and the message is still unseen.
So nothing is stored twice and nothing is lost. Messages are addressed by UID, which stays the same
across sessions (sequence numbers do not).

A message that cannot be read (no sender) is left unseen and reported in every poll's summary; read
and move it by hand. The mailbox should be one only touchflow reads: a person who opens a reply in a
mail client first marks it seen.
"""

from __future__ import annotations

import base64
import imaplib
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from channels.inbound.email import InboundEmailError, from_bytes
from channels.inbound.ingest import ingest_email
from touchflow.errors import ConfigError, RunStopped
from touchflow.secrets import secret
from touchflow.settings import Settings

BATCH = 500  # messages per poll at most; the rest wait for the next one


class ImapUnavailable(RunStopped):
    """The IMAP server cannot be reached or broke off; the message says where and what it answered."""


@dataclass(frozen=True)
class ImapConfig:
    """Where the mailbox is and how to log in (read from settings by ``from_settings``)."""

    host: str
    user: str
    password: str = field(repr=False)
    port: int = 993
    mailbox: str = "INBOX"
    ssl: bool = True
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ImapConfig:
        """The configured mailbox; ``ConfigError`` naming the setting that is missing."""
        password = secret(settings.imap_password, "TOUCHFLOW_IMAP_PASSWORD")
        missing = [name for name, value in (("imap_host", settings.imap_host), ("imap_user", settings.imap_user),
                                            ("imap_password", password)) if not value]
        if missing:
            raise ConfigError(f"the IMAP mailbox is not configured: set {', '.join(missing)} "
                              f"(TOUCHFLOW_{missing[0].upper()} in the environment"
                              f"{'' if missing[0] == 'imap_password' else ' or [imap] in touchflow.toml'})")
        return cls(host=settings.imap_host, user=settings.imap_user, password=password, port=settings.imap_port,
                   mailbox=settings.imap_mailbox, ssl=settings.imap_ssl)


@dataclass
class PollSummary:
    """What one poll did; ``errors`` holds one line per message left unseen."""

    mailbox: str
    unseen: int = 0
    stored: int = 0
    duplicates: int = 0
    linked: int = 0
    auto_replies: int = 0
    bounces: int = 0  # delivery status notifications, handed to the bounce handler (not stored as replies)
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def connect(config: ImapConfig) -> imaplib.IMAP4:
    """A logged-in session with ``config.mailbox`` selected read-write; typed errors for every way it fails."""
    where = f"{config.host}:{config.port}"
    try:
        if config.ssl:
            client = imaplib.IMAP4_SSL(config.host, config.port, ssl_context=ssl.create_default_context(),
                                       timeout=config.timeout)
        else:
            client = imaplib.IMAP4(config.host, config.port, timeout=config.timeout)
            if "STARTTLS" in client.capabilities:
                client.starttls(ssl.create_default_context())
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapUnavailable(f"cannot reach the IMAP server {where} ({'TLS' if config.ssl else 'plain'}): {exc}; "
                              "check imap_host, imap_port and imap_ssl") from None
    try:
        client.login(config.user, config.password)
    except imaplib.IMAP4.error as exc:
        _close(client)
        raise ConfigError(f"the IMAP server {where} refused the login of {config.user!r}: {_text(exc)}; "
                          "check imap_user and TOUCHFLOW_IMAP_PASSWORD") from None
    status, answer = client.select(mailbox_name(config.mailbox))
    if status != "OK":
        _close(client)
        raise ConfigError(f"the IMAP server {where} has no mailbox {config.mailbox!r} ({_text(answer)}); "
                          "set imap_mailbox to one of the folders it lists")
    return client


def poll_once(engine: Engine, config: ImapConfig, *, limit: int = BATCH) -> PollSummary:
    """Store every unseen message of the mailbox (up to ``limit``) once, marking each seen after it is committed."""
    client = connect(config)
    summary = PollSummary(mailbox=config.mailbox)
    try:
        uids = _unseen(client)
        summary.unseen = len(uids)
        for uid in uids[:limit]:
            _take(engine, client, uid, summary)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapUnavailable(f"the IMAP server {config.host}:{config.port} broke off: {exc}; what was stored "
                              "stays stored, the rest is read by the next poll") from None
    finally:
        _close(client)
    return summary


def _take(engine: Engine, client: imaplib.IMAP4, uid: bytes, summary: PollSummary) -> None:
    """Fetch, store and mark one message; one that cannot be read stays unseen and is reported."""
    data = _fetch(client, uid)
    if data is None:  # expunged by someone else meanwhile
        return
    try:
        result = ingest_email(engine, from_bytes(data))
    except InboundEmailError as exc:
        summary.failed += 1
        summary.errors.append(f"UID {uid.decode()}: {exc}")
        return
    if result.kind == "bounce":
        summary.bounces += 1
        _mark_seen(client, uid)
        return
    summary.stored += result.new
    summary.duplicates += not result.new
    summary.linked += result.new and result.answered is not None
    summary.auto_replies += result.new and result.kind == "auto_reply"
    _mark_seen(client, uid)


def _unseen(client: imaplib.IMAP4) -> list[bytes]:
    status, answer = client.uid("SEARCH", None, "UNSEEN")
    if status != "OK":
        raise imaplib.IMAP4.abort(f"UID SEARCH UNSEEN answered {_text(answer)}")
    return sorted((answer[0] or b"").split(), key=int)


def _fetch(client: imaplib.IMAP4, uid: bytes) -> bytes | None:
    """The message's bytes, read without setting ``\\Seen`` (``BODY.PEEK``); None when it is gone."""
    status, answer = client.uid("FETCH", uid, "(BODY.PEEK[])")
    if status != "OK":
        raise imaplib.IMAP4.abort(f"UID FETCH {uid.decode()} answered {_text(answer)}")
    for item in answer:
        if isinstance(item, tuple) and len(item) == 2:
            return item[1]
    return None


def _mark_seen(client: imaplib.IMAP4, uid: bytes) -> None:
    """Flag a stored message seen, so the next poll does not fetch it again (if it does, nothing is stored)."""
    status, answer = client.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")
    if status != "OK":
        raise imaplib.IMAP4.abort(f"UID STORE {uid.decode()} \\Seen answered {_text(answer)}")


def _close(client: imaplib.IMAP4) -> None:
    try:
        client.logout()
    except (OSError, imaplib.IMAP4.error):
        pass


def mailbox_name(mailbox: str) -> str:
    """A mailbox name as IMAP sends it: modified UTF-7 (RFC 3501 5.1.3, «Ответы» too), quoted (spaces too)."""
    encoded, pending = [], []

    def flush() -> None:
        if pending:
            data = base64.b64encode("".join(pending).encode("utf-16-be")).decode().rstrip("=")
            encoded.append("&" + data.replace("/", ",") + "-")
            pending.clear()

    for char in mailbox:
        if " " <= char <= "~":
            flush()
            encoded.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return '"' + re.sub(r'(["\\])', r"\\\1", "".join(encoded)) + '"'


def _text(answer: Any) -> str:
    if isinstance(answer, list):
        answer = b" ".join(a for a in answer if isinstance(a, bytes))
    if isinstance(answer, bytes):
        return answer.decode("utf-8", "replace")
    return str(answer)

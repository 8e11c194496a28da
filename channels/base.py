"""The one interface every channel implements, and the message it sends.

Like Django's email backends: ``open``, ``send``, ``close``; a module per transport, and console,
file and memory transports beside the real ones (``channels.transports.outbox``), chosen by configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Message:
    """What to send to one address on one channel (already rendered)."""

    channel: str
    to: str
    text: str = ""
    subject: str | None = None
    html: str | None = None
    from_name: str | None = None
    unsubscribe_url: str | None = None
    reference: str | None = None  # the touch's claim key: idempotency and provider metadata
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    attachments: list[tuple[str, bytes, str]] = field(default_factory=list)  # (file name, content, MIME type)
    prebuilt: tuple[bytes, str] | None = None  # email bytes and Message-ID built elsewhere (a render process)
    envelope_from: str | None = None  # email: the envelope sender (MAIL FROM, the touch's VERP address); None: From


@dataclass
class Delivery:
    """What the provider said when it took the message."""

    provider_id: str | None
    status: str = "sent"  # sent (handed over) or queued (the provider will report later)
    refused: dict[str, str] = field(default_factory=dict)  # address → reason, when some recipients were refused
    detail: str | None = None


@runtime_checkable
class Channel(Protocol):
    """A way of sending messages. ``send`` raises a ``channels.errors.ChannelError`` on failure."""

    name: str          # the channel: email, sms, voice, telegram, call
    transport: str     # how: smtp, twilio, telegram, console, file, memory, tasks

    async def open(self) -> None:
        """Connect (idempotent)."""

    async def send(self, message: Message) -> Delivery:
        """Send one message; return what the provider said or raise a ChannelError."""

    async def close(self) -> None:
        """Release connections (idempotent)."""

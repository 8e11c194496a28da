"""The errors a channel raises, translated from each provider's own at the channel boundary.

    ChannelError                 code, provider message, channel (never a secret)
    ├── TransientError           try again later, with backoff
    │   ├── RateLimited          the provider said when: ``retry_after`` seconds
    │   ├── ConnectionFailed     the provider could not be reached (counted by ``sending.Breaker``)
    │   └── ChannelDown          not tried: the channel stopped after repeated connection failures
    ├── ChannelFatal             nothing more can be sent this run (the outbox's disk is full):
    │   │                        the message was not handed over, and the run stops
    │   └── LimiterUnavailable   the shared rate limiter cannot be used (channels.ratelimit)
    ├── DeliveryUnknown          the provider may have accepted it (connection lost after the
    │   │                        message was handed over): never retried blindly, the touch is
    │   │                        recorded as ``unknown``
    │   └── NoReply              handed over, and no answer came in time (counted by the
    │                            ``Breaker`` like a connection failure)
    └── PermanentError           this message to this address will not work; ``action`` says
        │                        what the history should do about the address:
        ├── AddressRejected      action "bounced"  (SMTP 5xx at RCPT, unknown chat, bad number)
        ├── RecipientBlocked     action "blocked"  (Telegram: the bot was blocked)
        ├── OptedOut             action "opt_out"  (Twilio 21610: the recipient sent STOP)
        └── MessageRejected      action None       (content refused, misconfiguration,
            │                                       a message that cannot be built)
            └── AddressNotSupported  action None   (a fine address this transport cannot carry:
                                                    a UTF-8 mailbox through a relay without SMTPUTF8)
"""

from __future__ import annotations


class ChannelError(Exception):
    """A send failed; ``code`` and ``provider_message`` are what the provider said."""

    def __init__(self, message: str, *, code: str | int | None = None, provider_message: str | None = None,
                 channel: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = None if code is None else str(code)
        self.provider_message = provider_message
        self.channel = channel
        self.retry_after = retry_after

    action: str | None = None
    retryable = False


class TransientError(ChannelError):
    """Temporary: retry with backoff (and after ``retry_after`` seconds when given)."""

    retryable = True


class RateLimited(TransientError):
    """The provider throttled us; wait ``retry_after`` seconds before the next send on this channel."""


class ConnectionFailed(TransientError):
    """The provider could not be reached (refused, timed out, no greeting); nothing was handed over."""


class ChannelDown(TransientError):
    """Not tried: the channel stopped for this run after repeated connection failures."""


class ChannelFatal(ChannelError):
    """Nothing more can be sent through this channel in this run (the disk is full); not handed over."""


class DeliveryUnknown(ChannelError):
    """The provider may or may not have accepted the message; do not resend automatically."""


class NoReply(DeliveryUnknown):
    """The request was handed over and no answer came in time: unknown, and a sign the provider hangs."""


class PermanentError(ChannelError):
    """Will not succeed for this address; ``action`` tells what to record about the address."""


class AddressRejected(PermanentError):
    """The address does not exist or the provider refuses it: mark the contact point bounced."""

    action = "bounced"


class RecipientBlocked(PermanentError):
    """The recipient blocked us: mark the contact point blocked."""

    action = "blocked"


class OptedOut(PermanentError):
    """The recipient opted out at the provider: record an opt-out (a revocation in the ledger)."""

    action = "opt_out"


class MessageRejected(PermanentError):
    """The message itself (or our configuration) was refused; the address is fine."""


class AddressNotSupported(MessageRejected):
    """The address is fine but this transport cannot carry it (no SMTPUTF8 at the relay): not bounced."""

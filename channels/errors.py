"""The errors a channel raises, translated from each provider's own at the channel boundary.

    ChannelError                 code, provider message, channel (never a secret)
    ├── TransientError           try again later, with backoff
    │   └── RateLimited          the provider said when: ``retry_after`` seconds
    ├── DeliveryUnknown          the provider may have accepted it (connection lost after the
    │                            message was handed over): never retried blindly, the touch is
    │                            recorded as ``unknown``
    └── PermanentError           this message to this address will not work; ``action`` says
        │                        what the history should do about the address:
        ├── AddressRejected      action "bounced"  (SMTP 5xx at RCPT, unknown chat, bad number)
        ├── RecipientBlocked     action "blocked"  (Telegram: the bot was blocked)
        ├── OptedOut             action "opt_out"  (Twilio 21610: the recipient sent STOP)
        └── MessageRejected      action None       (content refused, misconfiguration)
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


class DeliveryUnknown(ChannelError):
    """The provider may or may not have accepted the message; do not resend automatically."""


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

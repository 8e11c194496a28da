"""SMS (Twilio Messages) and voice mailings (Twilio Calls reading TwiML ``<Say>``).

The twilio client is synchronous; each send runs in a worker thread. ``api_base_url`` points the
real client somewhere else (tests run a local server speaking the subset used here). Errors are
translated at this boundary:

* 21610 (the recipient replied STOP) → ``OptedOut``;
* 21211 / 21614 / 21612 / 13224 / 21217 (bad or unreachable number) → ``AddressRejected``;
* 20429, HTTP 429 and 5xx → ``RateLimited`` / ``TransientError``;
* any other 4xx → ``MessageRejected``.

A request that got no HTTP answer (``translate_network``): Twilio never reached (refused, DNS,
connect time-out, TLS handshake) → ``ConnectionFailed``, nothing was sent, and the
``sending.Breaker`` stops a channel that keeps failing; sent and then no answer in time →
``NoReply``, sent and then the connection lost → ``DeliveryUnknown``: Twilio may have created the
message, so it is never resent blindly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from requests import exceptions as http_errors
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from channels.base import Delivery, Message
from channels.errors import (
    AddressRejected,
    ChannelError,
    ConnectionFailed,
    DeliveryUnknown,
    MessageRejected,
    NoReply,
    OptedOut,
    RateLimited,
    TransientError,
)

OPTED_OUT = {21610}
BAD_NUMBER = {21211, 21214, 21217, 21612, 21614, 13224, 13223}
RATE_LIMITED = {20429, 14107}


@dataclass
class TwilioConfig:
    """Account, sender and callback; the auth token is kept out of reprs."""

    account_sid: str = ""
    auth_token: str = ""
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback: str | None = None
    api_base_url: str | None = None
    voice: str = "alice"
    language: str = "ru-RU"
    timeout: float = 30.0

    def __repr__(self) -> str:
        return (f"TwilioConfig(account_sid={self.account_sid!r}, auth_token={'***' if self.auth_token else None}, "
                f"from_number={self.from_number!r}, messaging_service_sid={self.messaging_service_sid!r})")


def translate(exc: TwilioRestException, channel: str) -> ChannelError:
    """Turn a Twilio REST error into the channel error tree, keeping Twilio's code and message."""
    code = exc.code
    message = exc.msg or str(exc)
    kwargs = {"code": code if code is not None else exc.status, "provider_message": message, "channel": channel}
    if code in OPTED_OUT:
        return OptedOut(f"the recipient opted out at Twilio ({code}): {message}", **kwargs)
    if code in BAD_NUMBER:
        return AddressRejected(f"Twilio refused the number ({code}): {message}", **kwargs)
    if code in RATE_LIMITED or exc.status == 429:
        return RateLimited(f"Twilio rate limit ({code or 429}): {message}", retry_after=1.0, **kwargs)
    if exc.status >= 500:
        return TransientError(f"Twilio unavailable (HTTP {exc.status}): {message}", **kwargs)
    return MessageRejected(f"Twilio refused the request ({code or exc.status}): {message}", **kwargs)


NOT_SENT = (http_errors.ConnectTimeout, http_errors.SSLError, http_errors.ProxyError, http_errors.URLRequired,
            http_errors.InvalidURL, http_errors.MissingSchema, http_errors.InvalidSchema)


def _never_sent(exc: http_errors.RequestException) -> bool:
    """Whether the request failed before any of it left: no connection was made (refused, DNS, time-out)."""
    if isinstance(exc, NOT_SENT):
        return True
    reason = exc.args[0] if exc.args else None
    return isinstance(reason, MaxRetryError) and isinstance(reason.reason, ConnectTimeoutError)  # refused, DNS too


def translate_network(exc: http_errors.RequestException, channel: str, where: str) -> ChannelError:
    """Turn a request that got no HTTP answer into the channel error tree: never sent, or sent and unanswered."""
    kwargs = {"provider_message": str(exc), "channel": channel}
    if _never_sent(exc):
        return ConnectionFailed(f"cannot reach Twilio at {where}: {exc}", code="connection_failed", **kwargs)
    if isinstance(exc, http_errors.ReadTimeout):
        return NoReply(f"Twilio at {where} did not answer in time; it may have created the message", code="no_reply",
                       **kwargs)
    return DeliveryUnknown(f"the connection to Twilio at {where} failed after the request was sent ({exc}); it may "
                           "have created the message", **kwargs)


class _TwilioChannel:
    transport = "twilio"
    name = "twilio"

    def __init__(self, config: TwilioConfig) -> None:
        if not config.account_sid or not config.auth_token:
            raise ValueError("Twilio needs TOUCHFLOW_TWILIO_ACCOUNT_SID and TOUCHFLOW_TWILIO_AUTH_TOKEN")
        if not config.from_number and not config.messaging_service_sid:
            raise ValueError("Twilio needs TOUCHFLOW_TWILIO_FROM_NUMBER or TOUCHFLOW_TWILIO_MESSAGING_SERVICE_SID")
        self.config = config
        self.client = Client(config.account_sid, config.auth_token,
                             http_client=TwilioHttpClient(timeout=config.timeout))
        if config.api_base_url:
            self.client.api.base_url = config.api_base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    async def open(self) -> None:
        """The REST client connects per request."""

    async def close(self) -> None:
        """Nothing to release."""

    async def send(self, message: Message) -> Delivery:
        """Create the message or call in a worker thread and translate errors."""
        try:
            resource = await asyncio.to_thread(self._create, message)
        except TwilioRestException as exc:
            raise translate(exc, self.name) from None
        except http_errors.RequestException as exc:
            raise translate_network(exc, self.name, self.client.api.base_url) from None
        return Delivery(provider_id=resource.sid, status="queued", detail=getattr(resource, "status", None))

    def _create(self, message: Message):
        raise NotImplementedError


class TwilioSmsChannel(_TwilioChannel):
    """SMS through the Messages API, from a number or a messaging service."""

    name = "sms"

    def _create(self, message: Message):
        kwargs = {"to": message.to, "body": message.text}
        if self.config.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.config.messaging_service_sid
        else:
            kwargs["from_"] = self.config.from_number
        if self.config.status_callback:
            kwargs["status_callback"] = self.config.status_callback
        return self.client.messages.create(**kwargs)


def say_twiml(text: str, voice: str = "alice", language: str = "ru-RU") -> str:
    """TwiML that reads ``text`` aloud (the robot voice mailing)."""
    response = VoiceResponse()
    response.say(text, voice=voice, language=language)
    return str(response)


class TwilioVoiceChannel(_TwilioChannel):
    """A call that reads the rendered text with ``<Say>``."""

    name = "voice"

    def _create(self, message: Message):
        kwargs = {"to": message.to, "from_": self.config.from_number,
                  "twiml": say_twiml(message.text, self.config.voice, self.config.language)}
        if self.config.status_callback:
            kwargs["status_callback"] = self.config.status_callback
        return self.client.calls.create(**kwargs)

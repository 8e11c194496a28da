"""SMS (Twilio Messages) and voice mailings (Twilio Calls reading TwiML ``<Say>``).

The twilio client's async API (``create_async``) sends over one aiohttp session per event loop,
made on the first send: keep-alive connections, up to ``max_in_flight`` of them (the most
``send_stream`` grows to), no worker threads (a thread per request — the default executor's six on
two cores — capped the requests in flight and cost more than the request itself).
``api_base_url`` points the real client somewhere else (tests run a local server speaking the
subset used here). Errors are translated at this boundary:

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
import base64
import functools
import logging
from dataclasses import dataclass

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

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
from channels.transports.aiohttp_session import LoopSession

OPTED_OUT = {21610}
BAD_NUMBER = {21211, 21214, 21217, 21612, 21614, 13224, 13223}
RATE_LIMITED = {20429, 14107}
_LOGGER = logging.getLogger("twilio.http_client")  # the library's own logger for requests, as its clients use


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
    timeout: float = 30.0  # seconds to connect, and to wait for each read of the answer
    max_in_flight: int = 32  # keep-alive connections at most (TOUCHFLOW_MAX_IN_FLIGHT: the most sends in flight)

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


NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.ClientHttpProxyError,
            aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)  # refused, DNS, TLS, connect time-out, bad URL


def translate_network(exc: aiohttp.ClientError | asyncio.TimeoutError, channel: str, where: str) -> ChannelError:
    """Turn a request that got no HTTP answer into the channel error tree: never sent, or sent and unanswered."""
    detail = str(exc) or type(exc).__name__  # aiohttp's time-outs may say nothing
    kwargs = {"provider_message": detail, "channel": channel}
    if isinstance(exc, NOT_SENT):
        return ConnectionFailed(f"cannot reach Twilio at {where}: {detail}", code="connection_failed", **kwargs)
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's read time-out (SocketTimeoutError) is one
        return NoReply(f"Twilio at {where} did not answer in time; it may have created the message", code="no_reply",
                       **kwargs)
    return DeliveryUnknown(f"the connection to Twilio at {where} failed after the request was sent ({detail}); it "
                           "may have created the message", **kwargs)


@functools.lru_cache(maxsize=8)
def _basic_auth(login: str, password: str) -> str:
    """The Authorization header of HTTP basic auth (latin-1, as requests encodes it)."""
    return "Basic " + base64.b64encode(f"{login}:{password}".encode("latin-1")).decode("ascii")


class AiohttpTwilioClient(AsyncHttpClient):
    """The twilio library's async HTTP client interface over one aiohttp session per event loop.

    Unlike the library's ``AsyncTwilioHttpClient`` it makes its session in the running loop when
    first needed (``aiohttp_session.LoopSession``: a channel is built before any loop runs), keeps
    at most ``max_connections`` connections, and applies ``timeout`` to connecting and to each read
    of the answer as the sync client did (that one hands aiohttp ``timeout=None`` when a call gives
    none: no time-out at all).
    """

    def __init__(self, timeout: float | None = None, max_connections: int = 32) -> None:
        super().__init__(logger=_LOGGER, is_async=True, timeout=timeout)
        self.sessions = LoopSession(max_connections, aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                                                           sock_read=timeout))

    async def request(self, method: str, url: str, params=None, data=None, headers=None, auth=None, timeout=None,
                      allow_redirects: bool = False) -> Response:
        """Make one request; aiohttp's errors reach the caller as they are (``translate_network``)."""
        if timeout is not None and timeout <= 0:
            raise ValueError(timeout)
        logged = self.logger.isEnabledFor(logging.INFO)  # the library's request log formats it all at once
        if logged:
            self.log_request({"method": method.upper(), "url": url, "params": params, "headers": headers})
        if auth:
            headers = {**(headers or {}), "Authorization": _basic_auth(*auth)}
        limits = aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout) if timeout else self.sessions.timeout
        async with self.sessions.get().request(method.upper(), url, params=params, data=data, headers=headers,
                                               allow_redirects=allow_redirects, timeout=limits) as response:
            text = await response.text()
        if logged:
            self.log_response(response.status, response)
        return Response(response.status, text, response.headers)

    async def close(self) -> None:
        """Close the kept-alive connections."""
        await self.sessions.close()


class _TwilioChannel:
    transport = "twilio"
    name = "twilio"

    def __init__(self, config: TwilioConfig) -> None:
        if not config.account_sid or not config.auth_token:
            raise ValueError("Twilio needs TOUCHFLOW_TWILIO_ACCOUNT_SID and TOUCHFLOW_TWILIO_AUTH_TOKEN")
        if not config.from_number and not config.messaging_service_sid:
            raise ValueError("Twilio needs TOUCHFLOW_TWILIO_FROM_NUMBER or TOUCHFLOW_TWILIO_MESSAGING_SERVICE_SID")
        self.config = config
        self.http = AiohttpTwilioClient(timeout=config.timeout, max_connections=config.max_in_flight)
        self.client = Client(config.account_sid, config.auth_token, http_client=self.http)
        if config.api_base_url:
            self.client.api.base_url = config.api_base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    async def open(self) -> None:
        """Connections are made by the first requests and kept alive."""

    async def close(self) -> None:
        """Close the kept-alive connections."""
        await self.http.close()

    async def send(self, message: Message) -> Delivery:
        """Create the message or call and translate errors."""
        try:
            resource = await self._create(message)
        except TwilioRestException as exc:
            raise translate(exc, self.name) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise translate_network(exc, self.name, self.client.api.base_url) from None
        return Delivery(provider_id=resource.sid, status="queued", detail=getattr(resource, "status", None))

    async def _create(self, message: Message):
        raise NotImplementedError


class TwilioSmsChannel(_TwilioChannel):
    """SMS through the Messages API, from a number or a messaging service."""

    name = "sms"

    async def _create(self, message: Message):
        kwargs = {"to": message.to, "body": message.text}
        if self.config.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.config.messaging_service_sid
        else:
            kwargs["from_"] = self.config.from_number
        if self.config.status_callback:
            kwargs["status_callback"] = self.config.status_callback
        return await self.client.messages.create_async(**kwargs)


def say_twiml(text: str, voice: str = "alice", language: str = "ru-RU") -> str:
    """TwiML that reads ``text`` aloud (the robot voice mailing)."""
    response = VoiceResponse()
    response.say(text, voice=voice, language=language)
    return str(response)


class TwilioVoiceChannel(_TwilioChannel):
    """A call that reads the rendered text with ``<Say>``."""

    name = "voice"

    async def _create(self, message: Message):
        kwargs = {"to": message.to, "from_": self.config.from_number,
                  "twiml": say_twiml(message.text, self.config.voice, self.config.language)}
        if self.config.status_callback:
            kwargs["status_callback"] = self.config.status_callback
        return await self.client.calls.create_async(**kwargs)

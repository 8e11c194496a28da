"""Telegram through python-telegram-bot: messages in HTML parse mode, chats bound by deep links.

A bot can only write to someone who opened a dialog with it (article 003). ``touchflow telegram
link CUSTOMER`` makes a one-time opaque token and the link ``https://t.me/<bot>?start=<token>``;
when the customer presses Start, the bot receives ``/start <token>`` (``touchflow telegram listen``
polls for it) and the chat becomes the customer's ``telegram`` contact point.

The bot's requests (all but getUpdates) go through ``AiohttpRequest``, PTB's request interface
over aiohttp: PTB's own httpx transport cost twice the CPU of the rest of a send, and more as the
requests in flight grew (httpcore's pool), which capped a sending process at two cores' worth.
getUpdates (``touchflow telegram listen``) keeps PTB's ``HTTPXRequest``.

Errors: ``Forbidden`` (the bot was blocked) → ``RecipientBlocked``; ``RetryAfter`` →
``RateLimited`` (the channel pauses); ``BadRequest`` chat not found → ``AddressRejected``; another
error answer (5xx) → ``TransientError``. No answer at all (``translate_network``, by the aiohttp or
httpx error behind PTB's ``NetworkError``): the Bot API never reached (refused, connect or pool
time-out) → ``ConnectionFailed``, counted by the ``sending.Breaker``; sent and unanswered in time →
``NoReply``, sent and the connection lost → ``DeliveryUnknown`` (Telegram may have delivered it:
never resent blindly).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

os.environ.setdefault("PTB_TIMEDELTA", "1")  # retry_after as a timedelta (PTB 22's announced future), read either way

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from telegram import Bot  # noqa: E402
from telegram.constants import ParseMode  # noqa: E402
from telegram.error import (  # noqa: E402
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import BaseRequest, RequestData  # noqa: E402

from channels.base import Delivery, Message  # noqa: E402
from channels.errors import (  # noqa: E402
    AddressRejected,
    ChannelError,
    ConnectionFailed,
    DeliveryUnknown,
    MessageRejected,
    NoReply,
    RateLimited,
    RecipientBlocked,
    TransientError,
)
from channels.transports.aiohttp_session import LoopSession  # noqa: E402

LINK_TTL = timedelta(days=30)


@dataclass
class TelegramConfig:
    """The bot token (kept out of reprs), its username for links, and an optional API base URL."""

    token: str = ""
    bot_username: str = "touchflow_bot"
    base_url: str | None = None
    timeout: float | None = None  # seconds for each of connect, write, read (None: PTB's own, 5 s each)
    max_in_flight: int = 32  # connections at most (TOUCHFLOW_MAX_IN_FLIGHT: the most sends in flight)

    def __repr__(self) -> str:
        return f"TelegramConfig(token={'***' if self.token else None}, bot_username={self.bot_username!r})"


_DEFAULT = type(BaseRequest.DEFAULT_NONE)  # PTB's "not given" (a DefaultValue)


class AiohttpRequest(BaseRequest):
    """PTB's request interface over one aiohttp session per event loop (``aiohttp_session.LoopSession``), keeping
    up to ``connection_pool_size`` connections alive.

    Timeouts as ``HTTPXRequest``'s (PTB's defaults: 5 s to connect and for each read, 1 s for a free
    connection) except the write time-out, which aiohttp has not: a request is written as it is
    read from the socket's buffer. aiohttp's errors become PTB's (``TimedOut``, ``NetworkError``)
    with the aiohttp error as their cause, as ``HTTPXRequest`` does with httpx's.
    """

    def __init__(self, connection_pool_size: int = 32, read_timeout: float | None = 5.0,
                 write_timeout: float | None = 5.0, connect_timeout: float | None = 5.0,
                 pool_timeout: float | None = 1.0) -> None:
        self.connection_pool_size = max(1, connection_pool_size)
        self._defaults = (read_timeout, write_timeout, connect_timeout, pool_timeout)
        self._timeouts: dict[tuple, aiohttp.ClientTimeout] = {}
        self.sessions = LoopSession(self.connection_pool_size)
        self._headers = {"User-Agent": self.USER_AGENT}

    @property
    def read_timeout(self) -> float | None:
        return self._defaults[0]

    async def initialize(self) -> None:
        self.sessions.get()

    async def shutdown(self) -> None:
        await self.sessions.close()

    def _timeout(self, read, connect, pool) -> aiohttp.ClientTimeout:
        default_read, _, default_connect, default_pool = self._defaults
        read = default_read if isinstance(read, _DEFAULT) else read
        connect = default_connect if isinstance(connect, _DEFAULT) else connect
        pool = default_pool if isinstance(pool, _DEFAULT) else pool
        key = (read, connect, pool)
        timeout = self._timeouts.get(key)
        if timeout is None:  # aiohttp's connect: a free connection, or a new one (pool + connect), as httpx's
            whole = None if pool is None or connect is None else pool + connect
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(total=None, connect=whole, sock_connect=connect,
                                                                  sock_read=read)
        return timeout

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout=BaseRequest.DEFAULT_NONE, write_timeout=BaseRequest.DEFAULT_NONE,
                         connect_timeout=BaseRequest.DEFAULT_NONE,
                         pool_timeout=BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:
        data = None
        if request_data is not None:
            data = request_data.json_parameters
            if request_data.contains_files:
                form = aiohttp.FormData(data)
                for name, (filename, content, mime_type) in request_data.multipart_data.items():
                    form.add_field(name, content, filename=filename, content_type=mime_type)
                data = form
        try:
            async with self.sessions.get().request(method, url, data=data, headers=self._headers,
                                               timeout=self._timeout(read_timeout, connect_timeout, pool_timeout)
                                               ) as response:
                return response.status, await response.read()
        except asyncio.TimeoutError as exc:  # aiohttp's connect and read time-outs are ones
            raise TimedOut(f"aiohttp.{type(exc).__name__}: {exc}" if str(exc) else None) from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc


def make_bot(config: TelegramConfig) -> Bot:
    """A python-telegram-bot ``Bot`` for this configuration."""
    if not config.token:
        raise ValueError("Telegram needs TOUCHFLOW_TELEGRAM_BOT_TOKEN")
    kwargs = {"base_url": config.base_url.rstrip("/") + "/bot"} if config.base_url else {}
    timeouts = {}
    if config.timeout is not None:
        t = config.timeout
        timeouts = {"connect_timeout": t, "read_timeout": t, "write_timeout": t, "pool_timeout": t}
    return Bot(config.token, request=AiohttpRequest(connection_pool_size=config.max_in_flight, **timeouts), **kwargs)


def _seconds(value) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError, httpx.UnsupportedProtocol,
            aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.ClientHttpProxyError,
            aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)
TRANSPORT = (httpx.TransportError, aiohttp.ClientError, asyncio.TimeoutError)
TIMEOUT = (httpx.TimeoutException, asyncio.TimeoutError)


def translate_network(exc: NetworkError, channel: str, *, sent: bool = True) -> ChannelError:
    """A ``NetworkError`` by its cause: never sent, sent and unanswered, or an error answer (transient).

    ``sent=False`` for requests that change nothing (getMe): unanswered is then just unreachable.
    """
    cause, kwargs = exc.__cause__, {"provider_message": str(exc), "channel": channel}
    if isinstance(cause, NOT_SENT) or (not sent and isinstance(cause, TRANSPORT)):
        return ConnectionFailed(f"cannot reach the Telegram Bot API: {exc}", code="connection_failed", **kwargs)
    if isinstance(cause, TIMEOUT):
        return NoReply(f"the Telegram Bot API did not answer in time ({exc}); the message may have been delivered",
                       code="no_reply", **kwargs)
    if isinstance(cause, TRANSPORT):
        return DeliveryUnknown(f"the connection to the Telegram Bot API failed after the request was sent ({exc}); "
                               "the message may have been delivered", **kwargs)
    return TransientError(f"Telegram did not take the message: {exc}", **kwargs)


class TelegramChannel:
    """Sends HTML messages to a customer's chat id."""

    name = "telegram"
    transport = "telegram"

    def __init__(self, config: TelegramConfig) -> None:
        self.config = config
        self.bot = make_bot(config)
        self._opened = False

    def __repr__(self) -> str:
        return f"TelegramChannel({self.config!r})"

    @classmethod
    def around(cls, bot: Bot, config: TelegramConfig | None = None) -> TelegramChannel:
        """A channel sending through an existing ``Bot``: the listener's, which also polls getUpdates with it."""
        channel = cls.__new__(cls)
        channel.config, channel.bot, channel._opened = config or TelegramConfig(token=bot.token), bot, False
        return channel

    async def open(self) -> None:
        """Initialise the bot (it calls getMe)."""
        if not self._opened:
            try:
                await self.bot.initialize()
            except InvalidToken as exc:
                raise MessageRejected(f"the Telegram Bot API refused the bot token ({exc}); check "
                                      "TOUCHFLOW_TELEGRAM_BOT_TOKEN", code=401, provider_message=str(exc),
                                      channel=self.name) from None
            except NetworkError as exc:
                raise translate_network(exc, self.name, sent=False) from None
            except TelegramError as exc:
                raise TransientError(f"the Telegram Bot API did not answer getMe: {exc}", provider_message=str(exc),
                                     channel=self.name) from None
            self._opened = True

    async def close(self) -> None:
        """Shut the bot's HTTP client down."""
        if self._opened:
            await self.bot.shutdown()
            self._opened = False

    async def send(self, message: Message) -> Delivery:
        """Send ``message.html`` (or its text) to the chat id in ``message.to``."""
        await self.open()
        try:
            chat_id = int(message.to)
        except ValueError:
            raise AddressRejected(f"{message.to!r} is not a Telegram chat id (a number)", code="bad_chat_id",
                                  channel=self.name) from None
        try:
            sent = await self.bot.send_message(chat_id=chat_id, text=message.html or message.text,
                                               parse_mode=ParseMode.HTML if message.html else None)
        except Forbidden as exc:
            raise RecipientBlocked(f"the customer blocked the bot: {exc.message}", code=403,
                                   provider_message=exc.message, channel=self.name) from None
        except RetryAfter as exc:
            with warnings.catch_warnings():  # PTB 22 warns that retry_after becomes a timedelta; both are handled
                warnings.simplefilter("ignore")
                wait = _seconds(exc.retry_after)
            raise RateLimited(f"Telegram asks to wait {wait:g}s", code=429, provider_message=exc.message,
                              channel=self.name, retry_after=wait) from None
        except BadRequest as exc:
            kind = AddressRejected if "chat not found" in exc.message.lower() else MessageRejected
            raise kind(f"Telegram refused the message: {exc.message}", code=400, provider_message=exc.message,
                       channel=self.name) from None
        except NetworkError as exc:
            raise translate_network(exc, self.name) from None
        except TelegramError as exc:  # another definite answer (404 method, chat migrated, conflict): not sent
            raise MessageRejected(f"Telegram refused the message: {exc}", provider_message=str(exc),
                                  channel=self.name) from None
        return Delivery(provider_id=str(sent.message_id))


def new_token() -> str:
    """A one-time opaque start token (Telegram allows 64 characters of A-Z a-z 0-9 _ -)."""
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    """What is stored instead of the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def deep_link(bot_username: str, token: str) -> str:
    """The link that opens the bot and sends ``/start <token>``."""
    return f"https://t.me/{bot_username}?start={token}"


def link_expiry(now: datetime | None = None) -> datetime:
    """When a new link stops working."""
    return (now or datetime.now(timezone.utc)) + LINK_TTL

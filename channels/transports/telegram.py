"""Telegram through python-telegram-bot: messages in HTML parse mode, chats bound by deep links.

A bot can only write to someone who opened a dialog with it (article 003). ``touchflow telegram
link CUSTOMER`` makes a one-time opaque token and the link ``https://t.me/<bot>?start=<token>``;
when the customer presses Start, the bot receives ``/start <token>`` (``touchflow telegram listen``
polls for it) and the chat becomes the customer's ``telegram`` contact point.

Errors: ``Forbidden`` (the bot was blocked) → ``RecipientBlocked``; ``RetryAfter`` →
``RateLimited`` (the channel pauses); ``BadRequest`` chat not found → ``AddressRejected``; another
error answer (5xx) → ``TransientError``. No answer at all (``translate_network``, by the httpx error
behind PTB's ``NetworkError``): the Bot API never reached (refused, connect or pool time-out) →
``ConnectionFailed``, counted by the ``sending.Breaker``; sent and unanswered in time →
``NoReply``, sent and the connection lost → ``DeliveryUnknown`` (Telegram may have delivered it:
never resent blindly).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

os.environ.setdefault("PTB_TIMEDELTA", "1")  # retry_after as a timedelta (PTB 22's announced future), read either way

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
)
from telegram.request import HTTPXRequest  # noqa: E402

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

LINK_TTL = timedelta(days=30)


@dataclass
class TelegramConfig:
    """The bot token (kept out of reprs), its username for links, and an optional API base URL."""

    token: str = ""
    bot_username: str = "touchflow_bot"
    base_url: str | None = None
    timeout: float | None = None  # seconds for each of connect, write, read (None: PTB's own, 5 s each)

    def __repr__(self) -> str:
        return f"TelegramConfig(token={'***' if self.token else None}, bot_username={self.bot_username!r})"


def make_bot(config: TelegramConfig) -> Bot:
    """A python-telegram-bot ``Bot`` for this configuration."""
    if not config.token:
        raise ValueError("Telegram needs TOUCHFLOW_TELEGRAM_BOT_TOKEN")
    kwargs = {"base_url": config.base_url.rstrip("/") + "/bot"} if config.base_url else {}
    if config.timeout is not None:
        t = config.timeout
        kwargs["request"] = HTTPXRequest(connect_timeout=t, read_timeout=t, write_timeout=t, pool_timeout=t)
    return Bot(config.token, **kwargs)


def _seconds(value) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError, httpx.UnsupportedProtocol)


def translate_network(exc: NetworkError, channel: str, *, sent: bool = True) -> ChannelError:
    """A ``NetworkError`` by its cause: never sent, sent and unanswered, or an error answer (transient).

    ``sent=False`` for requests that change nothing (getMe): unanswered is then just unreachable.
    """
    cause, kwargs = exc.__cause__, {"provider_message": str(exc), "channel": channel}
    if isinstance(cause, NOT_SENT) or (not sent and isinstance(cause, httpx.TransportError)):
        return ConnectionFailed(f"cannot reach the Telegram Bot API: {exc}", code="connection_failed", **kwargs)
    if isinstance(cause, httpx.TimeoutException):
        return NoReply(f"the Telegram Bot API did not answer in time ({exc}); the message may have been delivered",
                       code="no_reply", **kwargs)
    if isinstance(cause, httpx.TransportError):
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

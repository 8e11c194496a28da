"""Build channels by name from configuration; describe them with secrets masked.

Each channel has declarative metadata (the contact kind it needs, its default rate, its length
limit) and a transport chosen by ``TOUCHFLOW_<CHANNEL>_TRANSPORT``: the real one (smtp, twilio,
telegram, tasks) or a dev one (console, file, memory). ``meter_of`` names the limits a real
transport's sends count against, keyed by what the provider meters (the bot, the sender number),
so every run and process sending as the same sender shares them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from channels.base import Channel, Message
from channels.ratelimit import Limit, Meter
from channels.transports.calls import CallTaskChannel, TaskSink
from channels.transports.outbox import ConsoleChannel, FileChannel, MemoryChannel
from touchflow.secrets import mask, secret
from touchflow.settings import Settings, get_settings
from touchflow.errors import ConfigError

DEV_TRANSPORTS = ("console", "file", "memory")
TELEGRAM_PER_CHAT = 1.0  # messages a second to one chat (the Bot API's limit)


@dataclass(frozen=True)
class ChannelInfo:
    """What a channel needs and how fast it may go."""

    name: str
    contact_kind: str
    real_transport: str
    rate_setting: str | None
    max_length: int | None
    description: str


CHANNELS: dict[str, ChannelInfo] = {
    "email": ChannelInfo("email", "email", "smtp", "rate_email", None, "email over SMTP (aiosmtplib)"),
    "sms": ChannelInfo("sms", "phone", "twilio", "rate_sms", 1600, "SMS through Twilio Messages"),
    "voice": ChannelInfo("voice", "phone", "twilio", "rate_voice", 4000, "robot call reading text (Twilio Calls)"),
    "telegram": ChannelInfo("telegram", "telegram", "telegram", "rate_telegram", 4096,
                            "Telegram bot message (python-telegram-bot)"),
    "call": ChannelInfo("call", "phone", "tasks", None, None, "a call task for a sales rep"),
}


class ChannelConfigError(ConfigError):
    """A channel or transport name is unknown, or a real transport lacks its settings."""


def transport_of(name: str, settings: Settings | None = None) -> str:
    """The configured transport of a channel."""
    settings = settings or get_settings()
    if name not in CHANNELS:
        raise ChannelConfigError(f"unknown channel {name!r}; choose one of: {', '.join(CHANNELS)}")
    transport = getattr(settings, f"{name}_transport").lower()
    allowed = (CHANNELS[name].real_transport, *DEV_TRANSPORTS)
    if transport not in allowed:
        raise ChannelConfigError(f"TOUCHFLOW_{name.upper()}_TRANSPORT={transport!r}; choose one of: "
                                 f"{', '.join(allowed)}")
    return transport


def build_channel(name: str, settings: Settings | None = None, *, task_sink: TaskSink | None = None) -> Channel:
    """Create the channel ``name`` with its configured transport."""
    settings = settings or get_settings()
    transport = transport_of(name, settings)
    if transport == "tasks":
        if task_sink is None:
            raise ChannelConfigError("the call channel with the tasks transport needs a task sink (the campaign "
                                     "flow provides one); use TOUCHFLOW_CALL_TRANSPORT=file to write call tasks "
                                     "to the outbox")
        return CallTaskChannel(task_sink)
    if transport == "memory":
        return MemoryChannel(name, settings.mail_from)
    if transport == "console":
        return ConsoleChannel(name, settings.mail_from)
    if transport == "file":
        return FileChannel(name, Path(settings.outbox_dir), settings.mail_from)
    if name == "email":
        from channels.transports.smtp import SmtpConfig, SmtpEmailChannel

        return SmtpEmailChannel(SmtpConfig(
            host=settings.smtp_host, port=settings.smtp_port, use_tls=settings.smtp_tls,
            start_tls=settings.smtp_starttls, username=settings.smtp_username,
            password=secret(settings.smtp_password, "TOUCHFLOW_SMTP_PASSWORD"), from_address=settings.mail_from,
            from_name=settings.company_name, pool_size=settings.smtp_pool_size, timeout=settings.smtp_timeout,
            max_connections=settings.smtp_max_connections, pipelining=settings.smtp_pipelining))
    if name in ("sms", "voice"):
        from channels.transports.twilio import TwilioConfig, TwilioSmsChannel, TwilioVoiceChannel

        config = TwilioConfig(
            account_sid=settings.twilio_account_sid or "",
            auth_token=secret(settings.twilio_auth_token, "TOUCHFLOW_TWILIO_AUTH_TOKEN") or "",
            from_number=settings.twilio_from_number, messaging_service_sid=settings.twilio_messaging_service_sid,
            status_callback=settings.twilio_status_callback, api_base_url=settings.twilio_api_base_url,
            timeout=settings.twilio_timeout, max_in_flight=settings.max_in_flight)
        try:
            return (TwilioSmsChannel if name == "sms" else TwilioVoiceChannel)(config)
        except ValueError as exc:
            raise ChannelConfigError(str(exc)) from None
    if name == "telegram":
        from channels.transports.telegram import TelegramChannel, TelegramConfig

        token = secret(settings.telegram_bot_token, "TOUCHFLOW_TELEGRAM_BOT_TOKEN")
        if not token:
            raise ChannelConfigError("TOUCHFLOW_TELEGRAM_TRANSPORT=telegram needs TOUCHFLOW_TELEGRAM_BOT_TOKEN "
                                     "(or TOUCHFLOW_TELEGRAM_BOT_TOKEN_BLOCK)")
        return TelegramChannel(TelegramConfig(token=token, bot_username=settings.telegram_bot_username,
                                              base_url=settings.telegram_api_base_url,
                                              timeout=settings.telegram_timeout, max_in_flight=settings.max_in_flight))
    raise ChannelConfigError(f"no transport {transport!r} for {name}")


def rate_of(name: str, settings: Settings | None = None) -> float:
    """Units a second a channel's sender may send (messages; SMS segments), across every process; 0 = unlimited."""
    info = CHANNELS[name]
    return float(getattr(settings or get_settings(), info.rate_setting)) if info.rate_setting else 0.0


def meter_of(name: str, channel: Channel, settings: Settings | None = None) -> Meter | None:
    """The limits ``channel``'s sends count against at its provider; None when none applies.

    Telegram: the bot's rate and one message a second per chat; SMS: the sender number's rate in
    segments; voice: the sender number's calls; email: the relay's rate when one is set. A dev
    transport (console, file, memory) and a rate of 0 are not metered.
    """
    rate = rate_of(name, settings)
    if rate <= 0 or channel.transport in DEV_TRANSPORTS:
        return None
    config = getattr(channel, "config", None)
    if name == "telegram":
        bot = f"telegram:bot:{_bot_id(config.token)}"
        return Meter(Limit.per_second(bot, rate), per_recipient=Limit.per_second(f"{bot}:chat:", TELEGRAM_PER_CHAT))
    if name in ("sms", "voice"):
        sender = config.from_number or config.messaging_service_sid
        return Meter(Limit.per_second(f"{name}:{sender}", rate), weigh=sms_segments if name == "sms" else None)
    if name == "email":
        settings = settings or get_settings()
        return Meter(Limit.per_second(f"email:{settings.smtp_host}:{settings.smtp_port}", rate))
    return Meter(Limit.per_second(name, rate))


def _bot_id(token: str) -> str:
    """The bot's public id (the token's part before the colon), never the token's secret part."""
    head = token.split(":", 1)[0]
    return head if head.isdigit() else "sha256-" + hashlib.sha256(token.encode()).hexdigest()[:16]


def sms_segments(message: Message) -> int:
    """What an SMS weighs at Twilio: its segments (a 70-character Cyrillic text is one, 71–134 two)."""
    from channels.render.sms import sms_info

    return max(1, sms_info(message.text).segments)


def describe(settings: Settings | None = None) -> list[dict]:
    """Each channel's transport, rate and where it sends, with secrets masked."""
    settings = settings or get_settings()
    rows = []
    for name, info in CHANNELS.items():
        transport = transport_of(name, settings)
        target = {"file": str(Path(settings.outbox_dir) / name), "console": "stdout", "memory": "memory"}.get(transport)
        if transport == "smtp":
            target = f"{settings.smtp_host}:{settings.smtp_port} user={settings.smtp_username or '—'} " \
                     f"password={mask(settings.smtp_password)}"
        elif transport == "twilio":
            target = f"account={settings.twilio_account_sid or '—'} token={mask(settings.twilio_auth_token)} " \
                     f"from={settings.twilio_from_number or settings.twilio_messaging_service_sid or '—'}"
        elif transport == "telegram":
            target = f"@{settings.telegram_bot_username} token={mask(settings.telegram_bot_token)}"
        elif transport == "tasks":
            target = "call tasks"
        rows.append({"channel": name, "transport": transport, "rate_per_second": rate_of(name, settings) or None,
                     "max_length": info.max_length, "target": target, "description": info.description})
    return rows

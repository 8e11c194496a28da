"""Build channels by name from configuration; describe them with secrets masked.

Each channel has declarative metadata (the contact kind it needs, its default rate, its length
limit) and a transport chosen by ``TOUCHFLOW_<CHANNEL>_TRANSPORT``: the real one (smtp, twilio,
telegram, tasks) or a dev one (console, file, memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from channels.base import Channel
from channels.calls import CallTaskChannel, TaskSink
from channels.outbox import ConsoleChannel, FileChannel, MemoryChannel
from touchflow.secrets import mask, secret
from touchflow.settings import Settings, get_settings

DEV_TRANSPORTS = ("console", "file", "memory")


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


class ChannelConfigError(ValueError):
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
        from channels.email import SmtpConfig, SmtpEmailChannel

        return SmtpEmailChannel(SmtpConfig(
            host=settings.smtp_host, port=settings.smtp_port, use_tls=settings.smtp_tls,
            start_tls=settings.smtp_starttls, username=settings.smtp_username,
            password=secret(settings.smtp_password, "TOUCHFLOW_SMTP_PASSWORD"), from_address=settings.mail_from,
            from_name=settings.company_name, pool_size=settings.smtp_pool_size, timeout=settings.smtp_timeout))
    if name in ("sms", "voice"):
        from channels.twilio import TwilioConfig, TwilioSmsChannel, TwilioVoiceChannel

        config = TwilioConfig(
            account_sid=settings.twilio_account_sid or "",
            auth_token=secret(settings.twilio_auth_token, "TOUCHFLOW_TWILIO_AUTH_TOKEN") or "",
            from_number=settings.twilio_from_number, messaging_service_sid=settings.twilio_messaging_service_sid,
            status_callback=settings.twilio_status_callback, api_base_url=settings.twilio_api_base_url)
        try:
            return (TwilioSmsChannel if name == "sms" else TwilioVoiceChannel)(config)
        except ValueError as exc:
            raise ChannelConfigError(str(exc)) from None
    if name == "telegram":
        from channels.telegram import TelegramChannel, TelegramConfig

        token = secret(settings.telegram_bot_token, "TOUCHFLOW_TELEGRAM_BOT_TOKEN")
        if not token:
            raise ChannelConfigError("TOUCHFLOW_TELEGRAM_TRANSPORT=telegram needs TOUCHFLOW_TELEGRAM_BOT_TOKEN "
                                     "(or TOUCHFLOW_TELEGRAM_BOT_TOKEN_BLOCK)")
        return TelegramChannel(TelegramConfig(token=token, bot_username=settings.telegram_bot_username,
                                              base_url=settings.telegram_api_base_url))
    raise ChannelConfigError(f"no transport {transport!r} for {name}")


def rate_of(name: str, settings: Settings | None = None) -> float:
    """Messages per second allowed for a channel (0 = unlimited)."""
    info = CHANNELS[name]
    return float(getattr(settings or get_settings(), info.rate_setting)) if info.rate_setting else 0.0


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

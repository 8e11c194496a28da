"""Read touchflow's configuration from TOUCHFLOW_* environment variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///touchflow.db"


class Settings(BaseSettings):
    """Every setting touchflow reads; each maps to ``TOUCHFLOW_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TOUCHFLOW_", extra="ignore")

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the customer base (SQLite file or PostgreSQL).",
    )
    default_region: str = Field(
        "RU", description="Region (ISO 3166 alpha-2) for phone numbers written without a country code."
    )
    default_timezone: str = Field(
        "Europe/Moscow", description="Time zone of customers whose record names none."
    )
    locale: str = Field("ru_RU", description="Locale for money, dates and plural forms.")
    currency: str = Field("RUB", description="Currency of amounts that name none.")
    replenishment_scopes: str = Field(
        "category", description="What replenishment is predicted per: category, product, or category,product."
    )
    import_batch_size: int = Field(20000, ge=100, description="Rows written per database batch on import.")

    outbox_dir: str = Field("outbox", description="Where the file transports write (.eml, .json).")
    public_url: str = Field("http://127.0.0.1:8000", description="Base URL of `touchflow serve` (unsubscribe links).")
    secret_key: SecretStr | None = Field(None, description="Signs unsubscribe links; generated and kept in the "
                                                           "database when unset.")
    company_name: str = Field("touchflow", description="Sender name in messages.")

    email_transport: str = Field("file", description="smtp, console, file or memory.")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_tls: bool = Field(False, description="Implicit TLS (port 465).")
    smtp_starttls: bool = Field(False, description="STARTTLS after connecting.")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_pool_size: int = Field(4, ge=1, description="Persistent SMTP connections.")
    smtp_timeout: float = 30.0
    mail_from: str = "touchflow@localhost"

    sms_transport: str = Field("file", description="twilio, console, file or memory.")
    voice_transport: str = Field("file", description="twilio, console, file or memory.")
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_status_callback: str | None = None
    twilio_api_base_url: str | None = Field(None, description="Another Twilio API endpoint (tests, proxies).")

    telegram_transport: str = Field("file", description="telegram, console, file or memory.")
    telegram_bot_token: SecretStr | None = None
    telegram_bot_username: str = "touchflow_bot"
    telegram_api_base_url: str | None = Field(None, description="Another Bot API endpoint (tests, local server).")
    telegram_webhook_secret: SecretStr | None = Field(None, description="The secret_token given to setWebhook.")

    call_transport: str = Field("tasks", description="tasks (call_tasks table), console, file or memory.")

    rate_email: float = Field(0, ge=0, description="Emails per second per process; 0 = unlimited.")
    rate_sms: float = Field(1, ge=0, description="SMS per second per sender number (Twilio's default).")
    rate_voice: float = Field(1, ge=0, description="Calls per second per sender number.")
    rate_telegram: float = Field(30, ge=0, description="Telegram messages per second (Bot API limit).")
    send_attempts: int = Field(3, ge=1, description="Tries per message on transient errors.")

    sms_max_segments: int = Field(3, ge=1, description="Longest SMS allowed, in segments.")
    sms_over_limit: str = Field("refuse", description="refuse or warn when an SMS is longer.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once from the environment)."""
    return Settings()


def reset_settings() -> None:
    """Forget cached settings so the next call re-reads the environment (tests, CLI options)."""
    get_settings.cache_clear()

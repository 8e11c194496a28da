"""Every setting touchflow reads: from a project's ``touchflow.toml``, then the environment (which wins).

Like ``django.conf``, any layer may import this module. A setting ``smtp_host`` is
``TOUCHFLOW_SMTP_HOST`` in the environment and ``[smtp] host`` (or a top-level ``smtp_host``) in
``touchflow.toml``; paths written in the file are relative to the file's folder (the project).
The file is ``TOUCHFLOW_CONFIG`` when set, else the nearest ``touchflow.toml`` in the working
directory or a folder above it. Secrets (``SECRETS``) come only from the environment or from
Prefect Secret blocks (``touchflow.secrets``): a file kept in git must not hold them.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from touchflow.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///touchflow.db"
CONFIG_FILE = "touchflow.toml"
SECRETS = ("smtp_password", "twilio_auth_token", "telegram_bot_token", "telegram_webhook_secret", "secret_key",
           "inbound_email_secret", "imap_password")
PATHS = ("outbox_dir", "templates_dir", "campaigns_dir", "segments_path",
         "telegram_bot_file")  # relative to the project in the file


def shipped(name: str) -> Path:
    """A folder of data shipped in the package: ``templates`` or ``campaigns`` (read with importlib.resources)."""
    return Path(str(files(f"touchflow.shipped.{name}")))


def config_file(start: Path | None = None) -> Path | None:
    """The project's ``touchflow.toml``: ``TOUCHFLOW_CONFIG``, or the nearest one upwards from ``start`` (cwd)."""
    named = os.environ.get("TOUCHFLOW_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"TOUCHFLOW_CONFIG={named}: no such file; create one with `touchflow init DIR` or "
                              "unset the variable")
        return path.resolve()
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate / CONFIG_FILE
    return None


def read_config(path: Path) -> dict[str, Any]:
    """The settings a ``touchflow.toml`` gives, flattened (``[smtp] host`` → ``smtp_host``), paths made absolute."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            values.update({f"{key}_{inner}": item for inner, item in value.items()})
        else:
            values[key] = value
    known = set(Settings.model_fields)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; `touchflow config show` lists them all")
    secrets = sorted(set(values) & set(SECRETS))
    if secrets:
        raise ConfigError(f"{path}: {', '.join(secrets)} are secrets and do not belong in a file kept in git; set "
                          f"them in the environment (TOUCHFLOW_{secrets[0].upper()}) or a Prefect Secret block "
                          f"(TOUCHFLOW_{secrets[0].upper()}_BLOCK)")
    return {key: _absolute(key, value, path.parent) for key, value in values.items()}


def _absolute(key: str, value: Any, project: Path) -> Any:
    if key in PATHS and isinstance(value, str) and value:
        return os.pathsep.join(str((project / part).resolve()) for part in value.split(os.pathsep))
    if key == "database_url" and isinstance(value, str) and value.startswith("sqlite:///") \
            and not value.startswith("sqlite:////") and value != "sqlite:///:memory:":
        return "sqlite:///" + str((project / value[len("sqlite:///"):]).resolve())
    return value


class _ConfigFile(PydanticBaseSettingsSource):
    """The project's ``touchflow.toml`` as a settings source (below the environment)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = config_file()
        self.values = read_config(path) if path else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class Settings(BaseSettings):
    """Every setting touchflow reads; each maps to ``TOUCHFLOW_<NAME>`` and to ``touchflow.toml``."""

    model_config = SettingsConfigDict(env_prefix="TOUCHFLOW_", extra="ignore")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFile(settings_cls)

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
    templates_dir: str | None = Field(None, description="The project's message templates; a folder named like a "
                                                        "shipped template replaces it.")
    campaigns_dir: str | None = Field(None, description="The project's campaign specs (default: campaigns/ of the "
                                                        "project, else the shipped ones).")
    segments_path: str = Field("", description="Segment files or folders, separated by ':' (after the shipped "
                                               "library; a name defined later replaces an earlier one).")
    public_url: str = Field("http://127.0.0.1:8000", description="Base URL of `touchflow serve` (unsubscribe links).")
    secret_key: SecretStr | None = Field(None, description="Signs unsubscribe links and keys the history's seals; "
                                                           "generated and kept in the database when unset.")
    company_name: str = Field("touchflow", description="Sender name in messages.")
    company_legal_name: str | None = Field(None, description="The company as contracts and proposals name it, e.g. "
                                                             "ООО «Визитка» (default: company_name).")
    company_signatory: str | None = Field(None, description="Who signs documents for the company when the customer "
                                                            "has no rep with a name, e.g. Иванов Иван Иванович.")
    company_signatory_position: str = Field("Генеральный директор", description="The company signatory's position.")
    vat_rate: Decimal | None = Field(Decimal(20), description="VAT in percent, included in document prices (20, 10, "
                                                              "0), or none when the company does not charge VAT "
                                                              "(«Без НДС»).")

    email_transport: str = Field("file", description="smtp, console, file or memory.")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_tls: bool = Field(False, description="Implicit TLS (port 465).")
    smtp_starttls: bool = Field(False, description="STARTTLS after connecting.")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_pool_size: int = Field(4, ge=1, description="Persistent SMTP connections at first.")
    smtp_max_connections: int = Field(64, ge=1, description="Connections a sending process may grow to while the "
                                                            "relay keeps up (halved when it pushes back: a refused "
                                                            "connection, a 421); set it to smtp_pool_size for a "
                                                            "fixed pool.")
    smtp_timeout: float = 30.0
    max_in_flight: int = Field(32, ge=1, description="SMS, voice and Telegram requests a sending process may grow to "
                                                     "(from 4) while the provider keeps up, within its rate limits.")
    smtp_pipelining: bool = Field(False, description="Send MAIL, RCPT and DATA as one group where the server "
                                                     "offers PIPELINING (RFC 2920): two round trips a message "
                                                     "instead of four.")
    mail_from: str = "touchflow@localhost"
    verp: bool = Field(True, description="Each email's envelope sender is its own return address (VERP: "
                                         "bounces+<touch>-<tag>@bounce_domain), so a bounce names the touch it is "
                                         "about; the tag is signed, a forged bounce fails nothing.")
    bounce_domain: str | None = Field(None, description="Domain of the VERP return addresses (default: the domain "
                                                        "of mail_from); its mail must reach the bounce route "
                                                        "(`touchflow bounces ingest`).")
    bounce_local: str = Field("bounces", description="Local part before the '+' of the VERP return addresses.")
    soft_bounce_limit: int = Field(3, ge=1, description="Soft bounces (4.x.x, delayed) of this many touches in a row "
                                                        "to one address count as a hard bounce.")

    sms_transport: str = Field("file", description="twilio, console, file or memory.")
    voice_transport: str = Field("file", description="twilio, console, file or memory.")
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_status_callback: str | None = None
    twilio_api_base_url: str | None = Field(None, description="Another Twilio API endpoint (tests, proxies).")
    twilio_timeout: float = Field(30.0, gt=0, description="Seconds to wait for Twilio's answer.")

    telegram_transport: str = Field("file", description="telegram, console, file or memory.")
    telegram_bot_token: SecretStr | None = None
    telegram_bot_username: str = "touchflow_bot"
    telegram_api_base_url: str | None = Field(None, description="Another Bot API endpoint (tests, local server).")
    telegram_webhook_secret: SecretStr | None = Field(None, description="The secret_token given to setWebhook.")
    telegram_timeout: float = Field(10.0, gt=0, description="Seconds to wait for each step of a Bot API call.")
    telegram_bot_file: str | None = Field(None, description="The bot's script: FAQ, order intent and replies (YAML; "
                                                         "default: the shipped templates/bot/bot.yaml).")

    inbound_email_secret: SecretStr | None = Field(None, description="Signs requests to POST /inbound/email "
                                                                     "(HMAC-SHA256 of the timestamp and the body); "
                                                                     "unset: the route refuses every request.")
    imap_host: str | None = Field(None, description="Mailbox that replies arrive in, read by `touchflow inbound "
                                                    "poll-imap`.")
    imap_port: int = Field(993, ge=1, le=65535, description="IMAP port (993 with imap_ssl, 143 without).")
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_mailbox: str = Field("INBOX", description="The folder polled for unseen messages.")
    imap_ssl: bool = Field(True, description="Implicit TLS (IMAPS); off: STARTTLS when the server offers it.")

    call_transport: str = Field("tasks", description="tasks (call_tasks table), console, file or memory.")

    rate_email: float = Field(0, ge=0, description="Emails per second per relay, across every process sharing the "
                                                   "limiter; 0 = unlimited.")
    rate_sms: float = Field(1, ge=0, description="SMS segments per second per sender number, across every process "
                                                 "sharing the limiter (Twilio's long-code default).")
    rate_voice: float = Field(1, ge=0, description="Calls per second per sender number, across every process.")
    rate_telegram: float = Field(30, ge=0, description="Telegram messages per second per bot, across every process "
                                                       "(Bot API limit; one a second per chat besides).")
    rate_limit_url: str | None = Field(None, description="Redis (redis://host:6379/0) where every process and "
                                                         "machine shares the rates above, so no second goes over "
                                                         "them; unset: each process keeps its own.")
    prepare_apart: bool = Field(True, description="A run in one process reads, decides, renders and claims its "
                                                  "next pages in a second process while this one sends (a file "
                                                  "or server database; off: in a thread of the sending process).")
    prepare_apart_from: int = Field(5000, ge=0, description="Customers a run's segment must hold beyond its first "
                                                            "page for prepare_apart to start a second process "
                                                            "(about a second of a processor to start).")
    send_attempts: int = Field(3, ge=1, description="Tries per message on transient errors.")

    sms_max_segments: int = Field(3, ge=1, description="Longest SMS allowed, in segments.")
    sms_over_limit: str = Field("refuse", description="refuse or warn when an SMS is longer.")
    render_timeout_seconds: float = Field(2.0, gt=0, description="Longest a message may take to render.")
    render_max_bytes: int = Field(1_000_000, ge=1000, description="Largest rendered message part, in bytes.")

    min_gap_hours: float = Field(24.0, ge=0, description="Hours between any two marketing touches to one person, "
                                 "across campaigns and channels (0: no gap); a spec's policy may override it.")
    run_lease_seconds: float = Field(60.0, ge=1, description="A campaign run not heard from for this long is "
                                                             "taken for dead by the next run.")
    channel_failure_limit: int = Field(5, ge=1, description="Consecutive connection failures after which a "
                                                            "channel stops for the rest of the run.")

    # What a message costs (RUB), channels.pricing: [prices] in touchflow.toml, TOUCHFLOW_PRICES_<NAME>; unset: default
    prices_email: Decimal | None = Field(None, ge=0, description="Price of an email (default 0.10).")
    prices_sms: Decimal | None = Field(None, ge=0, description="Price of an SMS segment (default 3.50).")
    prices_voice: Decimal | None = Field(None, ge=0, description="Price of a started minute of a voice call (default "
                                                                 "3.00; minutes estimated from the text).")
    prices_telegram: Decimal | None = Field(None, ge=0, description="Price of a Telegram message (default 0).")
    prices_call: Decimal | None = Field(None, ge=0, description="Price of a minute of a rep's call (default 12.00).")
    prices_call_minutes: Decimal | None = Field(None, gt=0, description="Minutes a rep's call is expected to take "
                                                                        "(default 3).")
    choice_window_days: int = Field(14, ge=1, description="channels: auto counts a purchase within this many days "
                                                          "after a touch as that touch's response.")
    choice_lookback_days: int = Field(365, ge=1, description="channels: auto reads this many days of history.")
    choice_prior_weight: float = Field(5.0, gt=0, description="channels: auto: how many touches of the segment's "
                                                              "rate a person's own response rate starts from.")

    @field_validator("vat_rate", mode="before")
    @classmethod
    def _vat_rate(cls, value: Any) -> Decimal | None:
        """``20``, ``10 %``, ``0``; ``none`` (or ``без НДС``) for a company that charges no VAT."""
        if value is None or isinstance(value, str) and value.strip().lower() in ("none", "no", "без ндс", "off"):
            return None
        try:
            rate = Decimal(str(value).strip().rstrip("%").strip().replace(",", "."))
        except InvalidOperation:
            raise ValueError(f"vat_rate {value!r} is not a percentage; write 20, 10, 0, or none") from None
        if not rate.is_finite() or not 0 <= rate < 100:
            raise ValueError(f"vat_rate {value!r} must be a percentage from 0 to under 100, or none")
        return rate

    @field_validator("bounce_local")
    @classmethod
    def _bounce_local(cls, value: str) -> str:
        """A plain local part: the VERP address is ``<bounce_local>+<touch>-<tag>@<bounce_domain>``."""
        if not value or not value.isascii() or any(c in "+@<>\" ,;:" or c.isspace() for c in value):
            raise ValueError(f"bounce_local {value!r} must be a plain ASCII local part without '+', '@', quotes or "
                             "spaces, e.g. bounces")
        return value

    @field_validator("bounce_domain")
    @classmethod
    def _bounce_domain(cls, value: str | None) -> str | None:
        """A domain name (its mail must reach the bounce route), or unset for mail_from's domain."""
        if value is not None and (not value.strip() or "@" in value or any(c.isspace() for c in value.strip())):
            raise ValueError(f"bounce_domain {value!r} is not a domain name; write e.g. bounces.example.com, or leave "
                             "it unset for the domain of mail_from")
        return value.strip() if value else None


def project_dir() -> Path | None:
    """The folder of the project's ``touchflow.toml``, if there is one."""
    path = config_file()
    return path.parent if path else None


def campaigns_dir(settings: Settings | None = None) -> Path:
    """Where campaign specs are: the setting, else the project's ``campaigns/``, else the shipped ones."""
    settings = settings or get_settings()
    if settings.campaigns_dir:
        return Path(settings.campaigns_dir)
    project = project_dir()
    if project is not None and (project / "campaigns").is_dir():
        return project / "campaigns"
    return shipped("campaigns")


def sources(settings: Settings | None = None) -> dict[str, str]:
    """Where each setting's value came from: the environment variable, the file, or the default."""
    path = config_file()
    in_file = read_config(path) if path else {}
    result = {}
    for name in Settings.model_fields:
        variable = f"TOUCHFLOW_{name.upper()}"
        if variable in os.environ:
            result[name] = f"environment {variable}"
        elif name in SECRETS and os.environ.get(f"{variable}_BLOCK"):
            result[name] = f"Prefect Secret block {os.environ[f'{variable}_BLOCK']!r} ({variable}_BLOCK)"
        elif name in in_file:
            result[name] = str(path)
        else:
            result[name] = "default"
    return result


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once from the environment)."""
    return Settings()  # the environment, then touchflow.toml, then the defaults


def reset_settings() -> None:
    """Forget cached settings so the next call re-reads the environment (tests, CLI options)."""
    get_settings.cache_clear()

"""Read touchflow's configuration from TOUCHFLOW_* environment variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
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
    import_batch_size: int = Field(10000, ge=100, description="Rows written per database batch on import.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once from the environment)."""
    return Settings()


def reset_settings() -> None:
    """Forget cached settings so the next call re-reads the environment (tests, CLI options)."""
    get_settings.cache_clear()

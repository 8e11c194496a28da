"""Shared fixtures: a migrated database on SQLite and, when TOUCHFLOW_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from crm.db import make_engine, normalize_url, upgrade
from touchflow.settings import reset_settings

POSTGRES_URL = os.environ.get("TOUCHFLOW_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail the whole run (not skip) when PostgreSQL was asked for and cannot be reached."""
    if not POSTGRES_URL:
        return
    try:
        engine = make_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to reach the server ends the run
        pytest.exit(f"TOUCHFLOW_TEST_POSTGRES_URL={POSTGRES_URL} is unreachable: {exc}", returncode=1)


def _postgres_schema_url(schema: str) -> str:
    url = normalize_url(POSTGRES_URL)
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of an empty database: a fresh SQLite file, or a fresh schema in the PostgreSQL test database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'touchflow.db'}"
        return
    schema = f"tf_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _postgres_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to the newest schema."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the CLI at the test database (settings re-read from the environment)."""
    monkeypatch.setenv("TOUCHFLOW_DATABASE_URL", db_url)
    reset_settings()
    yield db_url
    reset_settings()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test reads the settings anew (a test that sets TOUCHFLOW_* calls ``reset_settings`` after it)."""
    reset_settings()
    yield
    reset_settings()

"""Open the customer base (SQLite or PostgreSQL), run migrations and check the schema."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import any_, bindparam, event, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import create_engine
from touchflow.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000
IN_LIST_SIZE = 900  # values per IN (...) list: under SQLite's bound-parameter limit, cheap on PostgreSQL


class SchemaError(ConfigError):
    """The database has no touchflow schema, or an older or newer one than this program."""


def normalize_url(url: str) -> str:
    """Return ``url`` with PostgreSQL URLs pointed at the psycopg 3 driver touchflow ships."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _configure_sqlite(dbapi_connection, _record) -> None:
    # Let SQLAlchemy, not the sqlite3 module, issue BEGIN: savepoints then work, and claims can
    # take the write lock up front (BEGIN IMMEDIATE) so concurrent writers wait instead of failing.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def _begin_sqlite(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
        if memory:
            kwargs["poolclass"] = StaticPool
        elif parsed.database:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    # No server-side prepared statements (psycopg prepares a query on its 5th run): a generic plan
    # made while a table was small or had no statistics was then kept for ``= ANY(:array)``
    # lookups, scanning a million-row table for every chunk; each query is planned with its values.
    return create_engine(url, pool_pre_ping=True, connect_args={"prepare_threshold": None})


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction; on SQLite it takes the write lock up front (``BEGIN IMMEDIATE``).

    A deferred transaction that reads and then writes cannot wait for another writer (SQLite
    answers "database is locked" at once); an immediate one waits up to the busy timeout.
    """
    with engine.connect().execution_options(immediate=True) as conn, conn.begin():
        yield conn


def in_chunks(items: Sequence[T], size: int = IN_LIST_SIZE) -> Iterator[list[T]]:
    """Split ``items`` into lists short enough for one ``IN (...)`` each."""
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def one_of(conn: Connection, column, values: Sequence[Any]):
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)`` with the values as one parameter.

    A 900-value IN list costs more to compile (SQLAlchemy) and to parse for placeholders (psycopg)
    than the query itself takes on the server; one array parameter costs neither.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


BASE_TABLES = ("customers", "contact_points", "consents", "purchases", "service_events")
HISTORY_TABLES = ("touches", "touch_events", "contact_locks")
STATS_MIN_ROWS = 1000  # below this a sequential scan is as good as any plan
ANALYZE_LOCK = 0x746F7563 << 32  # advisory lock keys: this plus the table's oid


def refresh_statistics(engine: Engine, tables: Sequence[str]) -> list[str]:
    """ANALYZE the tables that grew past twice the size the planner last saw (PostgreSQL); return them.

    A table written by one long run (the touches, events and locks of a million-customer
    campaign, or a first import) outgrows its statistics before autovacuum looks at it, or for
    good where autovacuum is off. Without a ``person_id`` histogram the planner assumes each value
    matches 1/200 of the table and answers ``person_id = ANY(:ids)`` with a sequential scan: 100 ms
    per lookup at two million locks instead of 1 ms. The check is one catalog query; concurrent
    workers do not analyze the same table twice (a transaction-level advisory lock, not waited
    for). SQLite plans by its indexes without statistics: nothing to do.
    """
    if engine.dialect.name != "postgresql" or not tables:
        return []
    done = []
    with engine.connect() as conn:
        grown = conn.execute(text(
            "SELECT c.oid, c.relname FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = ANY(CAST(:tables AS regclass[])) AND s.n_live_tup >= :least "
            "AND s.n_live_tup > 2 * greatest(c.reltuples, 0)"), {"tables": list(tables), "least": STATS_MIN_ROWS}).all()
        conn.commit()
        for oid, name in grown:
            if conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ANALYZE_LOCK + oid}).scalar():
                conn.execute(text(f'ANALYZE "{name}"'))
                done.append(name)
            conn.commit()
    return done


def _alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """Return the newest schema revision this touchflow knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "touchflow ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the schema revision the database is at, or None when it has no touchflow schema."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``revision`` (default: newest); return (before, after)."""
    before = current_revision(engine)
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, current_revision(engine)


def require_schema(engine: Engine) -> None:
    """Raise SchemaError, saying how to fix it, unless the database is at this touchflow's schema."""
    head = head_revision()
    where = engine.url.render_as_string(hide_password=True)
    try:
        current = current_revision(engine)
    except Exception as exc:  # unreachable server, bad credentials, unreadable file
        raise SchemaError(f"cannot open the database {where}: {exc}. Check TOUCHFLOW_DATABASE_URL.") from exc
    if current is None:
        raise SchemaError(
            f"the database {where} has no touchflow schema. "
            "Create it with `touchflow db upgrade` (or `touchflow demo` for a demo base)."
        )
    if current == head:
        return
    known = {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}
    if current in known:
        raise SchemaError(
            f"the database {where} is at schema revision {current}, this touchflow needs {head}. "
            "Run `touchflow db upgrade` (your data is kept)."
        )
    raise SchemaError(
        f"the database {where} is at schema revision {current}, which this touchflow does not know "
        f"(newest known: {head}); it was written by a newer touchflow. Upgrade touchflow."
    )

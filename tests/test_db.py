"""Schema: migrations from empty, the schema check, SQLite pragmas, time round-trips on both databases."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, inspect, select, text

from crm.db import (
    SchemaError,
    current_revision,
    head_revision,
    make_engine,
    require_schema,
    upgrade,
)
from crm.models import Consent, ContactLock, Customer
from tests.helpers import run_cli, run_json


def test_upgrade_from_empty_creates_every_table_and_is_repeatable(db_url):
    engine = make_engine(db_url)
    with pytest.raises(SchemaError, match="touchflow db upgrade"):
        require_schema(engine)
    before, after = upgrade(engine)
    assert (before, after) == (None, head_revision())
    tables = set(inspect(engine).get_table_names())
    assert {"customers", "contact_points", "consents", "purchases", "service_events", "managers", "touches",
            "import_runs"} <= tables
    assert upgrade(engine) == (head_revision(), head_revision())
    require_schema(engine)
    engine.dispose()


def test_schema_written_by_a_newer_touchflow_is_refused(engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    with pytest.raises(SchemaError, match="newer touchflow"):
        require_schema(engine)


def test_commands_say_how_to_fix_a_missing_schema(cli_env):
    result = run_cli("stats")
    assert result.exit_code == 1
    assert "touchflow db upgrade" in result.output
    assert run_json("db", "current")["current"] is None
    assert run_json("db", "upgrade")["after"] == head_revision()
    assert run_json("db", "current")["up_to_date"] is True
    assert run_json("stats")["customers"] == 0


def test_sqlite_runs_with_wal_foreign_keys_and_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    engine.dispose()


def test_foreign_keys_are_enforced(engine):
    with pytest.raises(Exception):
        with engine.begin() as conn:
            conn.execute(insert(Consent.__table__).values(
                customer_id=999_999, channel="email", purpose="marketing", granted=True,
                at=datetime.now(timezone.utc), source="x", recorded_at=datetime.now(timezone.utc)))


def test_instants_round_trip_as_utc_on_both_databases(engine):
    moscow_noon = datetime(2024, 3, 15, 12, 0, tzinfo=timezone(timedelta(hours=3)))
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__).values(external_id="A", name="", attributes={"k": [1, "два"]},
                                                       created_at=moscow_noon, updated_at=moscow_noon))
        row = conn.execute(select(Customer.__table__.c.created_at, Customer.__table__.c.attributes)).one()
    assert row.created_at == datetime(2024, 3, 15, 9, 0, tzinfo=timezone.utc)
    assert row.created_at.tzinfo is not None
    assert row.attributes == {"k": [1, "два"]}
    assert current_revision(engine) == head_revision()


def test_upgrading_an_older_schema_keeps_the_data(db_url):
    engine = make_engine(db_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__).values(external_id="KEEP", name="Старый", attributes={"tv": "no"},
                                                       created_at=datetime.now(timezone.utc),
                                                       updated_at=datetime.now(timezone.utc)))
    with pytest.raises(SchemaError, match="touchflow db upgrade"):
        require_schema(engine)
    assert upgrade(engine) == ("0001", head_revision())
    with engine.connect() as conn:
        assert conn.execute(select(Customer.__table__.c.name)).scalar_one() == "Старый"
    assert "customer_stats" in inspect(engine).get_table_names()
    engine.dispose()


def test_bulk_insert_loads_many_rows_and_a_conflict_is_an_integrity_error(engine):
    """Large batches go through COPY on PostgreSQL: same values back, same exception on a taken key."""
    from datetime import datetime, timezone

    import pytest
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from crm.bulk import bulk_insert_tuples
    from crm.models import Customer

    customers = Customer.__table__
    now = datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)
    columns = ("external_id", "name", "birthday", "attributes", "created_at", "updated_at")
    rows = [(f"B{i}", f"Клиент «{i}»\tтаб", None, {"n": i, "s": "a\\b"}, now, now) for i in range(50)]
    with engine.begin() as conn:
        bulk_insert_tuples(conn, customers, columns, rows)
        with pytest.raises(IntegrityError), conn.begin_nested():
            bulk_insert_tuples(conn, customers, columns, [(f"N{i}", "", None, {}, now, now) for i in range(30)]
                               + [("B7", "", None, {}, now, now)])
        stored = conn.execute(select(customers.c.external_id, customers.c.name, customers.c.attributes,
                                     customers.c.created_at).order_by(customers.c.id)).all()
    assert len(stored) == 50                                # the failed batch left nothing behind
    assert stored[7] == ("B7", "Клиент «7»\tтаб", {"n": 7, "s": "a\\b"}, now)


def test_status_moves_keep_earlier_values_and_only_go_forward(engine):
    """``move`` on several touches at once (one UPDATE over arrays on PostgreSQL) gives the same rows as one by one."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import select

    from crm.db import write_tx
    from crm.ledger.moves import move
    from crm.ledger.touches import TOUCH_COLUMNS, insert_touches
    from crm.models import Touch, TouchEvent

    touches = Touch.__table__
    at = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
    base = {name: None for name in TOUCH_COLUMNS}
    base.update(person_key="1", campaign="c", run_id="r", purpose="marketing", channel="email", status="claimed",
                created_at=at, updated_at=at)
    with write_tx(engine) as conn:
        ids = insert_touches(conn, [{**base, "claim_key": f"k{i}"} for i in range(3)])
    assert move(engine, [{"touch_id": i, "status": "sending"} for i in ids], at=at) == set(ids)
    moved = move(engine, [{"touch_id": ids[0], "status": "sent", "provider_message_id": "<m0@x>"},
                          {"touch_id": ids[1], "status": "failed", "error_code": 550,
                           "error_message": "нет такого ящика"},
                          {"touch_id": ids[2], "status": "claimed"}], at=at + timedelta(seconds=5))
    assert moved == {ids[0], ids[1]}                                                   # the backward move did not
    assert move(engine, [{"touch_id": ids[0], "status": "delivered"}, {"touch_id": ids[1], "status": "sent"}],
                at=at + timedelta(seconds=9)) == {ids[0]}
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(touches))}
        events = conn.execute(select(TouchEvent.__table__.c.touch_id, TouchEvent.__table__.c.status)
                              .order_by(TouchEvent.__table__.c.id)).all()
    first, second, third = (rows[i] for i in ids)
    assert (first.status, first.provider_message_id) == ("delivered", "<m0@x>")       # kept through the next move
    assert first.sent_at == at + timedelta(seconds=5) and first.delivered_at == at + timedelta(seconds=9)
    assert (second.status, second.error_code, second.error_message) == ("failed", "550", "нет такого ящика")
    assert second.sent_at is None and third.status == "sending"                        # no move backwards
    assert [s for t, s in events if t == ids[0]] == ["claimed", "sending", "sent", "delivered"]
    assert [s for t, s in events if t == ids[1]] == ["claimed", "sending", "failed"]


def test_grown_tables_get_statistics_and_lookups_use_the_index(engine):
    """A lock table filled by one run is analyzed once it outgrows what the planner saw (PostgreSQL)."""
    import time

    from crm.db import HISTORY_TABLES, refresh_statistics

    now = datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(insert(ContactLock.__table__), [
            {"person_id": i, "scope": scope, "key": "k", "touch_id": i, "expires_at": now, "created_at": now}
            for i in range(1, 3001) for scope in ("offer", "cap")])
    if engine.dialect.name != "postgresql":
        assert refresh_statistics(engine, HISTORY_TABLES) == []  # SQLite plans by its indexes
        return
    plan = "EXPLAIN SELECT touch_id FROM contact_locks WHERE person_id = ANY(CAST(:ids AS integer[]))"
    with engine.connect() as conn:
        before = "\n".join(conn.execute(text(plan), {"ids": list(range(1, 200))}).scalars())
    assert "Seq Scan" in before  # no statistics: each id is assumed to match 1/200 of the table
    for _ in range(50):  # the server publishes row counts within about a second of the commit
        refreshed = refresh_statistics(engine, HISTORY_TABLES)
        if refreshed:
            break
        time.sleep(0.1)
    assert refreshed == ["contact_locks"]
    with engine.connect() as conn:
        after = "\n".join(conn.execute(text(plan), {"ids": list(range(1, 200))}).scalars())
    assert "Index" in after and "Seq Scan" not in after
    assert refresh_statistics(engine, HISTORY_TABLES) == []  # not again until the table doubles

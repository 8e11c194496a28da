"""Console reads on a big base: a person's timeline, history search and customer lookup (``crm.timeline``).

    python benchmarks/timeline_bench.py [--customers 1000000] [--touches 3000000] [--samples 50]
                                        [--database-url postgresql://postgres@127.0.0.1:5432/test]
                                        [--skip-sqlite] [--rebuild] [--json]

The base is written straight into the tables with ``crm.bulk`` (executemany on SQLite, COPY on
PostgreSQL) and kept for the next run: SQLite in ``benchmarks/data/`` (git-ignored), PostgreSQL in
a schema named after the size (``--rebuild`` starts afresh). Per customer: a phone, every second
one an email, a consent; 10% of records share their person with the record before; 50 "heavy"
people have three records and 1,500 touches. Touches (with one or two status events each) spread
over a year; over a quarter are decisions not to contact
(or deferrals). Purchases, service events and call tasks are
added at a third, a fifth and a tenth of the customer count.

Each operation runs once unmeasured, then ``--samples`` times on different random people / values;
the median and the 95th percentile are reported (target: under 200 ms).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crm.bulk import bulk_insert_tuples  # noqa: E402
from crm.db import make_engine, normalize_url, upgrade  # noqa: E402
from crm.models import (  # noqa: E402
    CallTask, Consent, ContactPoint, Customer, Manager, Purchase, ServiceEvent, Touch, TouchEvent)
from crm.timeline import find_customers, search, timeline  # noqa: E402

DATA = Path(__file__).with_name("data")
END = datetime(2026, 11, 23, 12, 0)
HEAVY, HEAVY_RECORDS, HEAVY_TOUCHES = 50, 3, 500  # heavy people, their records, touches per record
MANAGERS = 25
SURNAMES = ["Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов", "Новиков",
            "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров", "Павлов", "Козлов",
            "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин", "Захаров", "Зайцев", "Соловьёв",
            "Борисов", "Яковлев", "Григорьев", "Романов", "Воробьёв", "Сергеев", "Кузьмин", "Фролов",
            "Александров", "Дмитриев", "Королёв", "Гусев", "Киселёв", "Ильин", "Максимов", "Поляков",
            "Сорокин", "Виноградов", "Ковалёв", "Белов", "Медведев", "Антонов", "Тарасов"]
FIRST = ["Александр", "Мария", "Дмитрий", "Анна", "Сергей", "Елена", "Андрей", "Ольга", "Алексей", "Наталья",
         "Иван", "Татьяна", "Михаил", "Ирина", "Николай", "Светлана"]
CAMPAIGNS = [f"campaign_{i:02d}" for i in range(20)]
CHANNELS = ["sms", "email", "telegram", "call"]
SKIP_REASONS = ["no_consent", "frequency_cap", "offer_cooldown", "no_address", "opted_out"]
BATCH = 50_000


def person_of(i: int) -> int:
    if i <= HEAVY * HEAVY_RECORDS:
        return i - (i - 1) % HEAVY_RECORDS
    return i - 1 if i % 10 == 0 else i


def phone(i: int) -> str:
    return f"+7916{i:07d}"


def email(i: int) -> str | None:
    return f"client{i}@example.com" if i % 2 == 0 else None


# --- generated rows ---------------------------------------------------------------------------------

def customer_rows(n: int) -> Iterator[tuple]:
    rng = random.Random(1)
    for i in range(1, n + 1):
        surname, first = rng.choice(SURNAMES), rng.choice(FIRST)
        surname += "а" if first in FIRST[1::2] and not surname.endswith("ь") else ""
        yield (i, f"C{i:07d}", f"{surname} {first}", first, 1 + i % MANAGERS, {}, person_of(i), END, END)


def contact_rows(n: int) -> Iterator[tuple]:
    for i in range(1, n + 1):
        yield (i, i, "phone", phone(i), phone(i), "active", END, END)
    for i in range(2, n + 1, 2):
        yield (n + i // 2, i, "email", email(i), email(i), "active", END, END)


def touch_owner(rng: random.Random, n: int, t: int) -> int:
    heavy = HEAVY * HEAVY_RECORDS
    if t <= heavy * HEAVY_TOUCHES:
        return 1 + (t - 1) % heavy
    return rng.randint(heavy + 1, n)


def touch_rows(n: int, count: int) -> Iterator[tuple]:
    """Touches in id order (as a ledger writes them: newer ids later); their times spread over a year."""
    rng = random.Random(2)
    for t in range(1, count + 1):
        cid = touch_owner(rng, n, t)
        at = END - timedelta(seconds=int((count - t) / count * 365 * 86400) + rng.randrange(600))
        roll = rng.random()
        status = ("delivered" if roll < .35 else "sent" if roll < .70 else "failed" if roll < .75
                  else "deferred" if roll < .76 else "skipped")
        channel = CHANNELS[rng.randrange(4)]
        address, point = (email(cid), None) if channel == "email" else (phone(cid), cid)
        if channel == "email" and address is None:
            status, address = "skipped", None
        reason = rng.choice(SKIP_REASONS) if status == "skipped" else "quiet_hours" if status == "deferred" else None
        campaign = CAMPAIGNS[rng.randrange(len(CAMPAIGNS))]
        yield (t, str(person_of(cid)), cid, campaign, f"run-{campaign}-{t // 40000}", f"offer_{t % 7}",
               "marketing", channel, point, address, status, reason, f"{campaign}/{channel}",
               1 + cid % MANAGERS, at, at, at if status in ("sent", "delivered") else None,
               "provider_error" if status == "failed" else None)


def event_rows(n: int, count: int) -> Iterator[tuple]:
    """One event per touch (the state it was written in), a second for each delivered one."""
    ident = 0
    for row in touch_rows(n, count):
        t, status, reason, at = row[0], row[10], row[11], row[14]
        first = "sent" if status == "delivered" else status
        ident += 1
        yield (ident, t, first, at, reason, row[17])
        if status == "delivered":
            ident += 1
            yield (ident, t, "delivered", at + timedelta(seconds=30), None, None)


def consent_rows(n: int) -> Iterator[tuple]:
    rng = random.Random(3)
    for i in range(1, n + 1):
        at = END - timedelta(days=400 + rng.randrange(1000))
        yield (i, i, "all" if i % 3 else "sms", "marketing", i % 17 != 0, at, "import", at)


def purchase_rows(n: int) -> Iterator[tuple]:
    rng = random.Random(4)
    for p in range(1, n // 3 + 1):
        cid = rng.randint(1, n)
        yield (p, f"O{p}", cid, (END - timedelta(days=rng.randrange(700))).date(), f"Товар {p % 300}",
               f"cat{p % 30}", 1, 100 + p % 5000, "RUB", END)


def service_rows(n: int) -> Iterator[tuple]:
    rng = random.Random(5)
    for s in range(1, n // 5 + 1):
        yield (s, f"S{s}", rng.randint(1, n), (END - timedelta(days=rng.randrange(700))).date(),
               rng.choice(("haircut", "car_service", "trip")), None, {}, END)


def task_rows(n: int) -> Iterator[tuple]:
    rng = random.Random(6)
    for k in range(1, n // 10 + 1):
        cid = rng.randint(1, n)
        at = END - timedelta(seconds=rng.randrange(90 * 86400))
        done = k % 2 == 0
        yield (k, cid, person_of(cid), 1 + cid % MANAGERS, CAMPAIGNS[k % 20], phone(cid), "Скрипт звонка",
               at.date(), "done" if done else "open", "reached" if done else None, at,
               at + timedelta(hours=3) if done else None)


TABLES = [  # table, columns, rows(n, touches)
    (Manager, ("id", "code", "name", "active", "created_at", "daily_call_capacity", "needs_name"),
     lambda n, t: ((i, f"m{i}", f"Менеджер {i}", True, END, 40, False) for i in range(1, MANAGERS + 1))),
    (Customer, ("id", "external_id", "name", "first_name", "manager_id", "attributes", "person_id", "created_at",
                "updated_at"), lambda n, t: customer_rows(n)),
    (ContactPoint, ("id", "customer_id", "kind", "raw", "value", "status", "created_at", "updated_at"),
     lambda n, t: contact_rows(n)),
    (Consent, ("id", "customer_id", "channel", "purpose", "granted", "at", "source", "recorded_at"),
     lambda n, t: consent_rows(n)),
    (Touch, ("id", "person_key", "customer_id", "campaign", "run_id", "offer", "purpose", "channel",
             "contact_point_id", "address", "status", "reason", "template", "manager_id", "created_at", "updated_at",
             "sent_at", "error_code"), touch_rows),
    (TouchEvent, ("id", "touch_id", "status", "at", "reason", "error_code"), event_rows),
    (Purchase, ("id", "source_key", "customer_id", "purchased_on", "product", "category", "quantity", "amount",
                "currency", "created_at"), lambda n, t: purchase_rows(n)),
    (ServiceEvent, ("id", "source_key", "customer_id", "occurred_on", "kind", "note", "attributes", "created_at"),
     lambda n, t: service_rows(n)),
    (CallTask, ("id", "customer_id", "person_id", "manager_id", "campaign", "phone", "script", "due_on", "status",
                "outcome", "created_at", "closed_at"), lambda n, t: task_rows(n)),
]


def load(engine, customers: int, touches: int) -> dict[str, int]:
    """Write every table in batches; print progress; return the rows per table."""
    counts = {}
    for model, columns, rows in TABLES:
        table, started, done, batch = model.__table__, time.perf_counter(), 0, []
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA cache_size=-1000000")
            for row in rows(customers, touches):
                batch.append(row)
                if len(batch) >= BATCH:
                    bulk_insert_tuples(conn, table, columns, batch)
                    done, batch = done + len(batch), []
                    if done % 500_000 == 0:
                        rate = done / (time.perf_counter() - started)
                        print(f"  {table.name}: {done:,} rows ({rate:,.0f}/s)", flush=True)
            bulk_insert_tuples(conn, table, columns, batch)
            done += len(batch)
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                     f"(SELECT max(id) FROM {table.name}))")
        counts[table.name] = done
        print(f"  {table.name}: {done:,} rows in {time.perf_counter() - started:.1f}s", flush=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return counts


# --- measuring -------------------------------------------------------------------------------------

def measure(name: str, inputs: list, call: Callable) -> dict:
    """Run ``call`` once unmeasured, then once per input; median and 95th percentile in ms."""
    call(inputs[0])
    times, sizes = [], []
    for value in inputs:
        started = time.perf_counter()
        result = call(value)
        times.append((time.perf_counter() - started) * 1000)
        sizes.append(len(result.items) if hasattr(result, "items") else len(result))
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    row = {"operation": name, "median_ms": round(statistics.median(times), 2), "p95_ms": round(p95, 2),
           "max_ms": round(times[-1], 2), "samples": len(times), "items_median": statistics.median(sizes)}
    print(f"  {name:44s} median {row['median_ms']:8.2f} ms   p95 {row['p95_ms']:8.2f} ms   "
          f"items {row['items_median']}", flush=True)
    return row


def deep_cursor(engine, person: int, pages: int) -> str | None:
    cursor = None
    for _ in range(pages):
        cursor = timeline(engine, person, before=cursor, limit=50).next
    return cursor


def search_cursor(engine, pages: int, **filters) -> str | None:
    cursor = None
    for _ in range(pages):
        cursor = search(engine, after=cursor, limit=50, **filters).next
    return cursor


def operations(engine, customers: int, samples: int) -> list[dict]:
    rng = random.Random(7)
    ordinary = [person_of(rng.randint(HEAVY * HEAVY_RECORDS + 1, customers)) for _ in range(samples)]
    heavy = [1 + HEAVY_RECORDS * rng.randrange(HEAVY) for _ in range(samples)]
    deep = {p: deep_cursor(engine, p, 20) for p in sorted(set(heavy))}
    ids = [rng.randint(1, customers) for _ in range(samples)]
    combos = [(rng.choice(CAMPAIGNS), rng.choice(("failed", "skipped", "delivered"))) for _ in range(samples)]
    search_deep = search_cursor(engine, 20, campaign=CAMPAIGNS[3])
    formatted = [f"8 ({phone(i)[2:5]}) {phone(i)[5:8]}-{phone(i)[8:10]}-{phone(i)[10:]}" for i in ids]
    return [
        measure("timeline, first page (random person)", ordinary, lambda p: timeline(engine, p)),
        measure("timeline, first page (1,500-touch person)", heavy, lambda p: timeline(engine, p)),
        measure("timeline, page 21 (1,500-touch person)", heavy, lambda p: timeline(engine, p, before=deep[p])),
        measure("search: phone (whole person)", formatted, lambda t: search(engine, text=t)),
        measure("search: external id", [f"C{i:07d}" for i in ids], lambda t: search(engine, text=t)),
        measure("search: email", [email(i + i % 2) for i in ids], lambda t: search(engine, text=t)),
        measure("search: name prefix (5 letters)", [rng.choice(SURNAMES)[:5] for _ in ids], lambda t: search(engine, text=t)),
        measure("search: surname + first name", [f"{rng.choice(SURNAMES)} {rng.choice(FIRST[::2])}" for _ in ids],
                lambda t: search(engine, text=t)),
        measure("search: campaign + status", combos,
                lambda c: search(engine, campaign=c[0], status=c[1])),
        measure("search: campaign, page 21", [CAMPAIGNS[3]] * samples,
                lambda c: search(engine, campaign=c, after=search_deep)),
        measure("search: newest, no filter", [None] * samples, lambda _: search(engine)),
        measure("search: channel + since (last week)", [rng.choice(CHANNELS) for _ in ids],
                lambda ch: search(engine, channel=ch, since=END - timedelta(days=7))),
        measure("search: rep's customers (sales scoping)", [1 + i % MANAGERS for i in ids],
                lambda m: search(engine, manager_id=m)),
        measure("search: rep + failed", [1 + i % MANAGERS for i in ids],
                lambda m: search(engine, manager_id=m, status="failed")),
        measure("find_customers: external id", [f"C{i:07d}" for i in ids], lambda t: find_customers(engine, t)),
        measure("find_customers: phone", formatted, lambda t: find_customers(engine, t)),
        measure("find_customers: name prefix", [rng.choice(SURNAMES) + " " for _ in ids],
                lambda t: find_customers(engine, t.strip())),
    ]


# --- databases -------------------------------------------------------------------------------------

def prepared(url: str, customers: int, touches: int, rebuild: bool, marker: Callable) -> tuple:
    """An engine on a base of the asked size, built unless a complete one is there."""
    engine = make_engine(url)
    done = marker()
    if done and not rebuild:
        print(f"  reusing the base ({done})", flush=True)
        return engine, None, json.loads(done)
    upgrade(engine)
    started = time.perf_counter()
    counts = load(engine, customers, touches)
    return engine, round(time.perf_counter() - started, 1), counts


def run_sqlite(args) -> dict:
    DATA.mkdir(exist_ok=True)
    db = DATA / f"timeline-{args.customers}-{args.touches}.db"
    done = db.with_suffix(".done")
    if args.rebuild or not done.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        done.unlink(missing_ok=True)
    engine, seconds, counts = prepared(f"sqlite:///{db}", args.customers, args.touches, args.rebuild,
                                       lambda: done.read_text() if done.exists() else None)
    if seconds is not None:
        done.write_text(json.dumps(counts))
    upgrade(engine)  # a kept base gets the indexes added since it was built
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    report = {"load_seconds": seconds, "rows": counts, "size_mb": round(db.stat().st_size / 2**20),
              "operations": operations(engine, args.customers, args.samples)}
    engine.dispose()
    return report


def run_postgres(args) -> dict:
    schema = f"timeline_bench_{args.customers}_{args.touches}"
    admin = make_engine(args.database_url)
    with admin.begin() as conn:
        if args.rebuild:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
    url = f"{normalize_url(args.database_url)}?options=-csearch_path%3D{schema}"

    def marker():
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT to_regclass(:t)"), {"t": f"{schema}.bench_done"}).scalar()
            return conn.execute(text(f"SELECT counts FROM {schema}.bench_done")).scalar() if exists else None

    engine, seconds, counts = prepared(url, args.customers, args.touches, args.rebuild, marker)
    if seconds is not None:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE bench_done (counts text)"))
            conn.execute(text("INSERT INTO bench_done VALUES (:c)"), {"c": json.dumps(counts)})
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
        size = conn.execute(text("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                                 "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'r'"),
                            {"s": schema}).scalar()
    report = {"load_seconds": seconds, "rows": counts, "size_mb": round(int(size) / 2**20), "schema": schema,
              "operations": operations(engine, args.customers, args.samples)}
    engine.dispose()
    admin.dispose()
    return report


def table(report: dict) -> str:
    """The figures side by side, as a Markdown table."""
    names = [name for name in ("sqlite", "postgresql") if name in report]
    lines = ["| operation | " + " | ".join(f"{n} median / p95 (ms)" for n in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for i, op in enumerate(report[names[0]]["operations"]):
        cells = [f"{report[n]['operations'][i]['median_ms']:.1f} / {report[n]['operations'][i]['p95_ms']:.1f}"
                 for n in names]
        lines.append(f"| {op['operation']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--touches", type=int, default=3_000_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--database-url", help="PostgreSQL URL; the base is kept in its own schema")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--rebuild", action="store_true", help="build the base again even if one is kept")
    parser.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    args = parser.parse_args()
    report = {}
    if not args.skip_sqlite:
        print(f"sqlite: {args.customers:,} customers, {args.touches:,} touches", flush=True)
        report["sqlite"] = run_sqlite(args)
    if args.database_url:
        print(f"postgresql: {args.customers:,} customers, {args.touches:,} touches", flush=True)
        report["postgresql"] = run_postgres(args)
    if report:
        print(table(report))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()

"""Measure segment evaluation on a generated base (default 1,000,000 customers, 10,000,000 purchases).

    python benchmarks/segments_bench.py [--customers N] [--purchases M] [--postgres URL] [--skip-sqlite]
                                        [--keep]

The base is written straight into the tables (executemany on SQLite, COPY on PostgreSQL), then
``segments.stats.refresh`` precomputes statistics, RFM and predictions (timed), then each segment
is counted (timed): simple attribute / field segments target < 1 s, purchase aggregates, RFM and
replenishment < 10 s.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crm.db import make_engine, normalize_url, upgrade  # noqa: E402
from segments import count, load_library, resolve  # noqa: E402
from segments.stats import refresh  # noqa: E402

DATA = Path(__file__).with_name("data")
AS_OF = date(2026, 11, 23)
REGIONS = [f"Регион {i}" for i in range(85)]
CATEGORIES = [f"cat{i}" for i in range(38)] + ["business_cards", "football_stream"]

SEGMENTS = {
    "attribute: tv = no": {"attribute": "tv", "equals": "no"},
    "attribute: years_customer >= 5": {"attribute": "years_customer", "gte": 5},
    "field: region in 3": {"region": ["Регион 1", "Регион 2", "Регион 3"]},
    "manager": {"manager": "m7"},
    "birthday within 7 days": {"birthday_within": 7},
    "internet and no tv (2 attributes)": {"all": [{"attribute": "internet", "equals": "yes"},
                                                  {"attribute": "tv", "equals": "no"}]},
    "stat: purchase_count >= 15": {"stat": "purchase_count", "gte": 15},
    "purchased category within 30 days": {"purchased": {"category": "business_cards", "within_days": 30}},
    "purchases: sum >= 300000": {"purchases": {"metric": "sum"}, "gte": 300000},
    "purchases: count in category, 90 days >= 2": {"purchases": {"metric": "count", "category": "football_stream",
                                                                 "within_days": 90}, "gte": 2},
    "rfm: champions": {"rfm": {"group": "champions"}},
    "rfm: at risk or cannot lose": {"rfm": {"groups": ["at_risk", "cannot_lose"]}},
    "due: replenishment business_cards": {"due": {"need": "replenishment", "category": "business_cards",
                                                  "lead_days": 7}},
    "lapsed (k=2, 90 days)": {"lapsed": {"k": 2, "min_days": 90}},
    "cross-sell cat3 not cat4": {"cross_sell": {"bought": "cat3", "not_bought": "cat4"}},
    "consent: email marketing": {"consent": {"purpose": "marketing", "channel": "email"}},
}


def customer_rows(n: int, now: str):
    rng = random.Random(1)
    for i in range(1, n + 1):
        attrs = json.dumps({"tv": rng.choice(("yes", "no")), "internet": rng.choice(("yes", "no")),
                            "years_customer": rng.randint(0, 10), "wallet_size": rng.choice((20000, 50000))})
        birthday = date(1950, 1, 1) + timedelta(days=rng.randrange(20000))
        yield (i, f"C{i:07d}", f"Клиент {i}", None, birthday, REGIONS[i % len(REGIONS)], None, None, None, attrs,
               now, now)


def purchase_rows(n: int, customers: int, now: str):
    rng = random.Random(2)
    start = AS_OF - timedelta(days=3 * 365)
    for i in range(1, n + 1):
        category = CATEGORIES[rng.randrange(len(CATEGORIES))]
        yield (i, f"O{i}", rng.randint(1, customers), start + timedelta(days=rng.randrange(3 * 365)),
               f"Товар {i % 500}", category, rng.choice((1, 2, 500, 1000)) if category == "business_cards" else 1,
               rng.randint(100, 20000), "RUB", now)


def consent_rows(customers: int, now: str):
    rng = random.Random(3)
    for i in range(1, customers + 1):
        yield (i, i, "email", "marketing", rng.random() < 0.8, now, "bench", None, now)


COLUMNS = {
    "managers": "id, code, name, email, phone, active, created_at",
    "customers": "id, external_id, name, first_name, birthday, region, timezone, manager_id, preferred_channel, "
                 "attributes, created_at, updated_at",
    "purchases": "id, source_key, customer_id, purchased_on, product, category, quantity, amount, currency, "
                 "created_at",
    "consents": "id, customer_id, channel, purpose, granted, at, source, wording, recorded_at",
}


def load(engine, customers: int, purchases: int) -> float:
    started = time.perf_counter()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    managers = [(i, f"m{i}", f"Менеджер {i}", None, None, True, stamp) for i in range(1, 26)]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            for table, rows in (("managers", managers), ("customers", customer_rows(customers, stamp)),
                                ("purchases", purchase_rows(purchases, customers, stamp)),
                                ("consents", consent_rows(customers, stamp))):
                with cursor.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            cursor.execute("UPDATE customers SET manager_id = 1 + id % 25")
            for table in ("customers", "purchases", "consents", "managers"):
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            cursor.execute("ANALYZE")
        else:
            def batches(rows, size=50000):
                batch = []
                for row in rows:
                    batch.append(tuple(v.isoformat() if isinstance(v, date) else v for v in row))
                    if len(batch) >= size:
                        yield batch
                        batch = []
                if batch:
                    yield batch

            for table, rows in (("managers", managers), ("customers", customer_rows(customers, stamp)),
                                ("purchases", purchase_rows(purchases, customers, stamp)),
                                ("consents", consent_rows(customers, stamp))):
                marks = ", ".join("?" for _ in COLUMNS[table].split(","))
                for batch in batches(rows):
                    cursor.executemany(f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({marks})", batch)
            cursor.execute("UPDATE customers SET manager_id = 1 + id % 25")
            cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def run(url: str, customers: int, purchases: int) -> dict:
    engine = make_engine(url)
    upgrade(engine)
    report: dict = {"load_seconds": round(load(engine, customers, purchases), 1)}
    print(f"loaded in {report['load_seconds']}s", flush=True)
    started = time.perf_counter()
    report["refresh"] = refresh(engine)
    report["refresh_seconds"] = round(time.perf_counter() - started, 1)
    print(f"refresh {report['refresh_seconds']}s {report['refresh']}", flush=True)
    library = load_library()
    report["segments"] = {}
    for name, rule in SEGMENTS.items():
        compiled = resolve(rule, library)
        started = time.perf_counter()
        matched = count(engine, compiled, as_of=AS_OF, library=library)
        seconds = time.perf_counter() - started
        report["segments"][name] = {"count": matched, "seconds": round(seconds, 3)}
        print(f"  {name:48s} {matched:>9,} {seconds:7.3f}s", flush=True)
    engine.dispose()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--purchases", type=int, default=10_000_000)
    parser.add_argument("--postgres", help="PostgreSQL URL; a throw-away schema is used")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    report = {}
    if not args.skip_sqlite:
        DATA.mkdir(exist_ok=True)
        db = DATA / "segments-bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        print("sqlite", flush=True)
        report["sqlite"] = run(f"sqlite:///{db}", args.customers, args.purchases)
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(args.postgres)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            print("postgresql", flush=True)
            report["postgresql"] = run(f"{normalize_url(args.postgres)}?options=-csearch_path%3D{schema}",
                                       args.customers, args.purchases)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

"""Measure import throughput: N customers and M purchases from CSV into SQLite and/or PostgreSQL.

    python benchmarks/import_bench.py --customers 1000000 --purchases 5000000 \
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--skip-sqlite]

Files are generated once under benchmarks/data/ (git-ignored) in the shape a CRM exports:
semicolon CSV, Russian dates, phones in mixed formats, decimal commas.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crm.db import make_engine, normalize_url, upgrade  # noqa: E402
from crm.importing import ImportOptions, import_file  # noqa: E402

DATA = Path(__file__).with_name("data")


def write_customers(path: Path, n: int) -> None:
    rng = random.Random(1)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("external_id;name;birthday;region;manager;email;phone;attr.segment;attr.wallet_size\n")
        for i in range(n):
            phone = f"8 (9{rng.choice('01259')}{rng.randint(0, 9)}) {i % 1000:03d}-{i // 1000 % 100:02d}-{i // 100000:02d}"
            fh.write(f"C{i:07d};Клиент Номер {i};{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}."
                     f"{rng.randint(1950, 2004)};Регион {i % 80};m{i % 25};client{i}@mail{i % 50}.ru;{phone};"
                     f"s{i % 7};{rng.choice((20000, 50000, 120000))}\n")


def write_purchases(path: Path, n: int, customers: int) -> None:
    rng = random.Random(2)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("order_id;customer;date;product;category;quantity;amount\n")
        for i in range(n):
            fh.write(f"O{i:08d};C{rng.randrange(customers):07d};{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}."
                     f"{rng.randint(2019, 2026)};Товар {i % 500};cat{i % 40};{rng.randint(1, 5)};"
                     f"{rng.randint(100, 90000)},{rng.randint(0, 99):02d}\n")


def run(url: str, files: dict[str, Path], batch: int) -> dict:
    engine = make_engine(url)
    upgrade(engine)
    results = {}
    for kind in ("customers", "purchases"):
        if files.get(kind) is None:
            continue
        summary = import_file(engine, kind, files[kind], options=ImportOptions(batch_size=batch))
        results[kind] = {"rows": summary.rows, "seconds": round(summary.seconds, 1),
                         "rows_per_second": round(summary.rows_per_second), "rejected": summary.rejected}
        print(kind, results[kind], flush=True)
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--purchases", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=20000)
    parser.add_argument("--postgres", help="PostgreSQL URL; a throw-away schema is used")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    files = {"customers": DATA / f"customers-{args.customers}.csv",
             "purchases": DATA / f"purchases-{args.purchases}-{args.customers}.csv" if args.purchases else None}
    if not files["customers"].exists():
        write_customers(files["customers"], args.customers)
    if files["purchases"] is not None and not files["purchases"].exists():
        write_purchases(files["purchases"], args.purchases, args.customers)
    report = {}
    if not args.skip_sqlite:
        db = DATA / "bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        report["sqlite"] = run(f"sqlite:///{db}", files, args.batch)
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(args.postgres)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            report["postgresql"] = run(f"{normalize_url(args.postgres)}?options=-csearch_path%3D{schema}", files,
                                       args.batch)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f}s")

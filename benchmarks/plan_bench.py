"""The plan's simulator on a large base: 30 days of the shipped plan over the demo scenarios scaled up.

    python benchmarks/plan_bench.py [--customers 100000] [--days 30] [--dir /tmp/touchflow-plan-bench] [--reuse]

Builds the demo base (``touchflow demo --base-only``: the real importer, every scenario of
MISSION.md, purchases, service events and consents) with N customers into a SQLite database,
then runs ``flows.simulate.simulate`` over the shipped campaigns for the given days and reports
its time (loading the state, then the days), the fires and decisions it replayed, what it
projects, and the peak memory (RSS) of the process. ``--reuse`` keeps a base built before.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crm.db import make_engine, upgrade  # noqa: E402
from flows.plan import load_plan  # noqa: E402
from flows.simulate import schedule, simulate  # noqa: E402
from touchflow.demo import run_demo  # noqa: E402
from touchflow.settings import Settings, shipped  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/touchflow-plan-bench"))
    parser.add_argument("--reuse", action="store_true", help="Use the base already in --dir.")
    args = parser.parse_args()
    today = date.today()
    db = args.dir / "touchflow-demo.db"
    if not (args.reuse and db.is_file()):
        began = time.perf_counter()
        run_demo(args.dir, customers=args.customers, quiet=True, today=today, campaigns=False)
        print(f"base of {args.customers:,} customers built in {time.perf_counter() - began:.1f} s", flush=True)
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)  # a base built by an older tree
    plan = load_plan(shipped("campaigns"))
    start = datetime.combine(today, datetime.min.time(), tzinfo=ZoneInfo("Europe/Moscow")) + timedelta(days=1)
    fires = schedule(plan, start, args.days)
    stamps: list[float] = []
    began = time.perf_counter()
    result = simulate(engine, plan, start=start, days=args.days, settings=Settings(database_url=str(engine.url)),
                      progress=lambda done, total: stamps.append(time.perf_counter()))
    seconds = time.perf_counter() - began
    first_day = stamps[0] - began if stamps else 0.0
    report = {"customers": args.customers, "days": args.days, "fires": len(fires), "seconds": round(seconds, 1),
              "loading_and_first_day_seconds": round(first_day, 1),
              "contacts": result["totals"]["channels"], "held_back": result["totals"]["held_back"],
              "conflicts": len(result["conflicts"]), "peak_rss_mb": round(
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

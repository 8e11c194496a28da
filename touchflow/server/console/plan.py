"""The plan page: every scheduled campaign, reminder and journey (where its people are), and the simulator.

The simulation runs in the request (seconds on a base of 100,000 customers for a month; see
``benchmarks/plan_bench.py``), reads the base and writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from crm.ledger.journeys import status
from flows.plan import load_plan, overview
from flows.simulate import simulate
from touchflow.server.auth import Viewer, require
from touchflow.server.console.charts import stacked_bars
from touchflow.server.console.view import render
from touchflow.settings import campaigns_dir

LONGEST = 92  # days the console simulates at most (the command line takes up to a year)


def daily_chart(result: dict) -> str:
    """The simulated contacts per day, stacked by channel."""
    days = [day["date"] for day in result["daily"]]
    channels = sorted({c for day in result["daily"] for c in day["channels"]})
    return stacked_bars(days, {c: [day["channels"].get(c, 0) for day in result["daily"]] for c in channels},
                        label="simulated contacts per day")


def routes(engine, settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/plan")
    def plan_page(request: Request, days: int = 0, viewer: Viewer = Depends(require("campaigns.view"))) -> Response:
        plan = load_plan(campaigns_dir(settings))
        start = datetime.now(ZoneInfo(settings.default_timezone))
        rows = overview(engine, plan, start=start, weeks=4)
        result = chart = None
        days = max(0, min(days, LONGEST))
        if days:
            result = simulate(engine, plan, start=start, days=days, settings=settings)
            chart = daily_chart(result)
        journeys = [{**status(engine, e.spec.name), "steps": [step.id for step in e.spec.steps]}
                    for e in plan.entries if e.spec.kind == "journey"]
        return render(request, "plan.html", viewer, rows=rows, problems=plan.problems, result=result, chart=chart,
                      days=days, start=start, journeys=journeys)

    return router

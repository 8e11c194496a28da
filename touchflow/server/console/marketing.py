"""Marketing pages: the dashboard (touches per day and channel, reasons not contacted, recent runs) and campaigns."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from crm import activity
from crm.ledger import runs
from flows.spec import campaign_files, load_spec
from touchflow.server.auth import Viewer, require
from touchflow.server.console.charts import horizontal_bars, stacked_bars
from touchflow.server.console.view import render
from touchflow.settings import campaigns_dir


def _runs(engine, limit: int = 20) -> list[dict]:
    rows = runs.recent(engine, limit=limit)
    for row in rows:
        summary = row.get("summary") or {}
        row["selected"] = summary.get("selected", "")
        channels = summary.get("channels") or {}  # {channel: {status: count}}
        row["contacted"] = ", ".join(f"{name} {sum(counts.values())}" for name, counts in channels.items())
    return rows


def _campaigns() -> list[dict]:
    found = []
    for path in campaign_files(campaigns_dir()):
        spec = load_spec(path)
        schedule = getattr(spec, "schedule", None)
        cron = schedule.get("cron") if isinstance(schedule, dict) else getattr(schedule, "cron", None)
        found.append({"name": spec.name, "segment": spec.segment, "channels": list(spec.channels),
                      "schedule": cron, "description": spec.description})
    return found


def routes(engine, settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/dashboard")
    def dashboard(request: Request, viewer: Viewer = Depends(require("dashboard.view"))) -> Response:
        days, series = activity.touches_per_day(engine)
        return render(request, "dashboard.html", viewer,
                      touches_chart=stacked_bars(days, series, label="touches per day"),
                      reasons_chart=horizontal_bars(activity.not_contacted(engine), label="not contacted"),
                      runs=_runs(engine, 10))

    @router.get("/campaigns")
    def campaigns(request: Request, viewer: Viewer = Depends(require("campaigns.view"))) -> Response:
        return render(request, "campaigns.html", viewer, campaigns=_campaigns(), runs=_runs(engine))

    return router

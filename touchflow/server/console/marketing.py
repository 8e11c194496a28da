"""Marketing pages: the dashboard, campaigns and their runs, dry runs with sample messages, template previews.

A dry run decides everything a real run would and contacts nobody; it runs in the request (its
page shows the plan and samples when it ends). A running run's page polls its counts every two
seconds (``/runs/<id>.json``) until it ends.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from channels.render import template_names
from crm import activity
from crm.ledger import runs
from flows.preview import preview
from flows.spec import campaign_files, load_spec
from touchflow.errors import TouchflowError
from touchflow.server.auth import Viewer, log_access, require
from touchflow.server.console.charts import horizontal_bars, stacked_bars
from touchflow.server.console.view import render
from touchflow.settings import campaigns_dir


def _runs(engine, limit: int = 20, campaign: str | None = None) -> list[dict]:
    rows = runs.recent(engine, limit=limit, campaign=campaign)
    for row in rows:
        summary = row.get("summary") or {}
        row["selected"] = summary.get("selected", "")
        channels = summary.get("channels") or {}  # {channel: {status: count}}
        row["contacted"] = ", ".join(f"{name} {sum(counts.values())}" for name, counts in channels.items())
        row["contacted_total"] = sum(sum(counts.values()) for counts in channels.values())
    return rows


def _specs() -> dict:
    return {spec.name: spec for spec in map(load_spec, campaign_files(campaigns_dir()))}


def _campaigns() -> list[dict]:
    found = []
    for spec in _specs().values():
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
        recent = _runs(engine, 10)
        zone = ZoneInfo(settings.default_timezone)
        contacted = {f"{r['campaign']} {r['started_at'].astimezone(zone):%m-%d %H:%M}": r["contacted_total"]
                     for r in recent if not r["dry_run"]}
        return render(request, "dashboard.html", viewer,
                      touches_chart=stacked_bars(days, series, label="touches per day"),
                      reasons_chart=horizontal_bars(activity.not_contacted(engine), label="not contacted"),
                      runs_chart=horizontal_bars(contacted, label="contacted per run"), runs=recent)

    @router.get("/campaigns")
    def campaigns(request: Request, viewer: Viewer = Depends(require("campaigns.view"))) -> Response:
        return render(request, "campaigns.html", viewer, campaigns=_campaigns(), runs=_runs(engine))

    def spec_of(name: str):
        spec = _specs().get(name)
        if spec is None:
            raise HTTPException(404, f"no campaign {name!r} in {campaigns_dir()}")
        return spec

    @router.get("/campaigns/{name}")
    def campaign(request: Request, name: str, viewer: Viewer = Depends(require("campaigns.view"))) -> Response:
        spec = spec_of(name)
        return render(request, "campaign.html", viewer, spec=spec, spec_json=spec.model_dump_json(indent=2),
                      runs=_runs(engine, 20, campaign=name))

    @router.post("/campaigns/{name}/dry-run")
    def dry_run(request: Request, name: str, viewer: Viewer = Depends(require("campaigns.dry_run"))) -> Response:
        from flows.engine import run_campaign

        summary = run_campaign(engine, spec_of(name), dry_run=True, settings=settings)
        return RedirectResponse(f"/runs/{summary['run_id']}", status_code=303)

    def run_of(run_id: str) -> dict:
        """The run; while it runs, its counts so far are read from the history (any process's touches)."""
        found = runs.one(engine, run_id)
        if found is None:
            raise HTTPException(404, f"no run {run_id}")
        if found["status"] == "running":
            with engine.connect() as conn:
                found["summary"] = runs.summary_from_history(conn, run_id)
        return found

    @router.get("/runs/{run_id}.json")
    def run_counts(run_id: str, viewer: Viewer = Depends(require("campaigns.view"))) -> Response:
        run = run_of(run_id)
        summary = run.get("summary") or {}
        return JSONResponse({"status": run["status"], "selected": summary.get("selected"),
                             "channels": summary.get("channels"), "not_contacted": summary.get("not_contacted")})

    @router.get("/runs/{run_id}")
    def run_page(request: Request, run_id: str, viewer: Viewer = Depends(require("campaigns.view"))) -> Response:
        return render(request, "run.html", viewer, run=run_of(run_id))

    @router.get("/segments")
    def segments_page(request: Request, name: str = "", day: str = "",
                      viewer: Viewer = Depends(require("segments.view"))) -> Response:
        from segments import SegmentError, load_library, preview, resolve, why

        library = load_library()
        result, error = None, None
        if name:
            try:
                on = date.fromisoformat(day) if day else date.today()
                log_access(request, viewer, "customers", detail=f"segment preview {name}")
                result = preview(engine, resolve(name, library), limit=20, as_of=on, library=library)
                for item in result["sample"]:
                    item["why"] = "; ".join(why(item))
            except (SegmentError, ValueError) as exc:
                error = str(exc)
        return render(request, "segments.html", viewer, library=library, chosen=name, day=day, result=result,
                      error=error)

    @router.get("/templates")
    def templates(request: Request, template: str = "", customer: str = "", day: str = "",
                  viewer: Viewer = Depends(require("templates.view"))) -> Response:
        parts, offer, error = [], None, None
        if template and customer:
            try:
                on = date.fromisoformat(day) if day else date.today()
                customer_id = _customer_id(engine, customer)
                log_access(request, viewer, "card", customer_id, detail=f"template preview {template}")
                offer, parts = preview(engine, template, customer_id, day=on, settings=settings)
            except (TouchflowError, ValueError) as exc:
                error = str(exc)
        return render(request, "templates.html", viewer, names=template_names(), template=template,
                      customer=customer, day=day, parts=parts, offer=offer, error=error)

    return router


def _customer_id(engine, external_id: str) -> int:
    from flows.preview import customer_id_of

    return customer_id_of(engine, external_id)

"""The REST API under ``/api/v1``: the console's resources as JSON, for scripts, with the same role rules.

Authenticate with ``Authorization: Bearer <token>`` (``touchflow user token create NAME``) or a
console session (then unsafe methods need the ``X-CSRF-Token`` header). The schema is at
``/openapi.json`` and described for people at ``/docs`` (drawn by the server: no CDN).
Lists are keyset-paged: pass the ``next`` value of one page as ``after`` (or ``before``) of the next.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import select

from crm import timeline
from crm.cards import customer_card
from crm.ledger import access, calls, runs
from crm.models import Customer
from touchflow.server.auth import Viewer, log_access, require, signed_in
from touchflow.server.console.view import today_in

customers = Customer.__table__


class Outcome(BaseModel):
    outcome: str
    callback_on: date | None = None
    note: str | None = None


def _customer_id(engine, external_id: str, viewer: Viewer) -> int:
    """The record's id; 404 when unknown or, for a rep, not theirs (ids cannot be probed)."""
    query = select(customers.c.id).where(customers.c.external_id == external_id)
    if viewer.role == "sales":
        query = query.where(customers.c.manager_id == (viewer.manager_id or -1))
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    if found is None:
        raise HTTPException(404, f"no customer {external_id!r}")
    return found


def router(engine, settings) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["api"])

    @api.get("/me")
    def me(viewer: Viewer = Depends(signed_in)) -> dict[str, Any]:
        """Who the token or session belongs to."""
        return {"name": viewer.name, "role": viewer.role, "manager_id": viewer.manager_id}

    @api.get("/tasks")
    def tasks(after: str | None = None, limit: int = 50, viewer: Viewer = Depends(require("calls.own"))) -> dict:
        """The caller's open call tasks due today or earlier."""
        cursor = None
        if after:
            due, ident = after.split("_")
            cursor = (date.fromisoformat(due), int(ident))
        rows = calls.rep_queue(engine, viewer.manager_id or -1, due=today_in(settings.default_timezone),
                               after=cursor, limit=min(limit, 500))
        return {"tasks": rows, "next": f"{rows[-1]['due_on']}_{rows[-1]['id']}" if len(rows) == limit else None}

    @api.post("/tasks/{task_id}/outcome")
    def outcome(task_id: int, body: Outcome, viewer: Viewer = Depends(require("calls.own"))) -> dict:
        """Record a call's outcome (reached, no_answer, callback with callback_on, declined, opt_out, wrong_number)."""
        if calls.task(engine, task_id, manager_id=viewer.manager_id or -1) is None:
            raise HTTPException(404, f"no call task {task_id} in your queue")
        try:
            done = calls.complete(engine, task_id, body.outcome, callback_on=body.callback_on, note=body.note,
                                  today=today_in(settings.default_timezone))
        except calls.TaskError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"task": task_id, "outcome": body.outcome, "touch": done.touch_id, "next_task": done.next_task_id}

    @api.get("/customers/{external_id}")
    def customer(request: Request, external_id: str,
                 viewer: Viewer = Depends(require("customers.view", "customers.own"))) -> dict:
        """A customer's card: fields, addresses, consents, purchases, visits, touches (compliance; a rep: own only)."""
        customer_id = _customer_id(engine, external_id, viewer)
        log_access(request, viewer, "card", customer_id)
        return customer_card(engine, external_id)

    @api.get("/customers/{external_id}/consents")
    def consents(request: Request, external_id: str, viewer: Viewer = Depends(require("consents.view"))) -> dict:
        """The consent ledger entries of the record, oldest first."""
        customer_id = _customer_id(engine, external_id, viewer)
        log_access(request, viewer, "consents", customer_id)
        return {"consents": customer_card(engine, external_id)["consents"]}

    @api.get("/customers/{external_id}/timeline")
    def customer_timeline(request: Request, external_id: str, before: str | None = None, limit: int = 50,
                          viewer: Viewer = Depends(require("history.view"))) -> dict:
        """The person's timeline across their records, newest first (logged in the access log)."""
        customer_id = _customer_id(engine, external_id, viewer)
        log_access(request, viewer, "timeline", customer_id)
        try:
            page = timeline.timeline(engine, timeline.person_of(engine, customer_id), before=before,
                                     limit=min(limit, 500))
        except timeline.CursorError:
            raise HTTPException(400, "not a cursor of this API: pass the `next` of the previous page") from None
        return {"items": page.items, "next": page.next}

    @api.get("/access-log")
    def access_log(after: int | None = None, limit: int = 100,
                   viewer: Viewer = Depends(require("access_log.view"))) -> dict:
        """Who viewed, exported or erased whose data (ids only), oldest first."""
        rows = access.entries(engine, after=after, limit=min(limit, 1000))
        return {"entries": rows, "next": rows[-1]["id"] if len(rows) == limit else None}

    @api.get("/reports/compliance")
    def compliance_report(since: date | None = None, until: date | None = None,
                          viewer: Viewer = Depends(require("reports.view"))) -> dict:
        """Violations per rule with examples (touch and customer ids), as `touchflow compliance report`."""
        from crm.ledger.compliance import check
        from crm.ledger.policy import Policy

        bound = (lambda d, t: datetime.combine(d, t, tzinfo=timezone.utc) if d else None)
        return check(engine, since=bound(since, time.min), until=bound(until, time.max),
                     policy=Policy(default_timezone=settings.default_timezone,
                                   min_gap_hours=settings.min_gap_hours)).to_dict()

    @api.get("/campaigns")
    def campaigns(viewer: Viewer = Depends(require("campaigns.view"))) -> dict:
        """The project's campaign specs."""
        from flows.spec import campaign_files, load_spec
        from touchflow.settings import campaigns_dir

        return {"campaigns": [load_spec(path).model_dump(mode="json") for path in campaign_files(campaigns_dir())]}

    @api.get("/campaigns/{name}/report")
    def campaign_report(name: str, as_of: date | None = None, min_group: int = 30,
                        viewer: Viewer = Depends(require("campaigns.view"))) -> dict:
        """Did it work: attributed purchases and revenue per channel, spend, cost per lead, return on spend and
        the uplift over the holdout with 95 % intervals (as `touchflow campaign report NAME --json`)."""
        from flows.results import campaign_report as compute
        from touchflow.errors import InputError
        from touchflow.settings import campaigns_dir

        try:
            return compute(engine, name, campaigns_dir(settings), as_of=as_of, zone=settings.default_timezone,
                           min_group=max(2, min_group))
        except InputError as exc:
            raise HTTPException(404, str(exc)) from None

    @api.get("/plan")
    def plan(weeks: int = 4, viewer: Viewer = Depends(require("campaigns.view"))) -> dict:
        """Every campaign, reminder and journey of the plan: schedule, segment, channels, offer group, priority,
        runs and selected customers over the next ``weeks`` (as `touchflow plan show`)."""
        from flows.plan import load_plan, overview
        from touchflow.settings import campaigns_dir

        the_plan = load_plan(campaigns_dir(settings))
        start = datetime.now(timezone.utc)
        return {"start": start, "weeks": weeks, "problems": [problem for _, problem in the_plan.problems],
                "entries": overview(engine, the_plan, start=start, weeks=max(1, min(weeks, 52)))}

    @api.get("/plan/simulate")
    def plan_simulate(days: int = 30, viewer: Viewer = Depends(require("campaigns.view"))) -> dict:
        """The next ``days`` (at most 92) simulated on the current base, as `touchflow plan simulate --json`."""
        from flows.plan import load_plan
        from flows.simulate import simulate
        from touchflow.settings import campaigns_dir

        return simulate(engine, load_plan(campaigns_dir(settings)), start=datetime.now(timezone.utc),
                        days=max(1, min(days, 92)), settings=settings)

    @api.get("/journeys/{name}")
    def journey(name: str, viewer: Viewer = Depends(require("campaigns.view"))) -> dict:
        """Where a journey's people are: at each step (and due now), done, in the control group, why they left."""
        from crm.ledger.journeys import status

        return status(engine, name)

    @api.get("/runs")
    def recent_runs(campaign: str | None = None, limit: int = 20,
                    viewer: Viewer = Depends(require("campaigns.view"))) -> dict:
        """The newest campaign runs with their summaries."""
        return {"runs": runs.recent(engine, campaign=campaign, limit=min(limit, 200))}

    return api

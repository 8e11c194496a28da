"""The campaign report page: did it work? (``flows.results``: attribution, spend, uplift over the holdout).

The same figures as ``touchflow campaign report NAME`` and ``/api/v1/campaigns/NAME/report``;
this page only formats them.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from flows.results import campaign_report
from touchflow.errors import InputError
from touchflow.server.auth import Viewer, require
from touchflow.server.console.view import render
from touchflow.settings import campaigns_dir


def routes(engine, settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/campaigns/{name}/report")
    def report_page(request: Request, name: str, day: str = "",
                    viewer: Viewer = Depends(require("campaigns.view"))) -> Response:
        try:
            as_of = date.fromisoformat(day) if day else None
        except ValueError:
            raise HTTPException(400, f"day {day!r} is not a date: write it as 2026-12-31") from None
        try:
            result = campaign_report(engine, name, campaigns_dir(settings), as_of=as_of,
                                     zone=settings.default_timezone)
        except InputError as exc:
            raise HTTPException(404, str(exc)) from None
        return render(request, "campaign_report.html", viewer, report=result, day=day)

    return router

"""The sales rep's pages: today's call queue, and a call with its script and the outcome form.

A rep sees only their own tasks: another rep's task answers 404, as one that does not exist.
Outcomes are recorded through the ledger (``crm.ledger.calls.complete``), as the CLI records them.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from crm.ledger import calls
from touchflow.server.auth import Viewer, require
from touchflow.server.console.view import render

PAGE = 50


def _cursor(text: str | None) -> tuple[date, int] | None:
    if not text:
        return None
    try:
        due, ident = text.split("_")
        return date.fromisoformat(due), int(ident)
    except ValueError:
        raise HTTPException(400, "a broken page link: start from the first page") from None


def routes(engine, settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/calls")
    def queue(request: Request, after: str | None = None, viewer: Viewer = Depends(require("calls.own"))) -> Response:
        today = date.today()
        tasks = calls.rep_queue(engine, viewer.manager_id or -1, due=today, after=_cursor(after), limit=PAGE)
        next_after = f"{tasks[-1]['due_on']}_{tasks[-1]['id']}" if len(tasks) == PAGE else None
        return render(request, "calls.html", viewer, tasks=tasks, today=today, next_after=next_after)

    def own(task_id: int, viewer: Viewer) -> dict:
        found = calls.task(engine, task_id, manager_id=viewer.manager_id or -1)
        if found is None:
            raise HTTPException(404, f"no call task {task_id} in your queue")
        return found

    @router.get("/calls/{task_id}")
    def task_page(request: Request, task_id: int, viewer: Viewer = Depends(require("calls.own"))) -> Response:
        return render(request, "task.html", viewer, task=own(task_id, viewer), outcomes=calls.OUTCOMES)

    @router.post("/calls/{task_id}/outcome")
    def outcome(request: Request, task_id: int, outcome: str = Form(...), callback_on: str = Form(""),
                note: str = Form(""), viewer: Viewer = Depends(require("calls.own"))) -> Response:
        task = own(task_id, viewer)
        try:
            when = date.fromisoformat(callback_on) if callback_on else None
            calls.complete(engine, task_id, outcome, callback_on=when, note=note or None)
        except (ValueError, calls.TaskError) as exc:
            return render(request, "task.html", viewer, task=task, outcomes=calls.OUTCOMES, error=str(exc),
                          status_code=400)
        return RedirectResponse("/calls", status_code=303)

    return router

"""The sales rep's pages: today's call queue; a call with its script, the customer's card and the outcome form;
a proposal or contract generated from the card and downloaded.

A rep sees only their own tasks: another rep's task answers 404, as one that does not exist.
Outcomes are recorded through the ledger (``crm.ledger.calls.complete``), as the CLI records them.
"""

from __future__ import annotations

from datetime import date

from pathlib import Path

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import select

from crm.cards import customer_card
from crm.ledger import calls
from crm.models import Customer
from touchflow.server.auth import Viewer, log_access, require
from touchflow.server.console.view import render, today_in

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
        today = today_in(settings.default_timezone)
        tasks = calls.rep_queue(engine, viewer.manager_id or -1, due=today, after=_cursor(after), limit=PAGE)
        next_after = f"{tasks[-1]['due_on']}_{tasks[-1]['id']}" if len(tasks) == PAGE else None
        return render(request, "calls.html", viewer, tasks=tasks, today=today, next_after=next_after)

    def own(task_id: int, viewer: Viewer) -> dict:
        found = calls.task(engine, task_id, manager_id=viewer.manager_id or -1)
        if found is None:
            raise HTTPException(404, f"no call task {task_id} in your queue")
        return found

    def card_of(request: Request, viewer: Viewer, task: dict) -> dict:
        log_access(request, viewer, "card", task["customer_id"], detail=f"call task {task['id']}")
        with engine.connect() as conn:
            external = conn.execute(select(Customer.__table__.c.external_id)
                                    .where(Customer.__table__.c.id == task["customer_id"])).scalar()
        return customer_card(engine, external)

    @router.get("/calls/{task_id}")
    def task_page(request: Request, task_id: int, viewer: Viewer = Depends(require("calls.own"))) -> Response:
        task = own(task_id, viewer)
        return render(request, "task.html", viewer, task=task, outcomes=calls.OUTCOMES,
                      card=card_of(request, viewer, task))

    @router.post("/calls/{task_id}/document")
    def document(request: Request, task_id: int, kind: str = Form("proposal"),
                 viewer: Viewer = Depends(require("calls.own"))) -> Response:
        """Write a proposal or contract for the task's customer (a touch in the history) and download it."""
        from documents.proposals import DocumentError, document_templates, generate

        if kind not in document_templates():
            raise HTTPException(400, f"no document template {kind!r}; one of: {', '.join(document_templates())}")
        card = card_of(request, viewer, own(task_id, viewer))
        try:
            done = generate(engine, kind, card["customer"]["external_id"], company=settings.company_name,
                            out_dir=Path(settings.outbox_dir) / "documents", settings=settings)
        except DocumentError as exc:
            raise HTTPException(400, str(exc)) from None
        return FileResponse(done.path, filename=done.path.name, media_type=(
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"))

    @router.post("/calls/{task_id}/outcome")
    def outcome(request: Request, task_id: int, outcome: str = Form(...), callback_on: str = Form(""),
                note: str = Form(""), viewer: Viewer = Depends(require("calls.own"))) -> Response:
        task = own(task_id, viewer)
        try:
            when = date.fromisoformat(callback_on) if callback_on else None
            calls.complete(engine, task_id, outcome, callback_on=when, note=note or None,
                           today=today_in(settings.default_timezone))
        except (ValueError, calls.TaskError) as exc:
            return render(request, "task.html", viewer, task=task, outcomes=calls.OUTCOMES, error=str(exc),
                          card=card_of(request, viewer, task), status_code=400)
        return RedirectResponse("/calls", status_code=303)

    return router

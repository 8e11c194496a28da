"""Compliance pages: find a person, their timeline across records, subject-access export, erasure, the access log.

Each view of a person's data, each export and each erasure is written to the access log before
the data is read (``auth.log_access``); the log itself is readable here and downloadable as CSV.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from crm import privacy, timeline
from crm.ledger import access
from crm.models import Customer
from touchflow.console import dumps
from touchflow.server.auth import Viewer, log_access, require
from touchflow.server.console.view import render

customers = Customer.__table__
PAGE = 50


def routes(engine, settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def customer(customer_id: int) -> dict:
        with engine.connect() as conn:
            row = conn.execute(select(customers.c.id, customers.c.external_id, customers.c.name)
                               .where(customers.c.id == customer_id)).first()
        if row is None:
            raise HTTPException(404, f"no customer record {customer_id}")
        return dict(row._mapping)

    @router.get("/people")
    def people(request: Request, q: str = "", viewer: Viewer = Depends(require("customers.view"))) -> Response:
        found = []
        if q.strip():
            log_access(request, viewer, "customers", detail="search")
            found = timeline.find_customers(engine, q.strip())
        return render(request, "people.html", viewer, q=q, found=found)

    @router.get("/people/{customer_id}")
    def person(request: Request, customer_id: int, before: str | None = None,
               viewer: Viewer = Depends(require("history.view"))) -> Response:
        record = customer(customer_id)
        log_access(request, viewer, "timeline", customer_id)
        person_id = timeline.person_of(engine, customer_id)
        try:
            page = timeline.timeline(engine, person_id, before=before, limit=PAGE)
        except timeline.CursorError:
            raise HTTPException(400, "a broken page link: start from the newest page") from None
        with engine.connect() as conn:
            records = conn.execute(select(customers.c.external_id).where(
                (customers.c.person_id == person_id) | (customers.c.id == person_id))
                .order_by(customers.c.id)).scalars().all()
        return render(request, "person.html", viewer, customer=record, page=page, records=records)

    @router.get("/people/{customer_id}/export")
    def export(request: Request, customer_id: int, viewer: Viewer = Depends(require("export"))) -> Response:
        record = customer(customer_id)
        log_access(request, viewer, "export", customer_id)
        body = dumps(privacy.export(engine, record["external_id"]))
        return Response(body, media_type="application/json", headers={
            "Content-Disposition": f'attachment; filename="customer-{customer_id}.json"'})

    @router.get("/people/{customer_id}/erase")
    def erase_form(request: Request, customer_id: int, viewer: Viewer = Depends(require("erase"))) -> Response:
        record = customer(customer_id)
        log_access(request, viewer, "card", customer_id, detail="erasure form")
        return render(request, "erase.html", viewer, customer=record)

    @router.post("/people/{customer_id}/erase")
    def erase(request: Request, customer_id: int, reason: str = Form(...), confirm: str = Form(...),
              viewer: Viewer = Depends(require("erase"))) -> Response:
        record = customer(customer_id)
        if confirm.strip() != record["external_id"]:
            raise HTTPException(400, "the confirmation does not match the record's external id; nothing was erased")
        log_access(request, viewer, "erasure", customer_id, detail=reason)
        privacy.erase(engine, record["external_id"], reason)
        return RedirectResponse(f"/people/{customer_id}", status_code=303)

    @router.get("/access-log")
    def access_log(request: Request, after: int | None = None,
                   viewer: Viewer = Depends(require("access_log.view"))) -> Response:
        rows = access.entries(engine, after=after, limit=PAGE)
        next_after = rows[-1]["id"] if len(rows) == PAGE else None
        return render(request, "access_log.html", viewer, rows=rows, next_after=next_after)

    @router.get("/access-log.csv")
    def access_log_csv(request: Request, viewer: Viewer = Depends(require("access_log.view"))) -> Response:
        return Response(access.to_csv(access.entries(engine, limit=1_000_000)), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="access-log.csv"'})

    return router

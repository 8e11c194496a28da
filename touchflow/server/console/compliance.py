"""Compliance pages: people, timelines, history search, the compliance report and verify, export, erasure, access log.

Each view of a person's data, each export and each erasure is written to the access log before
the data is read (``auth.log_access``); the log itself is readable here and downloadable as CSV.
"""

from __future__ import annotations

import csv
import io
from urllib.parse import urlencode
from datetime import date, datetime, time, timezone

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
CSV_ROWS = 100_000
FILTERS = ("text", "channel", "status", "campaign", "since", "until")


def _bound(value: str, end: bool) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{value!r} is not a date: use YYYY-MM-DD") from None
    return datetime.combine(day, time.max if end else time.min, tzinfo=timezone.utc)


def _search(engine, params: dict[str, str], after: str | None, limit: int) -> timeline.Page:
    try:
        return timeline.search(engine, text=params["text"] or None, channel=params["channel"] or None,
                               status=params["status"] or None, campaign=params["campaign"] or None,
                               since=_bound(params["since"], False), until=_bound(params["until"], True),
                               after=after, limit=limit)
    except timeline.CursorError:
        raise HTTPException(400, "a broken page link: start from the newest page") from None


HEADER = ["at", "kind", "title", "customer_id", "detail"]


def _rows(items: list[dict]) -> list[list]:
    return [[item["at"].isoformat(), item["kind"], item["title"], item["customer_id"],
             "; ".join(f"{k}={v}" for k, v in item["detail"].items() if v not in (None, ""))] for item in items]


def _csv(items: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(_rows(items))
    return out.getvalue().encode("utf-8")


def _xlsx(items: list[dict]) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("history")
    sheet.append(HEADER)
    for row in _rows(items):
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


EXPORTS = {"csv": (_csv, "text/csv; charset=utf-8"),
           "xlsx": (_xlsx, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")}


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

    @router.get("/history")
    def history(request: Request, after: str | None = None, viewer: Viewer = Depends(require("history.view"))
                ) -> Response:
        params = {name: request.query_params.get(name, "").strip() for name in FILTERS}
        page = None
        if any(params.values()):
            _bound(params["since"], False), _bound(params["until"], True)  # refuse bad dates before logging
            log_access(request, viewer, "history", detail="search: " + ", ".join(k for k, v in params.items() if v))
            page = _search(engine, params, after, PAGE)
        query = urlencode({k: v for k, v in params.items() if v})
        return render(request, "history.html", viewer, params=params, page=page, query=query)

    @router.get("/history.{fmt}")
    def history_export(request: Request, fmt: str, viewer: Viewer = Depends(require("export"))) -> Response:
        if fmt not in EXPORTS:
            raise HTTPException(404, f"no export as {fmt!r}: use .csv or .xlsx")
        params = {name: request.query_params.get(name, "").strip() for name in FILTERS}
        _bound(params["since"], False), _bound(params["until"], True)
        log_access(request, viewer, "export", detail="history search: " + ", ".join(k for k, v in params.items() if v))
        items, after = [], None
        while len(items) < CSV_ROWS:
            page = _search(engine, params, after, 500)
            items += page.items
            if page.next is None:
                break
            after = page.next
        write, media = EXPORTS[fmt]
        return Response(write(items), media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="history.{fmt}"'})

    @router.get("/reports")
    def reports(request: Request, since: str = "", until: str = "", verify: bool = False,
                viewer: Viewer = Depends(require("reports.view"))) -> Response:
        from crm.ledger.audit import verify as verify_history
        from crm.ledger.compliance import check
        from crm.ledger.policy import Policy

        report = check(engine, since=_bound(since, False), until=_bound(until, True),
                       policy=Policy(default_timezone=settings.default_timezone,
                                     min_gap_hours=settings.min_gap_hours)).to_dict()
        verified = verify_history(engine) if verify else None
        return render(request, "reports.html", viewer, report=report, verified=verified, since=since, until=until)

    def log_filters(request: Request) -> dict:
        q = request.query_params
        try:
            customer = int(q["customer"]) if q.get("customer") else None
        except ValueError:
            raise HTTPException(400, "customer: a record id (a number)") from None
        if q.get("action") and q["action"] not in access.ACTIONS:
            raise HTTPException(400, f"action: one of {', '.join(access.ACTIONS)}")
        return {"username": q.get("user") or None, "customer_id": customer, "action": q.get("action") or None,
                "since": _bound(q.get("since", ""), False), "until": _bound(q.get("until", ""), True)}

    @router.get("/access-log")
    def access_log(request: Request, after: int | None = None,
                   viewer: Viewer = Depends(require("access_log.view"))) -> Response:
        rows = access.entries(engine, after=after, limit=PAGE, **log_filters(request))
        next_after = rows[-1]["id"] if len(rows) == PAGE else None
        query = urlencode({k: v for k, v in request.query_params.items() if k != "after" and v})
        return render(request, "access_log.html", viewer, rows=rows, next_after=next_after, query=query,
                      filters=request.query_params, actions=access.ACTIONS)

    @router.get("/access-log.csv")
    def access_log_csv(request: Request, viewer: Viewer = Depends(require("access_log.view"))) -> Response:
        rows = access.entries(engine, limit=1_000_000, **log_filters(request))
        return Response(access.to_csv(rows), media_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="access-log.csv"'})

    return router

"""The web console: server-rendered pages for sales reps, marketing, compliance and admins.

    view.py        the Jinja environment, languages (ru, en), times in the configured zone
    sales.py       today's calls, a call's script and outcome form
    compliance.py  people, timelines, export, erasure, the access log
    marketing.py   the dashboard and campaigns
    results.py     a campaign's report: conversions, spend, uplift over the holdout
    charts.py      SVG charts drawn on the server
    templates/, static/, locales/   package data (no CDN: the console works offline)

Who may open what is decided by ``touchflow.server.auth`` and ``permissions``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from crm import accounts
from touchflow.server.auth import Viewer, require, signed_in
from touchflow.server.console import compliance, marketing, plan, results, sales
from touchflow.server.console.view import render
from touchflow.server.permissions import HOME


def router(engine, settings) -> APIRouter:
    """Every console page (login and logout are ``auth.router``)."""
    routes = APIRouter(include_in_schema=False)

    @routes.get("/")
    def home(viewer: Viewer = Depends(signed_in)) -> Response:
        return RedirectResponse(HOME.get(viewer.role, "/login"), status_code=303)

    def users_page(request: Request, viewer: Viewer, error: str | None = None, status: int = 200) -> Response:
        return render(request, "users.html", viewer, users=accounts.list_users(engine), roles=accounts.ROLES,
                      error=error, status_code=status)

    @routes.get("/users")
    def users(request: Request, viewer: Viewer = Depends(require("users.manage"))) -> Response:
        return users_page(request, viewer)

    @routes.post("/users")
    def add_user(request: Request, name: str = Form(...), role: str = Form(...), manager: str = Form(""),
                 password: str = Form(...), viewer: Viewer = Depends(require("users.manage"))) -> Response:
        try:
            accounts.add_user(engine, name.strip(), role, password, manager_code=manager.strip() or None)
        except accounts.AccountError as exc:
            return users_page(request, viewer, str(exc), 400)
        return RedirectResponse("/users", status_code=303)

    @routes.post("/users/{name}/{action}")
    def change_user(request: Request, name: str, action: str, password: str = Form(""),
                    viewer: Viewer = Depends(require("users.manage"))) -> Response:
        try:
            if action == "disable":
                if name == viewer.name:
                    raise accounts.AccountError("you cannot disable yourself; ask another admin")
                accounts.disable(engine, name)
            elif action == "reset":
                accounts.set_password(engine, name, password)
            else:
                raise HTTPException(404, f"no user action {action!r}")
        except accounts.AccountError as exc:
            return users_page(request, viewer, str(exc), 400)
        return RedirectResponse("/users", status_code=303)

    for module in (sales, compliance, marketing, plan, results):
        routes.include_router(module.routes(engine, settings))
    return routes

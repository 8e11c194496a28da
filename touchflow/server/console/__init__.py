"""The web console: server-rendered pages for sales reps, marketing, compliance and admins.

    view.py        the Jinja environment, languages (ru, en), times in the configured zone
    sales.py       today's calls, a call's script and outcome form
    compliance.py  people, timelines, export, erasure, the access log
    marketing.py   the dashboard and campaigns
    charts.py      SVG charts drawn on the server
    templates/, static/, locales/   package data (no CDN: the console works offline)

Who may open what is decided by ``touchflow.server.auth`` and ``permissions``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from crm import accounts
from touchflow.server.auth import Viewer, require, signed_in
from touchflow.server.console import compliance, marketing, sales
from touchflow.server.console.view import render
from touchflow.server.permissions import HOME


def router(engine, settings) -> APIRouter:
    """Every console page (login and logout are ``auth.router``)."""
    routes = APIRouter(include_in_schema=False)

    @routes.get("/")
    def home(viewer: Viewer = Depends(signed_in)) -> Response:
        return RedirectResponse(HOME.get(viewer.role, "/login"), status_code=303)

    @routes.get("/users")
    def users(request: Request, viewer: Viewer = Depends(require("users.manage"))) -> Response:
        return render(request, "users.html", viewer, users=accounts.list_users(engine))

    for module in (sales, compliance, marketing):
        routes.include_router(module.routes(engine, settings))
    return routes

"""Who is asking, and may they: sessions and API tokens, roles, CSRF, and the access log.

Every console page and API route declares what it needs with ``Depends(require("permission"))``
(``permissions.ROLES``) and receives a ``Viewer``:

- no valid session or token: a page answers 303 to ``/login?next=…``, the API 401;
- logged in without the permission: 403;
- an unsafe method (POST, PUT, PATCH, DELETE) from a session must carry the session's CSRF token
  (form field ``csrf`` or header ``X-CSRF-Token``), else 403; a Bearer token needs none (a browser
  never sends one by itself).

The engine and settings are read from ``request.app.state`` (set by ``app.create_app``). The
session cookie is ``HttpOnly``, ``SameSite=Lax`` and ``Secure`` when the public URL is https. The
login form is protected by a double-submit token of its own (there is no session yet).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from crm import accounts
from crm.ledger import access
from touchflow.server.permissions import HOME, allows

COOKIE = "touchflow_session"
LOGIN_COOKIE = "touchflow_login"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Viewer:
    """The user behind a request."""

    user_id: int
    name: str
    role: str
    manager_id: int | None
    csrf: str | None   # the session's CSRF token; None when authenticated by an API token
    client: str


class LoginRequired(Exception):
    """No valid session on a page: the app answers with a redirect to the login form."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _secure(request: Request) -> bool:
    return request.app.state.settings.public_url.startswith("https://")


def current(request: Request) -> Viewer | None:
    """The viewer of a request by its Bearer token or session cookie; None when there is neither (or it is dead)."""
    engine = request.app.state.engine
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        account = accounts.token_account(engine, header[7:].strip())
    elif request.cookies.get(COOKIE):
        account = accounts.session_account(engine, request.cookies[COOKIE])
    else:
        account = None
    if account is None:
        return None
    return Viewer(account.user_id, account.name, account.role, account.manager_id, account.csrf, client_of(request))


async def _check_csrf(request: Request, viewer: Viewer) -> None:
    if request.method not in UNSAFE or viewer.csrf is None:
        return
    given = request.headers.get("x-csrf-token")
    if given is None and "form" in request.headers.get("content-type", ""):
        given = (await request.form()).get("csrf")
    if not given or not hmac.compare_digest(str(given).encode(), viewer.csrf.encode()):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and submit the form again")


def require(*permissions: str):
    """A dependency: the request's viewer, who must hold one of ``permissions`` (see the module docstring)."""

    async def dependency(request: Request) -> Viewer:
        viewer = current(request)
        if viewer is None:
            if _is_api(request):
                raise HTTPException(401, "log in or send an API token: Authorization: Bearer <token>",
                                    headers={"WWW-Authenticate": "Bearer"})
            raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if not any(allows(viewer.role, permission) for permission in permissions):
            raise HTTPException(403, f"the {viewer.role} role may not do this ({' or '.join(permissions)})")
        await _check_csrf(request, viewer)
        return viewer

    return dependency


def signed_in(request: Request) -> Viewer:
    """A dependency for what any logged-in user may open (the home page, logout, ``/api/v1/me``)."""
    viewer = current(request)
    if viewer is None:
        if _is_api(request):
            raise HTTPException(401, "log in or send an API token: Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        raise LoginRequired(request.url.path)
    return viewer


def log_access(request: Request, viewer: Viewer, action: str, customer_id: int | None = None,
               detail: str | None = None) -> None:
    """Write a view, export or erasure to the access log; call it before reading the data."""
    access.record(request.app.state.engine, user_id=viewer.user_id, username=viewer.name, role=viewer.role,
                  action=action, client=viewer.client, method=request.method, route=request.url.path,
                  customer_id=customer_id, detail=detail)


def _safe_next(target: str | None, role: str | None = None) -> str:
    if target and target.startswith("/") and not target.startswith(("//", "/\\")) and "\n" not in target:
        return target  # a path on this site only: "//host" and "/\\host" would leave it
    return HOME.get(role or "", "/")


def router(engine, settings) -> APIRouter:
    """/login (form and post) and /logout."""
    from touchflow.server.console.view import render

    routes = APIRouter(include_in_schema=False)

    def login_form(request: Request, error: str | None = None, status: int = 200) -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        response = render(request, "login.html", None, login_token=token, error=error,
                          next_url=request.query_params.get("next", ""), status_code=status)
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request))
        return response

    @routes.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        return login_form(request)

    @routes.post("/login")
    def login(request: Request, username: str = Form(...), password: str = Form(...),
              login_token: str = Form(""), next: str = Form("")) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected.encode(), login_token.encode()):
            raise HTTPException(403, "the login form expired: reload it and try again")
        try:
            account = accounts.authenticate(engine, username, password, client_of(request))
        except accounts.AccountError as exc:
            return login_form(request, str(exc), 429)
        if account is None:
            return login_form(request, "wrong name or password", 401)
        token, _ = accounts.start_session(engine, account, client_of(request))
        response = RedirectResponse(_safe_next(next, account.role), status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=_secure(request),
                            max_age=int(accounts.LIFETIME.total_seconds()))
        response.delete_cookie(LOGIN_COOKIE)
        return response

    @routes.post("/logout")
    async def logout(request: Request, viewer: Viewer = Depends(signed_in)) -> Response:
        await _check_csrf(request, viewer)
        accounts.end_session(engine, request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    return routes


def login_redirect(request: Request, exc: LoginRequired) -> Response:
    """The app's handler for ``LoginRequired``."""
    return RedirectResponse(f"/login?next={quote(exc.next_url, safe='/')}", status_code=303)

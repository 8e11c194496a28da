"""How console pages are drawn: one autoescaping Jinja environment, the language, and times in the viewer's zone.

Languages are Russian and English, from Babel catalogues (``locales/<lang>/LC_MESSAGES/console.po``)
read when first needed, no compile step. The language is the configured locale's, unless the
request asks for another with ``?lang=en`` (remembered in a cookie). Every time is shown in the
configured time zone, named beside it.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

from babel.messages.pofile import read_po
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = files("touchflow.server.console")
LANGUAGES = ("ru", "en")
LANG_COOKIE = "touchflow_lang"


@lru_cache(maxsize=None)
def catalogue(lang: str) -> dict[str, str]:
    """msgid → translation for a language (empty for a language without a catalogue)."""
    path = HERE / "locales" / lang / "LC_MESSAGES" / "console.po"
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        return {m.id: m.string for m in read_po(fh) if m.id and m.string}


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    return env


def language(request: Request) -> str:
    """The page's language: ?lang=, then the cookie, then the configured locale."""
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if asked in LANGUAGES:
        return asked
    configured = request.app.state.settings.locale[:2]
    return configured if configured in LANGUAGES else "en"


def local_time(value: Any, zone: str) -> str:
    """An instant in the configured zone, the zone named: «2026-11-23 15:04 Europe/Moscow»."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def today_in(zone: str) -> date:
    """Today's date where the business is (``default_timezone``), not where the server runs."""
    return datetime.now(ZoneInfo(zone)).date()


def render(request: Request, name: str, viewer: Any, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/NAME`` with the viewer, the language's ``_`` and the zone's ``when``."""
    lang = language(request)
    words = catalogue(lang)
    zone = request.app.state.settings.default_timezone
    page = environment().get_template(name).render(
        request=request, viewer=viewer, lang=lang, zone=zone, _=lambda text: words.get(text, text),
        when=lambda value: local_time(value, zone), **context)
    response = HTMLResponse(page, status_code=status_code)
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, samesite="lax", httponly=True)
    return response

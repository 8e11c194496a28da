"""Render message templates: one folder per message under ``templates/``, one file per channel part.

    templates/<name>/email_subject.txt   email.txt   email.html   sms.txt   telegram.html   voice.txt
                     call_script.txt     meta.yaml (optional: description, offer defaults)

Jinja2 ``SandboxedEnvironment`` with ``StrictUndefined``: a missing variable is an error naming the
template file, the line and the variable, never blank text; reaching for Python internals
(``''.__class__``, ``|attr('__class__')``) is a security error. ``.html`` parts are autoescaped.
Templates compile once per process (the environment caches them).
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any, Callable

import yaml
from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from channels.sms import SmsInfo, sms_info

SHIPPED = Path(__file__).resolve().parents[1] / "templates"
PARTS = {
    "email": ("email_subject.txt", "email.txt", "email.html"),
    "sms": ("sms.txt",),
    "telegram": ("telegram.html",),
    "voice": ("voice.txt",),
    "call": ("call_script.txt",),
}
REQUIRED = {"email": ("email_subject.txt", "email.txt")}


class TemplateError(ValueError):
    """A template could not be rendered; says which file, which line and what is wrong."""

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None,
                 variable: str | None = None) -> None:
        super().__init__(message)
        self.template, self.line, self.variable = template, line, variable


class TemplateSecurityError(TemplateError):
    """A template tried to reach Python internals (template injection)."""


@dataclass
class Rendered:
    """One channel's rendered parts."""

    channel: str
    template: str
    template_hash: str
    subject: str | None = None
    text: str = ""
    html: str | None = None
    sms: SmsInfo | None = None
    warnings: list[str] = field(default_factory=list)


def templates_dir() -> Path:
    """Where message templates live: TOUCHFLOW_TEMPLATES_DIR or the shipped ``templates/``."""
    return Path(os.environ.get("TOUCHFLOW_TEMPLATES_DIR") or SHIPPED)


@lru_cache(maxsize=64)
def _locale(value: str | None) -> Locale:
    return Locale.parse((value or "ru_RU").replace("-", "_"))


@lru_cache(maxsize=64)
def _whole_currency_pattern(locale: Locale) -> str:
    return locale.currency_formats["standard"].pattern.replace(".00", "").replace(",00", "")


def _memoised(function: Callable[..., str]) -> Callable[..., str]:
    """Cache a pure formatting filter: a campaign formats the same few dates and prices thousands of times.

    Arguments are told apart by type as well (``1`` and ``1.0`` are cached separately); unhashable
    arguments skip the cache.
    """
    cached = lru_cache(maxsize=4096, typed=True)(function)

    @wraps(function)
    def call(*args: Any, **kwargs: Any) -> str:
        try:
            return cached(*args, **kwargs)
        except TypeError as exc:
            if "unhashable" not in str(exc):
                raise
            return function(*args, **kwargs)

    return call


@_memoised
def money(amount: Any, currency: str = "RUB", locale: str = "ru_RU") -> str:
    """``1 500 ₽`` (no kopecks when the amount is whole), in the customer's locale."""
    value = Decimal(str(amount))
    loc = _locale(locale)
    if value == value.to_integral_value():
        return format_currency(value, currency, format=_whole_currency_pattern(loc), locale=loc,
                               currency_digits=False)
    return format_currency(value, currency, locale=loc)


@_memoised
def number(value: Any, locale: str = "ru_RU") -> str:
    """A number with the locale's grouping: ``12 500``."""
    return format_decimal(value, locale=_locale(locale))


@_memoised
def day_month(value: Any, locale: str = "ru_RU", pattern: str = "d MMMM") -> str:
    """``23 ноября`` (any CLDR date pattern), in the customer's locale."""
    if isinstance(value, str):
        value = date.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.date()
    return format_date(value, pattern, locale=_locale(locale))


@_memoised
def plural(count: Any, one: str, few: str, many: str | None = None, locale: str = "ru_RU") -> str:
    """``1 день``, ``2 дня``, ``5 дней``: the count and the word form its plural category takes."""
    n = int(count) if float(count).is_integer() else float(count)
    category = _locale(locale).plural_form(n)
    word = {"one": one, "few": few, "many": many or few, "other": many or few}.get(category, many or few)
    return f"{n} {word}"


class _Environment(SandboxedEnvironment):
    """The sandbox; refusing unsafe attributes with a typed error rather than an undefined value."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed in templates")


@lru_cache(maxsize=8)
def environment(root: str) -> SandboxedEnvironment:
    """The (cached) sandboxed environment for a templates root."""
    # No stat of every part on every render (auto_reload): ``_info`` checks the folder once a second
    # and drops compiled templates when a file changed.
    env = _Environment(loader=FileSystemLoader(root), undefined=StrictUndefined, auto_reload=False,
                       autoescape=lambda name: bool(name) and name.endswith((".html", ".htm", ".xml")),
                       keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(money=money, number=number, day_month=day_month, plural=plural)
    return env


def template_names(root: Path | None = None) -> list[str]:
    """Message templates available (folders with at least one channel part)."""
    root = root or templates_dir()
    known = {part for parts in PARTS.values() for part in parts}
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any((p / f).exists() for f in known))


def channels_of(name: str, root: Path | None = None) -> list[str]:
    """The channels a template has parts for."""
    folder = (root or templates_dir()) / name
    if not folder.is_dir():
        raise TemplateError(f"no template {name!r} in {root or templates_dir()}; "
                            f"available: {', '.join(template_names(root)) or 'none'}", template=name)
    return [channel for channel, parts in PARTS.items()
            if all((folder / part).exists() for part in REQUIRED.get(channel, parts[:1]))]


def template_hash(name: str, root: Path | None = None) -> str:
    """SHA-256 over the template folder's files: the version recorded with every touch."""
    folder = (root or templates_dir()) / name
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def meta(name: str, root: Path | None = None) -> dict[str, Any]:
    """The template's optional ``meta.yaml`` (description, default offer)."""
    path = (root or templates_dir()) / name / "meta.yaml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _render_part(env: SandboxedEnvironment, path: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(path).render(context).strip()
    except TemplateNotFound:
        raise TemplateError(f"{path}: no such template file", template=path) from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.name or path}, line {exc.lineno}: {exc.message}", template=path,
                            line=exc.lineno) from None
    except SecurityError as exc:
        line = _template_line(exc, path)
        raise TemplateSecurityError(f"{path}{f', line {line}' if line else ''}: unsafe template: {exc}",
                                    template=path, line=line) from None
    except UndefinedError as exc:
        line = _template_line(exc, path)
        variable = str(exc.message or exc).split("'")[-2] if "'" in str(exc) else None
        raise TemplateError(f"{path}{f', line {line}' if line else ''}: {exc.message or exc} "
                            "(give it in the context or guard it with {% if … is defined %})",
                            template=path, line=line, variable=variable) from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        line = _template_line(exc, path)
        raise TemplateError(f"{path}{f', line {line}' if line else ''}: {type(exc).__name__}: {exc}",
                            template=path, line=line) from None


def _template_line(exc: BaseException, path: str) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.replace(os.sep, "/").endswith(path):
            line = frame.lineno
    return line


_INFO: dict[tuple[str, str], tuple[tuple, str, list[str], frozenset[str]]] = {}
_CHECKED: dict[tuple[str, str], float] = {}


def _info(name: str, root: Path) -> tuple[str, list[str], frozenset[str]]:
    """(version hash, channels, file names) of a template, recomputed when one of its files changes.

    The folder is looked at once a second at most; when it changed, compiled templates are dropped
    so that the next render reads the new files.
    """
    folder = root / name
    key = (str(root), name)
    cached = _INFO.get(key)
    now = time.monotonic()
    if cached is not None and now - _CHECKED.get(key, 0.0) < 1.0:
        return cached[1], cached[2], cached[3]
    _CHECKED[key] = now
    try:
        signature = tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(folder)))
    except FileNotFoundError:
        signature = ()
    if cached is None or cached[0] != signature:
        environment(str(root)).cache.clear()
        cached = (signature, template_hash(name, root) if signature else "", channels_of(name, root),
                  frozenset(entry[0] for entry in signature))
        _INFO[key] = cached
    return cached[1], cached[2], cached[3]


def render(name: str, channel: str, context: dict[str, Any], *, root: Path | None = None,
           sms_max_segments: int = 3, sms_over_limit: str = "refuse") -> Rendered:
    """Render template ``name`` for ``channel`` with ``context``; raise TemplateError on any problem."""
    root = root or templates_dir()
    version, available, files = _info(name, root)
    if channel not in available:
        raise TemplateError(f"template {name!r} has no {channel} part; it has: {', '.join(available) or 'none'} "
                            f"(files: {', '.join(PARTS.get(channel, ('?',)))})", template=name)
    env = environment(str(root))
    result = Rendered(channel=channel, template=name, template_hash=version)
    if channel == "email":
        result.subject = " ".join(_render_part(env, f"{name}/email_subject.txt", context).split())
        result.text = _render_part(env, f"{name}/email.txt", context)
        if "email.html" in files:
            result.html = _render_part(env, f"{name}/email.html", context)
    elif channel == "telegram":
        result.html = _render_part(env, f"{name}/telegram.html", context)
        result.text = result.html
    else:
        result.text = _render_part(env, f"{name}/{PARTS[channel][0]}", context)
    if channel == "sms":
        result.sms = sms_info(result.text)
        if result.sms.segments > sms_max_segments:
            message = (f"{name}/sms.txt renders to {result.sms.segments} SMS segments ({result.sms.encoding}, "
                       f"{result.sms.length} characters); the limit is {sms_max_segments}")
            if sms_over_limit == "refuse":
                raise TemplateError(message + ": shorten it or raise TOUCHFLOW_SMS_MAX_SEGMENTS",
                                    template=f"{name}/sms.txt")
            result.warnings.append(message)
    return result

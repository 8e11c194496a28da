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
from functools import lru_cache, update_wrapper
from pathlib import Path
from typing import Any

import yaml
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
)
from markupsafe import Markup

from channels.render import russian
from channels.render.filters import (
    by_gender,
    day_month,
    decimal,
    in_sentence,
    money,
    number,
    plural,
    relative_days,
    with_verb,
)
from channels.render.limits import (
    BoundedFormatter,
    RenderLimitExceeded,
    RenderTimeout,
    bounded_filters,
    bounded_lipsum,
    check_method,
    limited,
    safe_binop,
    sized_join,
)
from channels.render.sms import SmsInfo, sms_info
from touchflow.errors import InputError
from touchflow.settings import get_settings, project_dir, shipped

PARTS = {
    "email": ("email_subject.txt", "email.txt", "email.html"),
    "sms": ("sms.txt",),
    "telegram": ("telegram.html",),
    "voice": ("voice.txt",),
    "call": ("call_script.txt",),
}
REQUIRED = {"email": ("email_subject.txt", "email.txt")}


class TemplateError(InputError):
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
    unsubscribe_url: str | None = None  # the link the body carries, for the List-Unsubscribe header


def template_roots() -> list[Path]:
    """Where templates are looked for, in order: the project's (``templates_dir``, else the project's
    ``templates/``), then the shipped ones. A project folder named like a shipped one replaces it whole.

    Worked out once per settings object (settings are read once per process).
    """
    settings = get_settings()
    cached = _ROOTS_OF.get(id(settings))
    if cached is None or cached[0] is not settings:
        project = project_dir()
        own = Path(settings.templates_dir) if settings.templates_dir else (
            project / "templates" if project is not None else None)
        roots = [own, shipped("templates")] if own is not None and own.is_dir() else [shipped("templates")]
        cached = _ROOTS_OF[id(settings)] = (settings, roots)
    return cached[1]


_ROOTS_OF: dict[int, tuple[Any, list[Path]]] = {}


def templates_dir() -> Path:
    """The first place templates are looked for (the project's, else the shipped ones)."""
    return template_roots()[0]


_ROOTS: dict[tuple[tuple[Path, ...], str], tuple[float, Path]] = {}


def template_root(name: str) -> Path:
    """The root holding template ``name`` (the first of ``template_roots`` that has the folder), looked up once a second."""
    roots = template_roots()
    key = (tuple(roots), name)
    cached = _ROOTS.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < 1.0:
        return cached[1]
    root = next((r for r in roots if (r / name).is_dir()), roots[0])
    _ROOTS[key] = (now, root)
    return root


class _Compiler(CodeGenerator):
    """Jinja's code generator, with ``a ~ b`` joined through ``environment.sized_join`` (a bounded value)."""

    def visit_Concat(self, node: Any, frame: Any) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.sized_join({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Formatter(BoundedFormatter, SandboxedFormatter):
    """``str.format`` in templates: sandboxed, widths and length bounded."""


class _EscapeFormatter(BoundedFormatter, SandboxedEscapeFormatter):
    """``Markup.format`` in templates: sandboxed, escaped, widths and length bounded."""


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox: no Python internals, no changing the values a template is given, no huge values in one step.

    Every operator, method call, ``~`` and filter that could build a value much bigger than its
    input goes through ``channels.render.limits`` first.
    """

    intercepted_binops = frozenset(["*", "**", "+", "%"])
    code_generator_class = _Compiler

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed in templates")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return safe_binop(operator, left, right)

    @staticmethod
    def sized_join(join: Any, values: tuple) -> str:
        return sized_join(join, values)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)) and not isinstance(__obj, type):
            args = check_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        """``str.format`` / ``format_map`` through a formatter that bounds widths and the result's length."""
        if super().wrap_str_format(value) is None:
            return None
        text, is_map = value.__self__, value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            formatter = _EscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) else _Formatter(self)
            return type(text)(formatter.vformat(text, args, kwargs))

        return update_wrapper(checked, value)


@lru_cache(maxsize=8)
def environment(root: str) -> SandboxedEnvironment:
    """The (cached) sandboxed environment for a templates root."""
    # No stat of every part on every render (auto_reload): ``_info`` checks the folder once a second
    # and drops compiled templates when a file changed.
    env = _Environment(loader=FileSystemLoader(root), undefined=StrictUndefined, auto_reload=False,
                       autoescape=lambda name: bool(name) and name.endswith((".html", ".htm", ".xml")),
                       keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(money=money, number=number, day_month=day_month, plural=plural, in_sentence=in_sentence)
    env.filters.update(decimal=decimal, agree=russian.agree, inflect=russian.inflect, verb=russian.verb,
                       agree_verb=russian.agree_verb, month_in=russian.month_in, relative_days=relative_days,
                       passed=russian.passed, remaining=russian.remaining, with_verb=with_verb)
    env.globals["g"] = by_gender
    env.filters.update(bounded_filters(env.filters))
    env.globals["lipsum"] = bounded_lipsum(env.globals["lipsum"])
    return env


def template_names(root: Path | None = None) -> list[str]:
    """Message templates available (folders with at least one channel part), the project's and the shipped."""
    known = {part for parts in PARTS.values() for part in parts}
    return sorted({p.name for base in ([root] if root else template_roots()) for p in base.iterdir()
                   if p.is_dir() and any((p / f).exists() for f in known)})


def channels_of(name: str, root: Path | None = None) -> list[str]:
    """The channels a template has parts for."""
    folder = (root or template_root(name)) / name
    if not folder.is_dir():
        places = ", ".join(str(r) for r in ([root] if root else template_roots()))
        raise TemplateError(f"no template {name!r} in {places}; "
                            f"available: {', '.join(template_names(root)) or 'none'}", template=name)
    return [channel for channel, parts in PARTS.items()
            if all((folder / part).exists() for part in REQUIRED.get(channel, parts[:1]))]


def template_hash(name: str, root: Path | None = None) -> str:
    """SHA-256 over the template folder's files: the version recorded with every touch."""
    folder = (root or template_root(name)) / name
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def meta(name: str, root: Path | None = None) -> dict[str, Any]:
    """The template's optional ``meta.yaml`` (description, default offer)."""
    path = (root or template_root(name)) / name / "meta.yaml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _render_part(env: SandboxedEnvironment, path: str, context: dict[str, Any], *, timeout: float = 2.0,
                 max_bytes: int = 1_000_000) -> str:
    try:
        template = env.get_template(path)
        return limited(lambda: template.generate(context), seconds=timeout, max_bytes=max_bytes).strip()
    except (RenderLimitExceeded, RenderTimeout) as exc:
        advice = "simplify its loops" if isinstance(exc, RenderTimeout) else "make it build smaller values"
        raise TemplateError(f"{path}: the template {exc} (limits: {timeout:g} s, {max_bytes:,} bytes); {advice}",
                            template=path) from None
    except (MemoryError, RecursionError) as exc:
        need = "more memory than there is" if isinstance(exc, MemoryError) else "too deep a recursion"
        raise TemplateError(f"{path}: the template needs {need} ({type(exc).__name__}); simplify it",
                            template=path) from None
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
    except (TemplateRuntimeError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        line = _template_line(exc, path)
        raise TemplateError(f"{path}{f', line {line}' if line else ''}: {type(exc).__name__}: {exc}",
                            template=path, line=line) from None
    except Exception as exc:  # noqa: BLE001 - anything else a template does wrong is that message's failure
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
           sms_max_segments: int = 3, sms_over_limit: str = "refuse", timeout: float = 2.0,
           max_bytes: int = 1_000_000) -> Rendered:
    """Render template ``name`` for ``channel`` with ``context``; raise TemplateError on any problem."""
    root = root or template_root(name)
    version, available, files = _info(name, root)
    if channel not in available:
        raise TemplateError(f"template {name!r} has no {channel} part; it has: {', '.join(available) or 'none'} "
                            f"(files: {', '.join(PARTS.get(channel, ('?',)))})", template=name)
    env = environment(str(root))
    result = Rendered(channel=channel, template=name, template_hash=version)

    def part(file: str) -> str:
        return _render_part(env, f"{name}/{file}", context, timeout=timeout, max_bytes=max_bytes)

    if channel == "email":
        result.subject = " ".join(part("email_subject.txt").split())
        result.text = part("email.txt")
        if "email.html" in files:
            result.html = part("email.html")
    elif channel == "telegram":
        result.html = part("telegram.html")
        result.text = result.html
    else:
        result.text = part(PARTS[channel][0])
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

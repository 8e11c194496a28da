"""Bounds on one render: its time, the size of what it writes, and of any value it builds in one step.

A template is a program a marketer wrote; a loop over a big list, a nested loop or a value built to
fill the memory must cost one message its render, never a campaign its run.

* Time: ``limited`` streams the template's output while a watcher thread interrupts the rendering
  thread once its time is up (``PyThreadState_SetAsyncExc``, which takes effect between two
  bytecodes). The watcher shoots only while that thread is still inside ``limited`` (it looks at
  the thread's stack), and again every ``REFIRE`` seconds in case something swallowed the first
  shot (``RenderTimeout`` is a ``BaseException`` so that ``except Exception`` does not); no shot
  can land after the render, in whatever the thread does next. A forked child starts with a fresh
  lock and no deadlines.
* Size: the output is counted as it streams (``bounded``).
* Values: no single step may build a string or list longer (as text) than the largest message
  (``max_bytes``): ``*``, ``+``, ``~``, ``%``, ``str.format``, the width of a format or of
  ``center`` / ``indent``, ``replace``, ``join``, ``wordwrap``, ``translate``, big integers. Each is
  checked before it allocates anything. ``templates._Environment`` routes the template's operators,
  method calls and filters through these checks.
"""

from __future__ import annotations

import ctypes
import os
import re
import string
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import wraps
from types import FrameType
from typing import Any

MAX_REPEAT = 100_000      # the longest string or list a template may build with * in one step
MAX_WIDTH = 1_000         # the widest field of a format, center, indent, zfill…
MAX_INT_BITS = 100_000    # the biggest integer (~30,000 digits) * or ** may build
REFIRE = 0.1              # seconds between two shots at a render that is still running
DEFAULT_MAX_VALUE = 1_000_000


class RenderLimitExceeded(Exception):
    """A render ran too long, wrote too much or built too big a value."""


class RenderTimeout(BaseException):
    """Raised inside the rendering thread when its time is up.

    A ``BaseException``, like ``KeyboardInterrupt``: code on the template's path that catches
    ``Exception`` (a careless filter, a method of a value) cannot swallow it.
    """


# ---------------------------------------------------------------- time

@dataclass(eq=False)
class _Deadline:
    at: float
    frame: FrameType          # the ``limited`` call doing the render: shots only while it is on the stack
    shot: float = 0.0         # when the watcher last fired at it (0: never)
    done: bool = False        # the render is finishing: never shoot again


_lock = threading.Lock()
_deadlines: dict[int, _Deadline] = {}   # thread id → its render's deadline
_watcher: threading.Thread | None = None
_local = threading.local()               # max_value: the current render's limit for one value


def _after_fork_in_child() -> None:
    """A forked child has only the forking thread: the lock may have been held by the parent's watcher."""
    global _lock, _watcher
    _lock = threading.Lock()
    _deadlines.clear()
    _watcher = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _set_async(thread_id: int, exception: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exception) if exception else None)


def _inside(thread_id: int, frame: FrameType) -> bool:
    """Whether ``frame`` is on the thread's stack right now (the GIL is held: the stack cannot move)."""
    current = sys._current_frames().get(thread_id)
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


def _watch() -> None:
    while True:
        time.sleep(0.02)
        now = time.monotonic()
        with _lock:
            for thread_id, deadline in list(_deadlines.items()):
                if now < deadline.at or now - deadline.shot < REFIRE:
                    continue
                if not _inside(thread_id, deadline.frame):  # left by a render that ended: drop it, never shoot
                    del _deadlines[thread_id]
                elif not deadline.done:
                    deadline.shot = now
                    _set_async(thread_id, RenderTimeout)


def _start_watcher() -> None:
    global _watcher
    with _lock:
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_watch, name="render-time-limit", daemon=True)
            _watcher.start()


def _settle(thread_id: int, deadline: _Deadline) -> bool:
    """Remove a finished render's deadline and any shot not yet landed; True when the watcher fired at it.

    The deadline is already ``done`` (no new shot); one fired just before may land while this
    runs: it is caught and the removal done again, so the thread never leaves the render with an
    exception still pending.
    """
    landed = False
    while True:
        try:
            with _lock:
                if _deadlines.get(thread_id) is deadline:
                    del _deadlines[thread_id]
            _set_async(thread_id, None)
            return landed or deadline.shot > 0
        except RenderTimeout:
            landed = True


def limited(produce: Callable[[], Iterator[str]], *, seconds: float, max_bytes: int) -> str:
    """The text ``produce()`` streams, refused once it takes more than ``seconds`` or writes more than ``max_bytes``.

    Values the template builds are held to ``max_bytes`` each as well (see the module's docstring).
    """
    if _watcher is None or not _watcher.is_alive():
        _start_watcher()
    _local.max_value = max_bytes
    thread_id = threading.get_ident()
    deadline = _Deadline(time.monotonic() + seconds, sys._getframe())
    with _lock:
        _deadlines[thread_id] = deadline
    try:
        return bounded(produce(), max_bytes)
    finally:
        deadline.done = True  # first, in one bytecode: from here on the watcher does not shoot
        if _settle(thread_id, deadline):
            raise RenderTimeout(f"took longer than {seconds:g} s")


def bounded(chunks: Iterator[str], max_bytes: int) -> str:
    """Join a template's streamed output, refusing it once it writes more than ``max_bytes`` in UTF-8.

    Characters are counted as they stream (a character is at least one byte, so an endless loop
    stops early); the exact byte count is taken once, at the end, only for output that could be over.
    """
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise RenderLimitExceeded(f"writes more than {max_bytes:,} bytes")
        parts.append(chunk)
    text = "".join(parts)
    if size * 4 > max_bytes and len(text.encode()) > max_bytes:
        raise RenderLimitExceeded(f"writes more than {max_bytes:,} bytes")
    return text


# ---------------------------------------------------------------- values built in one step

def _cap() -> int:
    return getattr(_local, "max_value", DEFAULT_MAX_VALUE)


def weight(value: Any, cap: int) -> int:
    """About how many characters ``value`` makes as text; stops counting past ``cap``.

    Containers count their items (a list of one long string repeated is as long as its text).
    """
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, (list, tuple)):
        total = len(value)
        for item in value:
            total += weight(item, cap)
            if total > cap:
                break
        return total
    return 8


def check_size(size: int, what: str) -> None:
    """Refuse a value of ``size`` characters built by ``what`` when it is longer than the largest message."""
    cap = _cap()
    if size > cap:
        raise RenderLimitExceeded(f"builds a value of more than {cap:,} characters with {what}")


def check_width(width: Any, what: str) -> None:
    """Refuse a field width (or precision, or fill count) wider than ``MAX_WIDTH``."""
    if isinstance(width, int) and width > MAX_WIDTH:
        raise RenderLimitExceeded(f"asks for a width of {width:,} with {what} (at most {MAX_WIDTH:,})")


def _check_int(value: Any, bits: int, operator: str) -> None:
    if isinstance(value, int) and bits > MAX_INT_BITS:
        raise RenderLimitExceeded(f"builds an integer of {bits:,} bits with {operator}")


def safe_repeat(left: object, right: object) -> None:
    """Refuse ``*`` that would build a string or list longer than ``MAX_REPEAT`` items (or the largest message)."""
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, (str, list, tuple, bytes)) and isinstance(count, int) and count > 0:
            if len(sequence) * count > MAX_REPEAT:
                raise RenderLimitExceeded(f"builds a value of {len(sequence) * count:,} items with *")
            check_size(weight(sequence, _cap()) * count, "*")


_PERCENT = re.compile(r"%(?:\(([^)]*)\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])")


def _number(digits: str) -> int:
    return int(digits) if len(digits) < 20 else 10 ** 19


def check_percent(text: str, args: Any) -> None:
    """Refuse ``text % args`` whose widths are too wide or whose result would be longer than the largest message."""
    cap, values = _cap(), (args if isinstance(args, tuple) else (args,))
    taken, size = iter(values), len(text)
    for key, width, precision, kind in _PERCENT.findall(text):
        if kind == "%":
            continue
        for number in (width, precision):
            number = next(taken, 0) if number == "*" else _number(number or "0")
            check_width(number, "% formatting")
            size += number if isinstance(number, int) else 0
        size += weight(args.get(key, "") if key and isinstance(args, Mapping) else next(taken, ""), cap)
        if size > cap:
            break
    check_size(size, "% formatting")


def safe_binop(operator: str, left: Any, right: Any) -> Any:
    """``left <operator> right`` for the operators a template may use to build big values (*, **, +, %)."""
    if operator == "*":
        safe_repeat(left, right)
        if isinstance(left, int) and isinstance(right, int):
            _check_int(left, left.bit_length() + right.bit_length(), "*")
        return left * right
    if operator == "**":
        if isinstance(right, (int, float)) and abs(right) > 100:
            raise RenderLimitExceeded(f"raises to the power {right}")
        if isinstance(left, int) and isinstance(right, int) and right > 1:
            _check_int(left, left.bit_length() * right, "**")
        return left ** right
    if operator == "+":
        if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
            cap = _cap()
            check_size(weight(left, cap) + weight(right, cap), "+")
        return left + right
    if operator == "%":
        if isinstance(left, str):
            check_percent(left, right)
        return left % right
    raise RenderLimitExceeded(f"operator {operator} is not bounded")


def sized_join(join: Callable[[Any], str], values: tuple) -> str:
    """``a ~ b ~ …`` (Jinja's concatenation), refused when the result would be longer than the largest message."""
    cap, size = _cap(), 0
    for value in values:
        size += weight(value, cap)
        if size > cap:
            check_size(size, "~")
    return join(values)


def _materialise(items: Any, sep_length: int, what: str) -> list:
    """The items of an iterable, refused as soon as joining them would be too long (before all exist)."""
    cap, size, kept = _cap(), 0, []
    for item in items:
        size += weight(item, cap) + sep_length
        if size > cap:
            check_size(size, what)
        kept.append(item)
    return kept


def _replaced_size(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(text, (str, bytes)) or not isinstance(old, type(text)) or not isinstance(new, type(text)):
        return 0
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def check_method(text: str | bytes, name: str, args: tuple, kwargs: dict) -> tuple:
    """Check a str / bytes method a template calls; returns ``args`` (``join``'s iterable made a checked list)."""
    if name in ("center", "ljust", "rjust", "zfill"):
        check_width(args[0] if args else kwargs.get("width"), name)
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        check_width(tabsize, name)
        check_size(len(text) + text.count("\t" if isinstance(text, str) else b"\t") * tabsize, name)
    elif name == "replace":
        check_size(_replaced_size(text, *args[:3], **kwargs), "replace")
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((weight(v, _cap()) for v in args[0].values()), default=1)
        check_size(len(text) * max(1, longest), "translate")
    elif name == "join" and args:
        return (_materialise(args[0], len(text), "join"),) + tuple(args[1:])
    return args


# ---------------------------------------------------------------- filters and globals that can amplify

def bounded_filters(filters: Mapping[str, Callable]) -> dict[str, Callable]:
    """Checked versions of the built-in filters that can build a value much bigger than their input."""
    center, indent, fmt, replace, join, wordwrap = (filters[name] for name in (
        "center", "indent", "format", "replace", "join", "wordwrap"))

    @wraps(center)
    def do_center(value: Any, width: int = 80) -> str:
        check_width(width, "center")
        return center(value, width)

    @wraps(indent)
    def do_indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        prefix = width if isinstance(width, int) else len(str(width))
        check_width(prefix, "indent")
        check_size(len(str(s)) + (str(s).count("\n") + 1) * prefix, "indent")
        return indent(s, width, first, blank)

    @wraps(fmt)
    def do_format(value: Any, *args: Any, **kwargs: Any) -> str:
        check_percent(str(value), kwargs or args)
        return fmt(value, *args, **kwargs)

    @wraps(replace)
    def do_replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
        check_size(_replaced_size(str(s), str(old), str(new), -1 if count is None else count), "replace")
        return replace(eval_ctx, s, old, new, count)

    @wraps(join)
    def do_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
        return join(eval_ctx, _materialise(value, len(str(d)), "join"), d, attribute)

    @wraps(wordwrap)
    def do_wordwrap(environment: Any, s: Any, width: int = 79, break_long_words: bool = True,
                    wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
        text, glue = str(s), len(wrapstring) if wrapstring else 1
        breaks = len(text) // max(1, width) + text.count(" ") + text.count("\n") + 1
        check_size(len(text) + breaks * glue, "wordwrap")
        return wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    return {"center": do_center, "indent": do_indent, "format": do_format, "replace": do_replace,
            "join": do_join, "wordwrap": do_wordwrap}


def bounded_lipsum(lipsum: Callable) -> Callable:
    """``lipsum`` with at most 100 paragraphs of at most 1,000 words."""
    @wraps(lipsum)
    def generate(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
        if isinstance(n, int) and n > 100 or isinstance(max, int) and max > 1000:
            raise RenderLimitExceeded("asks lipsum for more than 100 paragraphs of 1,000 words")
        return lipsum(n, html, min, max)
    return generate


class BoundedFormatter(string.Formatter):
    """Mixed into Jinja's sandboxed formatters: each field's width checked, the result's length counted."""

    size = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):
            check_width(_number(number), "str.format")
        text = super().format_field(value, format_spec)
        self.size += len(text)
        check_size(self.size, "str.format")
        return text

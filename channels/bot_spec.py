"""The Telegram bot's script, read from a YAML file: FAQ answers, the order intent, the fixed replies.

Article 001 asks a chat bot for three things: answer the FAQ prepared in advance, tell about
products and offers, take requests and orders. The file (setting ``telegram_bot_file``; the
shipped example is ``templates/bot/bot.yaml``) holds:

    faq:        entries of ``id``, ``keywords`` (words or phrases) and ``answer`` (a template)
    order:      ``keywords``, ``due_in_days``, ``without_rep`` (note or call_task) and the answers
                ``call_task_answer`` / ``note_answer``
    fallback:   the answer when nothing matches
    linked, link_refused, invitation:  the answers to ``/start <token>`` and to a stranger's ``/start``

Matching is on normalised words: lower case, ё → е, each word reduced to its dictionary form by
pymorphy3 ("доставку", "доставкой" → "доставка"). A keyword matches when all its words are in the
message. The entry with the most specific match wins (its longest matched keyword, then the number
of its keywords matched: "как оформить" beats "оформить"); on a tie the order intent (a missed
order costs more than an extra call), then the first entry in the file. Answers are Jinja templates
(sandboxed, undefined names are errors) over ``name``, ``rep``, ``due``, ``task``, ``text`` and
``reason``; they are checked when the file is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from touchflow.errors import ConfigError
from touchflow.settings import Settings, get_settings, shipped

_WORD = re.compile(r"[0-9a-zа-я]+(?:-[0-9a-zа-я]+)*")
VARIABLES = {"name": "Анна", "rep": "Иван Петров", "due": "08.12.2026", "task": 1, "text": "текст",
             "reason": "причина"}  # what a template may use (sample values for the load-time check)
TOP = {"faq", "order", "fallback", "linked", "link_refused", "invitation"}
ORDER_KEYS = {"keywords", "due_in_days", "without_rep", "call_task_answer", "note_answer"}
FAQ_KEYS = {"id", "keywords", "answer"}
_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class BotSpecError(ConfigError):
    """The bot file is missing, not YAML, or an entry lacks a field or has a wrong one."""


@lru_cache(maxsize=65536)
def lemma(word: str) -> str:
    """The dictionary form of a Russian word (the word itself when pymorphy3 does not know better)."""
    from channels.render.russian import parse

    readings = parse(word)
    return readings[0].normal_form.replace("ё", "е") if readings else word


def words(text: str) -> tuple[str, ...]:
    """The message's words normalised for matching: lower case, ё → е, dictionary forms."""
    return tuple(lemma(w) for w in _WORD.findall((text or "").lower().replace("ё", "е")))


@dataclass(frozen=True)
class Entry:
    """A FAQ entry or the order intent: the keywords (each a tuple of normalised words) and the answer."""

    id: str
    keywords: tuple[tuple[str, ...], ...]
    answer: str

    def score(self, said: set[str]) -> tuple[int, int]:
        """(words of the longest keyword found whole in the message, keywords found); (0, 0): no match."""
        found = [len(k) for k in self.keywords if k and set(k) <= said]
        return (max(found), len(found)) if found else (0, 0)


@dataclass(frozen=True)
class Intent:
    """What a message asks for: ``order``, a FAQ entry's id, or ``fallback``."""

    kind: str  # order, faq or fallback
    id: str
    answer: str


@dataclass
class BotSpec:
    """The loaded, checked bot file."""

    path: str
    faq: list[Entry]
    order: Entry
    note_answer: str
    fallback: str
    linked: str
    link_refused: str
    invitation: str
    due_in_days: int = 1
    without_rep: str = "note"

    def match(self, text: str) -> Intent:
        """The intent of ``text`` (see the module docstring for the rule)."""
        said = set(words(text))
        best, best_score = None, (0, 0)
        for entry in [self.order, *self.faq]:
            score = entry.score(said)
            if score > best_score:
                best, best_score = entry, score
        if best is None:
            return Intent("fallback", "fallback", self.fallback)
        return Intent("order" if best is self.order else "faq", best.id, best.answer)


def render(template: str, **values: Any) -> str:
    """An answer with its values (missing ones are empty); sandboxed like every template."""
    return _env.from_string(template).render({**{k: "" for k in VARIABLES}, **values}).strip()


def _fail(path: str, where: str, problem: str) -> BotSpecError:
    return BotSpecError(f"{path}: {where}: {problem}")


def _text(path: str, where: str, value: Any, *, required: bool = True) -> str:
    """A non-empty answer template that compiles and renders with every variable."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, where, "expected a non-empty text (the answer to send)")
    try:
        _env.from_string(value).render(VARIABLES)
    except TemplateError as exc:
        raise _fail(path, where, f"the template does not render: {exc} (it may use {', '.join(VARIABLES)})") from None
    return value


def _keywords(path: str, where: str, value: Any) -> tuple[tuple[str, ...], ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(k, str) and k.strip() for k in value):
        raise _fail(path, where, "expected a list of words or phrases, e.g. [доставка, привезти]")
    found = tuple(words(k) for k in value)
    empty = [k for k, w in zip(value, found) if not w]
    if empty:
        raise _fail(path, where, f"{empty[0]!r} has no words to match (letters or digits)")
    return found


def _unknown(path: str, where: str, data: dict, allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise _fail(path, where, f"unknown field {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _faq(path: str, items: Any) -> list[Entry]:
    if not isinstance(items, list):
        raise _fail(path, "faq", "expected a list of entries with id, keywords and answer")
    entries, seen = [], set()
    for n, item in enumerate(items, 1):
        where = f"faq entry {n}"
        if not isinstance(item, dict):
            raise _fail(path, where, "expected a mapping with id, keywords and answer")
        _unknown(path, where, item, FAQ_KEYS)
        ident = item.get("id")
        if not isinstance(ident, str) or not ident.strip():
            raise _fail(path, where, "field 'id': expected a short name, e.g. delivery")
        if ident in seen or ident in ("order", "fallback"):
            raise _fail(path, f"{where} ({ident})", "field 'id': already used; ids must be unique")
        seen.add(ident)
        where = f"{where} ({ident})"
        entries.append(Entry(ident, _keywords(path, f"{where}: field 'keywords'", item.get("keywords")),
                             _text(path, f"{where}: field 'answer'", item.get("answer"))))
    return entries


def _order(path: str, data: Any) -> tuple[Entry, str, int, str]:
    if not isinstance(data, dict):
        raise _fail(path, "order", "expected a mapping with keywords, call_task_answer and note_answer")
    _unknown(path, "order", data, ORDER_KEYS)
    due = data.get("due_in_days", 1)
    if not isinstance(due, int) or isinstance(due, bool) or not 0 <= due <= 30:
        raise _fail(path, "order: field 'due_in_days'", "expected a whole number of days from 0 to 30")
    without = data.get("without_rep", "note")
    if without not in ("note", "call_task"):
        raise _fail(path, "order: field 'without_rep'", "expected note (leave the order in the history) or "
                                                        "call_task (give it to the least loaded rep)")
    entry = Entry("order", _keywords(path, "order: field 'keywords'", data.get("keywords")),
                  _text(path, "order: field 'call_task_answer'", data.get("call_task_answer")))
    return entry, _text(path, "order: field 'note_answer'", data.get("note_answer")), due, without


def parse_spec(data: Any, path: str) -> BotSpec:
    """Check a bot file's content; every error names the file, the entry and the field."""
    if not isinstance(data, dict):
        raise _fail(path, "top level", "expected a mapping with faq, order, fallback, linked, link_refused, "
                                       "invitation")
    _unknown(path, "top level", data, TOP)
    order, note_answer, due, without = _order(path, data.get("order"))
    return BotSpec(path=path, faq=_faq(path, data.get("faq", [])), order=order, note_answer=note_answer,
                   fallback=_text(path, "field 'fallback'", data.get("fallback")),
                   linked=_text(path, "field 'linked'", data.get("linked")),
                   link_refused=_text(path, "field 'link_refused'", data.get("link_refused")),
                   invitation=_text(path, "field 'invitation'", data.get("invitation")),
                   due_in_days=due, without_rep=without)


def bot_file(settings: Settings | None = None) -> Path:
    """The bot file: the setting, else the shipped example."""
    settings = settings or get_settings()
    return Path(settings.telegram_bot_file) if settings.telegram_bot_file else shipped("templates") / "bot" / "bot.yaml"


def load_spec(path: Path | str | None = None, settings: Settings | None = None) -> BotSpec:
    """Read and check the bot file (``path``, else ``bot_file(settings)``)."""
    path = Path(path) if path else bot_file(settings)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BotSpecError(f"{path}: cannot read the bot file ({exc.strerror or exc}); set TOUCHFLOW_TELEGRAM_BOT_FILE "
                           "to a YAML file like templates/bot/bot.yaml") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        raise BotSpecError(f"{path}: {where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, str(path))

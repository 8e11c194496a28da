"""The template linter: render every part of a template against edge cases and report Russian that is wrong.

A template that renders is not yet a message that is right: «Ксения … пробовал», «прошло 41 день»,
«визитки закончатся ~26 октября» on 23 November, «до 31 октября −10%» after the offer ended. The
linter renders each part for the cases where such mistakes show, then reads the text:

    cases          a woman, a man, unknown gender; no rep, a rep known only by a code; a need already
                   passed; counts 1, 2, 5, 11, 21 and 1,5; a long name; no purchases / events /
                   attributes; the offer's product in the other number («корм для кошек» for
                   «визитки»); an expired offer
    check_text     the findings in one rendered text, given the context it was rendered with
    check_template both over every part; a finding seen in several cases is reported once, with them

Kinds of findings:
    render          the part fails to render (a warning when only missing data makes it fail)
    gender          a masculine form about a woman (feminine about a man), a gendered form when the
                    gender is unknown, «вы» with a singular («вы пробовал»)
    past-date       a date before today spoken of in the future («закончатся … 26 октября», «до …»)
    expired-offer   an offer whose valid_until has passed still promised (its date or its discount)
    numeral         a count and a noun that do not agree («4 раз», «5 дня»)
    verb-agreement  a verb and its subject that do not agree («прошло 41 день», «корм закончатся»)
    decimal-point   «8.5» in Russian text (8,5)
    steps           numbered steps with a gap (1, 2, 4)
    month           a month in the nominative in running text («ездили июль 2026»)
    leftover        None, True, False, undefined, {{ }}, empty (), doubled spaces or punctuation
    sms             an SMS over the segment limit (warning)

Errors are wrong for the reader; warnings are what the linter cannot decide (a subject it cannot
find, a render that fails only on missing data). The analysis is pymorphy3's (``russian.parse``),
cached per word.
"""

from __future__ import annotations

import copy
import html as html_lib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

from babel.dates import format_date
from jinja2 import nodes

from channels.render import russian
from channels.render.context import category_summary, empty_purchases, sample_context
from channels.render.filters import decimal
from channels.render.templates import PARTS, TemplateError, channels_of, environment, meta, render, template_root

ERROR, WARNING = "error", "warning"
COUNTS = (1, 2, 5, 11, 21, 1.5)
MISSING_DATA = ("no purchases", "no events", "no attributes")


@dataclass
class Finding:
    """One problem in one part of a template: where, what, in which cases, and the text that shows it."""

    file: str
    kind: str
    severity: str
    message: str
    text: str
    cases: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A template's findings and how many renderings they come from."""

    template: str
    renderings: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == WARNING for f in self.findings)


# --- the cases ----------------------------------------------------------------------------------------

PEOPLE = {
    "woman": ("f", "Ксения", "Лебедева Ксения Петровна"),
    "man": ("m", "Иван", "Смирнов Иван Петрович"),
    "gender unknown": (None, "Саша", "Ким Саша"),
    "long name": ("f", "Александра-Виктория",
                  "Константинопольская-Рождественская Александра-Виктория Вячеславовна"),
}
REP = {"name": "Игорь Петров", "position": "менеджер по работе с клиентами", "phone": "+74951230002",
       "email": "i.petrov@example.com"}


def base_context(offer: dict[str, Any] | None, today: date, wants: dict[str, set[str]] | None = None,
                 valid: bool = False) -> dict[str, Any]:
    """The made-up customer every case starts from: a woman with a rep, a need five days ahead, an
    offer valid for another week (when it has a validity or ``valid``), and the purchase categories and event kinds the template asks for
    (``wants``, from ``referenced``), so that its conditional parts render too."""
    ctx = sample_context(copy.deepcopy(offer or {}), as_of=today)
    _person(ctx, "woman")
    ctx["customer"]["manager"] = dict(REP)
    wants = wants or {}
    for category in sorted(wants.get("categories", ())):
        ctx["purchases"]["by_category"].setdefault(category, category_summary(
            2, 3200, today - timedelta(days=400), today - timedelta(days=140),
            last_items=[{"product": "Товар", "quantity": 1, "amount": 1600}], last_order=["Товар"]))
        if category not in ctx["purchases"]["categories"]:
            ctx["purchases"]["categories"] = sorted(ctx["purchases"]["categories"] + [category])
    for kind in sorted(wants.get("events", ())):
        ctx["events"].setdefault(kind, {"count": 3, "first_on": today - timedelta(days=400),
                                        "last_on": today - timedelta(days=35)})
    need_key = ctx["offer"].get("need_key")
    if need_key and not any(n["key"] == need_key for n in ctx["needs"]):
        ctx["needs"].append({"basis": "replenishment", "key": need_key, "item": str(need_key).split(":")[-1],
                             "due_on": today, "days_left": 5, "last_on": today, "avg_daily_use": 25.0,
                             "interval_days": 40.0})
    for need in ctx["needs"]:
        need.update(days_left=5, due_on=today + timedelta(days=5), last_on=today - timedelta(days=30))
    if {"valid_until", "valid_days"} & set(ctx["offer"]) or valid:
        ctx["offer"].pop("valid_days", None)
        until = ctx["offer"].get("valid_until")
        if not (isinstance(until, date) and not isinstance(until, datetime) and until >= today):
            # a run gives a date (rules evaluated on as_of); an offer resolved for today keeps its own
            ctx["offer"]["valid_until"] = today + timedelta(days=7)
    return ctx


def referenced(name: str, root: Path) -> dict[str, set[str]]:
    """The purchase categories (``purchases.by_category.X``) and event kinds (``events.X``) a template's
    parts name, read from their syntax trees."""
    env, found = environment(str(root)), {"categories": set(), "events": set()}
    for path in (root / name).iterdir():
        if path.suffix not in (".txt", ".html"):
            continue
        try:
            tree = env.parse(path.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - a syntax error is reported when the part is rendered
            continue
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            dotted = _dotted(node)
            if dotted[:2] == ["purchases", "by_category"] and len(dotted) > 2:
                found["categories"].add(dotted[2])
            elif dotted[:1] == ["events"] and len(dotted) > 1 and dotted[1] not in ("items", "keys", "values", "get"):
                found["events"].add(dotted[1])
    return found


def _dotted(node: Any) -> list[str]:
    if isinstance(node, nodes.Name):
        return [node.name]
    if isinstance(node, nodes.Getattr):
        return _dotted(node.node) + [node.attr]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return _dotted(node.node) + [node.arg.value]
    return []


def _person(ctx: dict, who: str) -> None:
    gender, first, name = PEOPLE[who]
    ctx["customer"].update(gender=gender, first_name=first, greeting_name=first, name=name)


def cases(base: dict[str, Any], *, offer_expires: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(label, context) for every edge case, each a variation of ``base``."""
    today = base["today"]
    out: list[tuple[str, dict[str, Any]]] = []

    def case(label: str, change) -> None:
        ctx = copy.deepcopy(base)
        change(ctx)
        out.append((label, ctx))

    case("woman", lambda c: None)
    case("man", lambda c: _person(c, "man"))
    case("gender unknown", lambda c: _person(c, "gender unknown"))
    case("no rep", lambda c: c["customer"].update(manager=None, owner=None))
    case("rep without a name", lambda c: c["customer"].update(manager=None, owner={
        "code": "petrov", "name": None, "position": None, "active": True}))
    case("need passed", lambda c: [n.update(days_left=-28, due_on=today - timedelta(days=28)) for n in c["needs"]])
    for count in COUNTS:
        case(f"count {russian.format_count(count)}", lambda c, n=count: _counts(c, n))
    case("long name", lambda c: _person(c, "long name"))
    case("no purchases", lambda c: c.update(purchases=empty_purchases()))
    case("no events", lambda c: c.update(events={}))
    case("no attributes", lambda c: c["customer"].update(attributes={}))
    product = base["offer"].get("product")
    if isinstance(product, str) and product.strip():
        other = _OTHER_PRODUCT[russian.subject_grammemes(product)[1]]
        case(f"product «{other}»", lambda c: c["offer"].update(product=other))
    if offer_expires:
        case("offer expired", lambda c: c["offer"].update(valid_until=today - timedelta(days=23)))
    return out


# an offer's product of the other number: «{{ offer.product }} закончатся» must not be written for «визитки» only
_OTHER_PRODUCT = {"plur": "корм для кошек", "sing": "визитки"}
_NOT_COUNTS = ("price", "amount", "total", "check", "percent", "discount")  # money and ids are no counts


def _counts(ctx: dict, n: int | float) -> None:
    """Every count in the context set to ``n`` (a fraction only where the value is a fraction already),
    and the dates counted from today moved with it: a visit ``n`` days ago, a need ``n`` days ahead."""
    today = ctx["today"]
    whole = isinstance(n, int)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, bool) or key == "id" or key.endswith("_id") or \
                        any(word in key for word in _NOT_COUNTS):
                    continue
                if isinstance(item, int) and whole:
                    value[key] = n
                elif isinstance(item, float):
                    value[key] = n
                elif isinstance(item, date) and key in ("last_on", "on") and whole:
                    value[key] = today - timedelta(days=n)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk({k: v for k, v in ctx.items() if k in ("customer", "purchases", "events")})
    for need in ctx["needs"]:
        if whole:
            need.update(days_left=n, due_on=today + timedelta(days=n))
        need.update(avg_daily_use=float(n), interval_days=float(n))


# --- the text as tokens, sentences and clauses ---------------------------------------------------------

_TOKEN = re.compile(r"(?P<num>(?:(?<![\w\-−])[-−])?\d+(?:[\u00a0\u202f]\d{3})*(?:[.,]\d+)?)"
                    r"|(?P<word>[^\W\d_]+(?:-[^\W\d_]+)*)|(?P<nl>\n)|(?P<punct>[^\w\s])")
_ABBREVIATIONS = {"шт", "руб", "коп", "г", "гг", "тыс", "млн", "млрд", "мин", "ч", "сек", "тел", "ул", "д", "кв",
                  "стр", "им", "др", "пр", "т", "п", "см", "напр", "мес"}
_SENTENCE_END = set(".!?…")
_CLAUSE_BREAK = set(",;:—–-()«»\"“”„/|•")
_URL = re.compile(r"(?:https?://|www\.|mailto:)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\+\d[\d\s()\-]{6,}\d")


@dataclass
class Token:
    text: str
    kind: str
    start: int
    end: int
    sentence: int = 0
    clause: int = 0

    @property
    def low(self) -> str:
        return self.text.lower().replace("ё", "е") if self.kind == "word" else self.text


class Doc:
    """A rendered text split into tokens, each knowing its sentence and its clause."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = [Token(m.group(), m.lastgroup, m.start(), m.end()) for m in _TOKEN.finditer(text)]
        sentence = clause = 0
        for i, token in enumerate(self.tokens):
            token.sentence, token.clause = sentence, clause
            if token.kind == "nl" or (token.kind == "punct" and token.text in _SENTENCE_END
                                      and not (token.text == "." and i and self.tokens[i - 1].low in _ABBREVIATIONS)):
                sentence, clause = sentence + 1, clause + 1
            elif token.kind == "punct" and token.text in _CLAUSE_BREAK:
                clause += 1

    def words(self) -> list[tuple[int, Token]]:
        return [(i, t) for i, t in enumerate(self.tokens) if t.kind == "word"]

    def clause_of(self, i: int) -> list[int]:
        c = self.tokens[i].clause
        return [j for j, t in enumerate(self.tokens) if t.clause == c and t.kind in ("word", "num")]

    def sentence_of(self, i: int) -> list[int]:
        s = self.tokens[i].sentence
        return [j for j, t in enumerate(self.tokens) if t.sentence == s and t.kind in ("word", "num")]

    def sentence_tokens(self, s: int) -> list[int]:
        return [j for j, t in enumerate(self.tokens) if t.sentence == s and t.kind in ("word", "num")]

    def previous_word(self, i: int) -> Token | None:
        """The token before ``i`` if it is a word or number in the same clause (no punctuation between)."""
        j = i - 1
        if j >= 0 and self.tokens[j].clause == self.tokens[i].clause and self.tokens[j].kind in ("word", "num"):
            return self.tokens[j]
        return None

    def next_word(self, i: int) -> Token | None:
        j = i + 1
        if j < len(self.tokens) and self.tokens[j].kind in ("word", "num") and \
                self.tokens[j].clause == self.tokens[i].clause:
            return self.tokens[j]
        return None

    def excerpt(self, start: int, end: int, width: int = 110) -> str:
        """The line around a span, shortened to about ``width`` characters."""
        line_start = self.text.rfind("\n", 0, start) + 1
        line_end = self.text.find("\n", end)
        line_end = len(self.text) if line_end < 0 else line_end
        words = self.text[line_start:line_end].split()
        if line_end - line_start <= width:
            return " ".join(words)
        left = self.text.rfind(" ", line_start, max(line_start, start - width // 2)) + 1 or line_start
        right = self.text.find(" ", min(line_end, max(end, left + width)))
        right = line_end if right < 0 or right > line_end else right
        return ("…" if left > line_start else "") + " ".join(self.text[left:right].split()) + \
            ("…" if right < line_end else "")


def plain_text(text: str, html: bool = False) -> str:
    """What the reader reads: tags dropped (block tags end a line), entities decoded, links replaced by «URL»."""
    if html:
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", "", text)
        text = re.sub(r"(?i)<br\s*/?>|</?(p|div|li|ul|ol|tr|table|h[1-6]|blockquote)\b[^>]*>", "\n", text)
        text = html_lib.unescape(re.sub(r"<[^>]*>", "", text))
    return _URL.sub("URL", text)


# --- reading words ------------------------------------------------------------------------------------

def _readings(word: str, min_score: float = 0.0) -> list:
    return [r for r in russian.parse(word) if r.score >= min_score] if russian.is_known(word) else []


def _pos(word: str) -> str | None:
    readings = _readings(word)
    return readings[0].tag.POS if readings else None


def _is_prep(token: Token | None) -> bool:
    return token is not None and token.kind == "word" and _pos(token.low) == "PREP"


def _finite(word: str, min_score: float = 0.3) -> list:
    """The finite-verb readings of a word (indicative: past, present or future)."""
    return [r for r in _readings(word, min_score) if r.tag.POS == "VERB" and "indc" in r.tag]


def _gendered_predicate(word: str):
    """The reading that makes a word a gendered predicate: a singular past verb or short adjective /
    participle in the masculine or feminine («пробовал», «рада», «записан»), else None."""
    for r in _readings(word, 0.3):
        tag = r.tag
        if tag.number == "sing" and tag.gender in ("masc", "femn") and (
                (tag.POS == "VERB" and tag.tense == "past") or tag.POS in ("ADJS", "PRTS")):
            return r
    return None


_GENDER_WORD = {"masc": "masculine", "femn": "feminine"}
_GENDER_OF = {"f": "femn", "m": "masc"}


# --- checks: gender -----------------------------------------------------------------------------------

def _customer_words(ctx: dict) -> set[str]:
    customer = ctx.get("customer") or {}
    words: set[str] = set()
    for key in ("first_name", "greeting_name", "name"):
        value = customer.get(key)
        if isinstance(value, str):
            words |= {w.lower().replace("ё", "е") for w in re.findall(r"[^\W\d_]+(?:-[^\W\d_]+)*", value)}
    return words


def _subject(doc: Doc, indexes: list[int], at: int, predicate, customer: set[str], labels: bool = False
             ) -> str | None:
    """Who a gendered predicate at token ``at`` is about, from the words ``indexes``: "customer" (their
    name), "vy" («вы»), "other" (a noun or name that agrees with it), "pronoun" (он / она), or None.

    A noun before a colon is a label («менеджер: Игорь Петров»), the subject only of what follows
    the colon («автомобиль: не указан»): ``labels`` says whether to count it.
    """
    gender, intransitive = predicate.tag.gender, predicate.tag.POS in ("ADJS", "PRTS") or "intr" in predicate.tag
    found: list[str] = []
    for j in indexes:
        token = doc.tokens[j]
        if j == at or token.kind != "word":
            continue
        before = doc.previous_word(j)
        if _is_prep(before) or (before is not None and before.kind == "num" and not (
                predicate.normal_form in _COUNT_VERBS and _count_value(before) is not None
                and russian.category(_count_value(before)) == "one")):
            continue  # a counted noun is a subject only of «прошёл 1 день», «осталась 1 неделя»
        nxt = doc.tokens[j + 1] if j + 1 < len(doc.tokens) else None
        if nxt is not None and nxt.text == ":" and not labels:
            continue
        if _pos(token.low) not in ("NOUN", "NPRO"):
            continue  # «и», «что»: not a noun first of all
        nominative = [r for r in _readings(token.low) if "nomn" in r.tag and r.tag.POS in ("NOUN", "NPRO")
                      and "Abbr" not in r.tag]
        if not nominative:
            continue
        if j > at and not intransitive and predicate.normal_form not in _COUNT_VERBS and \
                any("accs" in r.tag for r in _readings(token.low)):
            continue  # after a transitive verb: its object («пробовал тариф»)
        if token.low in customer:
            found.append("customer")
        elif any(r.tag.POS == "NPRO" and r.tag.person == "2per" and r.tag.number == "plur" for r in nominative):
            found.append("vy")
        elif any(r.tag.POS == "NPRO" and r.tag.person in ("1per", "2per") and r.tag.number == "sing"
                 for r in nominative):
            found.append("other")  # «я звонил»: the writer, not the customer
        elif any(r.tag.POS == "NPRO" and r.tag.person == "3per" and r.tag.gender == gender for r in nominative):
            found.append("pronoun")
        elif any(r.tag.POS == "NOUN" and r.tag.number == "sing" and (r.tag.gender == gender or "ms-f" in r.tag)
                 for r in nominative):
            found.append("other")
    for kind in ("customer", "vy", "other", "pronoun"):
        if kind in found:
            return kind
    return None


def check_gender(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """Gendered forms about the customer that do not match their gender, and «вы» with a singular."""
    gender = _GENDER_OF.get((ctx.get("customer") or {}).get("gender"))
    customer = _customer_words(ctx)
    for i, token in doc.words():
        predicate = _gendered_predicate(token.low)
        if predicate is not None:
            yield from _gender_of_predicate(doc, i, predicate, gender, customer)
        elif gender is not None:
            yield from _adjective_before_name(doc, i, gender, customer)


def _gender_of_predicate(doc: Doc, i: int, predicate, gender: str | None, customer: set[str]) -> Iterator[tuple]:
    token, form = doc.tokens[i], predicate.tag.gender
    subject = _subject(doc, doc.clause_of(i), i, predicate, customer)
    severity = ERROR
    if subject is None:  # the clause before it (a label there too), the sentence's earlier ones, the sentence before
        earlier = [j for j in doc.sentence_of(i) if doc.tokens[j].clause < token.clause]
        subject = _subject(doc, [j for j in earlier if doc.tokens[j].clause == token.clause - 1], i, predicate,
                           customer, labels=True) or _subject(doc, earlier, i, predicate, customer)
        if subject is None and token.sentence > 0:
            if _subject(doc, doc.sentence_tokens(token.sentence - 1), i, predicate, customer) in ("other", "pronoun"):
                severity = WARNING
    if subject == "vy":
        yield ("gender", ERROR, f"«{token.text}» with «вы»: the polite «вы» takes the plural "
               f"(«вы {russian.polite_plural(token.text.lower())}»)", token.start, token.end)
        return
    if subject == "other":
        return
    if subject == "pronoun":
        severity = WARNING
    if gender is None:
        yield ("gender", WARNING, f"«{token.text}» is {_GENDER_WORD[form]} but the customer's gender is unknown: "
               f"use g(…) or verb(gender=customer.gender) (unknown gender gets the plural "
               f"«{russian.polite_plural(token.text.lower())}»)", token.start, token.end)
    elif form != gender:
        want = russian.verb(token.text, gender=_code(gender)) if predicate.tag.POS == "VERB" else \
            _short_form(predicate, gender)
        yield ("gender", severity, f"«{token.text}» is {_GENDER_WORD[form]} but the customer is "
               f"{'a woman' if gender == 'femn' else 'a man'}" +
               ("" if severity == ERROR else " (unless it is about someone else)") +
               f": write «{want}» with g(…) or verb(gender=customer.gender)", token.start, token.end)


def _code(gender: str) -> str:
    return "f" if gender == "femn" else "m"


def _short_form(reading, gender: str) -> str:
    form = reading.inflect({gender, "sing"})
    return form.word if form is not None else reading.word


def _adjective_before_name(doc: Doc, i: int, gender: str, customer: set[str]) -> Iterator[tuple]:
    """«Уважаемый Ксения»: a full adjective of the other gender right before the customer's name."""
    token, nxt = doc.tokens[i], doc.next_word(i)
    if nxt is None or nxt.low not in customer:
        return
    for r in _readings(token.low, 0.2):
        if r.tag.POS in ("ADJF", "PRTF") and r.tag.number == "sing" and r.tag.gender in ("masc", "femn") \
                and r.tag.gender != gender and "nomn" in r.tag:
            yield ("gender", ERROR, f"«{token.text} {nxt.text}»: the adjective is {_GENDER_WORD[r.tag.gender]} but "
                   f"the customer is {'a woman' if gender == 'femn' else 'a man'}; use g(…)", token.start, nxt.end)
            return


# --- checks: dates ------------------------------------------------------------------------------------

_MONTHS_GENT = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября",
                "ноября", "декабря")
_MONTHS_NOMN = ("январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август", "сентябрь", "октябрь",
                "ноябрь", "декабрь")
_MONTHS_LOCT = ("январе", "феврале", "марте", "апреле", "мае", "июне", "июле", "августе", "сентябре", "октябре",
                "ноябре", "декабре")
_DAY_MONTH = re.compile(r"(?<!\d)(\d{1,2})[\s\u00a0]+(" + "|".join(_MONTHS_GENT) + r")(?:[\s\u00a0]+(\d{4}))?",
                        re.IGNORECASE)
_NUMERIC_DATE = re.compile(r"(?<![\d.])(\d{1,2})\.(\d{1,2})\.(\d{4})(?![\d.])|(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_MONTH_YEAR = re.compile(r"(?<![\w])(" + "|".join(_MONTHS_LOCT + _MONTHS_NOMN) + r")[\s\u00a0]+(\d{4})",
                         re.IGNORECASE)


def _context_dates(value: Any) -> Iterator[date]:
    if isinstance(value, datetime):
        yield value.date()
    elif isinstance(value, date):
        yield value
    elif isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            yield date.fromisoformat(value)
        except ValueError:
            pass
    elif isinstance(value, dict):
        for item in value.values():
            yield from _context_dates(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _context_dates(item)


def dates_in(text: str, ctx: dict) -> Iterator[tuple[int, int, date | tuple[int, int], bool]]:
    """(start, end, date, certain) of every date the text names; a month is (year, month).

    A date without a year is resolved through the context's dates with that day and month (certain
    when they agree on the year; the customer's birthday is left out: it comes every year); a date the context does not have is taken as its nearest
    occurrence to today (not certain: «до 1 ноября» written into a template months ago).
    """
    today = ctx["today"]
    known = {d for d in _context_dates({k: v for k, v in ctx.items() if k != "today"})}
    birthday = next(_context_dates((ctx.get("customer") or {}).get("birthday")), None)
    for m in _DAY_MONTH.finditer(text):
        day, month = int(m.group(1)), _MONTHS_GENT.index(m.group(2).lower()) + 1
        if birthday is not None and (day, month) == (birthday.day, birthday.month) and not m.group(3):
            continue  # a birthday comes every year
        if m.group(3):
            candidates, certain = {_safe_date(int(m.group(3)), month, day)}, True
        else:
            candidates, certain = {d for d in known if (d.day, d.month) == (day, month)}, True
            if not candidates:
                near = [d for d in (_safe_date(today.year + k, month, day) for k in (-1, 0, 1)) if d is not None]
                candidates, certain = {min(near, key=lambda d: abs((d - today).days))} if near else set(), False
        if len(candidates) == 1 and None not in candidates:
            yield m.start(), m.end(), candidates.pop(), certain
    for m in _NUMERIC_DATE.finditer(text):
        d = _safe_date(int(m.group(3)), int(m.group(2)), int(m.group(1))) if m.group(1) else \
            _safe_date(int(m.group(4)), int(m.group(5)), int(m.group(6)))
        if d is not None:
            yield m.start(), m.end(), d, True
    for m in _MONTH_YEAR.finditer(text):
        name = m.group(1).lower()
        month = (_MONTHS_LOCT.index(name) if name in _MONTHS_LOCT else _MONTHS_NOMN.index(name)) + 1
        yield m.start(), m.end(), (int(m.group(2)), month), True


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _token_at(doc: Doc, offset: int) -> int | None:
    return next((i for i, t in enumerate(doc.tokens) if t.start <= offset < t.end), None)


def _is_past(value: date | tuple[int, int], today: date) -> bool:
    return value < today if isinstance(value, date) else value < (today.year, today.month)


def _expired_offer_date(ctx: dict) -> date | None:
    offer = ctx.get("offer") or {}
    until = next(_context_dates(offer.get("valid_until")), None) if offer.get("valid_until") else None
    return until if until is not None and until < ctx["today"] else None


def check_past_dates(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """A date before today spoken of in the future: a future verb in its clause, or «до / по <date>»."""
    today = ctx["today"]
    expired = _expired_offer_date(ctx)  # check_expired_offer reports that one
    for start, end, value, certain in dates_in(doc.text, ctx):
        if not _is_past(value, today) or value == expired:
            continue
        sure = ERROR if certain else WARNING
        at = _token_at(doc, start)
        if at is None:
            continue
        shown = doc.text[start:end]
        clause = doc.clause_of(at)
        verbs = sorted((j for j in clause if _finite(doc.tokens[j].low)), key=lambda j: abs(j - at))
        futures = [doc.tokens[j] for j in verbs[:1] if _is_future(doc.tokens[j])]  # the verb the date belongs to
        pasts = [doc.tokens[j] for j in clause if any(r.tag.tense == "past" for r in _finite(doc.tokens[j].low))]
        before = doc.previous_word(at)
        when = format_date(today, "d MMMM", locale="ru")
        if futures:
            yield ("past-date", sure, f"«{futures[0].text} … {shown}»: {shown} has passed (today is {when}) but "
                   f"the text speaks of it in the future", min(start, futures[0].start), max(end, futures[0].end))
        elif before is not None and before.low in ("до", "по") and not pasts:
            yield ("past-date", sure, f"«{before.text} {shown}»: {shown} has passed (today is {when})",
                   before.start, end)
        elif not any(_finite(doc.tokens[j].low) for j in doc.sentence_of(at)) and doc.tokens[at].sentence > 0:
            previous = [doc.tokens[j] for j in doc.sentence_tokens(doc.tokens[at].sentence - 1)
                        if _is_future(doc.tokens[j])]
            if previous:
                yield ("past-date", WARNING, f"«{previous[0].text} … {shown}»: {shown} has passed (today is {when}) "
                       "and the sentence before speaks in the future", start, end)


def _is_future(token: Token) -> bool:
    return token.kind == "word" and any(r.tag.tense == "futr" for r in _finite(token.low))


def check_negative_counts(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """«через -28 дней»: a count of days (weeks, months) below zero, i.e. a date that has passed."""
    for i, token in enumerate(doc.tokens):
        if token.kind != "num" or token.text[:1] not in "-−":
            continue
        noun, before = doc.next_word(i), doc.previous_word(i)
        timed = noun is not None and noun.kind == "word" and (noun.low in ("дн", "нед", "мес", "ч", "мин") or any(
            r.normal_form in ("день", "неделя", "месяц", "год", "час", "сутки") for r in _readings(noun.low)))
        if timed or (before is not None and before.low == "через"):
            end = noun.end if noun is not None else token.end
            yield ("past-date", ERROR, f"«{doc.text[(before or token).start:end]}»: a negative count (the date has "
                   "passed); use relative_days or say it in the past", token.start, end)


def check_expired_offer(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """An offer whose ``valid_until`` is before today, still promised: its date or its discount in the text."""
    until = _expired_offer_date(ctx)
    if until is None:
        return
    offer = ctx.get("offer") or {}
    shapes = {format_date(until, p, locale="ru") for p in ("d MMMM", "d MMMM y", "dd.MM.y", "dd.MM")} | \
        {until.isoformat()}
    patterns = [re.escape(s).replace(r"\ ", r"[\s\u00a0]") for s in sorted(shapes, key=len, reverse=True)]
    for key, value in offer.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                any(word in key for word in ("discount", "percent")):
            patterns.append(rf"(?<![\d,.]){re.escape(russian.format_count(value))}[\s\u00a0]?%")
    for m in re.finditer("|".join(patterns), doc.text):
        yield ("expired-offer", ERROR, f"the offer ended on {format_date(until, 'd MMMM y', locale='ru')} "
               f"(today is {format_date(ctx['today'], 'd MMMM', locale='ru')}) but «{m.group()}» still promises it",
               m.start(), m.end())


def check_months(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """«вы ездили июль 2026»: a month in the nominative inside a sentence; running text says «в июле 2026 года»."""
    for i, token in doc.words():
        if token.low not in _MONTHS_NOMN:
            continue
        before = doc.previous_word(i)
        if before is None or before.low in ("на", "за", "через", "про", "по") or \
                _pos(before.low) in ("ADJF", "PRTF", "NUMR"):
            continue  # a heading («Июль 2026: …»), an accusative («запись на июль», «по март», «весь июль»)
        year = doc.next_word(i)
        year = year.text if year is not None and year.kind == "num" and len(year.text) == 4 else None
        want = f"в {_MONTHS_LOCT[_MONTHS_NOMN.index(token.low)]}" + (f" {year} года" if year else "")
        yield ("month", ERROR, f"«{before.text} {token.text}»: a month in running text takes a preposition and "
               f"the prepositional case («{want}»: month_in)", before.start, token.end)


# --- checks: numerals and agreement -------------------------------------------------------------------

_PREPOSITION_CASES = {
    "к": {"datv"}, "ко": {"datv"}, "по": {"datv", "accs", "loct"}, "с": {"gent", "ablt", "accs"},
    "со": {"gent", "ablt", "accs"}, "за": {"accs", "ablt"}, "под": {"accs", "ablt"}, "над": {"ablt"},
    "перед": {"ablt"}, "между": {"ablt", "gent"}, "в": {"accs", "loct"}, "во": {"accs", "loct"},
    "на": {"accs", "loct"}, "о": {"loct", "accs"}, "об": {"loct", "accs"}, "при": {"loct"}, "про": {"accs"},
    "через": {"accs"}, "около": {"gent"}, "до": {"gent"}, "от": {"gent"}, "из": {"gent"}, "без": {"gent"},
    "для": {"gent"}, "после": {"gent"}, "у": {"gent"}, "кроме": {"gent"}, "свыше": {"gent"}, "более": {"gent"},
    "менее": {"gent"}, "больше": {"gent"}, "меньше": {"gent"}, "вместо": {"gent"}, "среди": {"gent"},
    "течение": {"gent"}, "протяжении": {"gent"}, "согласно": {"datv"}, "благодаря": {"datv"}, "вроде": {"gent"},
    "порядка": {"gent"}, "ради": {"gent"}, "против": {"gent"}, "из-за": {"gent"}, "вокруг": {"gent"},
    "сверх": {"gent"}, "каждые": {"accs"},
}
_NOT_AFTER_COUNTS = {"годов"}  # «5 лет»
_ORDINAL_NOUNS = {"класс", "этаж", "курс", "номер", "версия", "квартира", "дом", "корпус", "пункт", "уровень",
                  "сезон", "серия", "место", "строка", "страница", "глава", "шаг"}


def _count_value(token: Token) -> int | float | None:
    text = token.text.replace("\u00a0", "").replace("\u202f", "").replace("−", "-").replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() and "." not in text else number


def _counted_noun(doc: Doc, i: int) -> tuple[int, Token, list] | None:
    """The noun a number counts (adjectives between them skipped), with its noun readings; None when
    the next word is no countable noun (a unit, an abbreviation, a month, a name, a word we do not know)."""
    j = i + 1
    for _ in range(3):
        if j >= len(doc.tokens) or doc.tokens[j].kind != "word" or doc.tokens[j].clause != doc.tokens[i].clause:
            return None
        token = doc.tokens[j]
        readings = _readings(token.low)
        if not readings or token.text[:1].isupper():  # unknown, or a proper name («5 Звёзд»)
            return None
        top = readings[0].tag
        if top.POS in ("ADJF", "PRTF") and "Apro" not in top:
            j += 1
            continue
        nouns = [r for r in readings if r.tag.POS == "NOUN"]
        if not nouns or {"Abbr", "Fixd", "Name", "Surn", "Patr"} & set(top.grammemes) or top.POS != "NOUN":
            return None
        if token.low in _MONTHS_GENT or nouns[0].normal_form in _ORDINAL_NOUNS:
            return None
        return j, token, nouns
    return None


def _agrees(count: int | float, nouns: list, governed: set[str]) -> bool:
    kind = russian.category(count)
    forms = {(r.tag.case, r.tag.number) for r in nouns}
    plural_only = any("Pltm" in r.tag for r in nouns)
    if kind == "one":
        return any(n == "sing" for _, n in forms) or plural_only
    allowed = {("gent", "sing")} if kind in ("few", "other") else {("gent", "plur")}
    if plural_only:
        allowed.add(("gent", "plur"))
    if kind != "other":
        allowed |= {(case, "plur") for case in governed if case not in ("nomn", "accs")}
    return bool(forms & allowed)


def check_numerals(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """A count and its noun that do not agree: «4 раз» (4 раза), «5 дня» (5 дней), «21 дней», «1,5 дней»."""
    for i, token in enumerate(doc.tokens):
        if token.kind != "num" or token.text[:1] in "-−":
            continue
        count = _count_value(token)
        found = _counted_noun(doc, i)
        if count is None or found is None:
            continue
        _, noun, nouns = found
        if nouns[0].normal_form == "год" and 1900 <= count <= 2100:
            continue  # «2026 года»: a year, not a count
        before = doc.previous_word(i)
        governed = set(_PREPOSITION_CASES.get(before.low, ())) if before is not None else set()
        if _agrees(count, nouns, governed) and noun.low not in _NOT_AFTER_COUNTS:
            continue
        lemma = nouns[0].normal_form
        yield ("numeral", ERROR, f"«{token.text} {noun.text}»: the noun does not agree with {token.text} "
               f"(«{russian.agree(count, lemma)}»; use agree)", token.start, noun.end)


_COUNT_VERBS = {"пройти", "остаться", "понадобиться", "потребоваться", "уйти", "минуть", "пролететь",
                "исполниться", "набраться", "накопиться", "прийти", "поступить", "быть", "стать"}
_TIME_NOUNS = {"день", "неделя", "месяц", "год", "час", "минута", "утро", "вечер", "ночь", "раз", "сутки", "время"}
_PRONOUNS_NOMN = {"я", "ты", "вы", "мы", "он", "она", "оно", "они"}


def check_verb_agreement(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """A verb that does not agree with its subject: a count («прошло 41 день») or a noun before it
    («корм закончатся», «визитки закончится»)."""
    for i, token in doc.words():
        verbs = _finite(token.low, 0.0)
        if not verbs:
            continue
        nxt = doc.next_word(i)
        if nxt is not None and nxt.kind == "num":
            yield from _verb_before_count(doc, i, verbs, ctx)
        yield from _verb_after_subject(doc, i, verbs, _customer_words(ctx))


def _verb_before_count(doc: Doc, i: int, verbs: list, ctx: dict) -> Iterator[tuple]:
    token, number = doc.tokens[i], doc.tokens[i + 1]
    count, found = _count_value(number), _counted_noun(doc, i + 1)
    if count is None or found is None or number.text[:1] in "-−":
        return
    j, noun, nouns = found
    after = doc.next_word(j)
    if after is not None and after.low in ("назад", "спустя", "тому"):
        return
    if nouns[0].normal_form == "раз":
        return  # «обращалась 5 раз»: how often, never the subject
    if not any(r.normal_form in _COUNT_VERBS or "intr" in r.tag for r in verbs):
        return
    if any(doc.tokens[k].low in _PRONOUNS_NOMN for k in doc.clause_of(i) if k < i):
        return  # «вы ждали 21 день»: the subject is the pronoun
    kind, gender = russian.category(count), nouns[0].tag.gender
    ok = False
    for r in verbs:
        tag = r.tag
        if kind == "one":
            ok |= tag.number == "sing" and (tag.tense != "past" or tag.gender == gender)
        else:
            ok |= tag.number == "plur" or (tag.tense == "past" and tag.gender == "neut") or \
                (tag.tense != "past" and tag.number == "sing")
    if not ok:
        want = russian.counted_verb(token.text.lower(), count, nouns[0].normal_form)
        yield ("verb-agreement", ERROR, f"«{token.text} {number.text} {noun.text}»: the verb does not agree with the "
               f"count («{want}»; use passed / remaining / with_verb)", token.start, noun.end)


def _verb_after_subject(doc: Doc, i: int, verbs: list, customer: set[str]) -> Iterator[tuple]:
    """«корм (у вас) (скоро) закончатся»: the noun right before a verb, adverbs and «у вас» skipped."""
    if not any(r.tag.person == "3per" or r.tag.tense == "past" for r in verbs):
        return
    j = i - 1
    clause = doc.tokens[i].clause
    while j >= 0 and doc.tokens[j].clause == clause and doc.tokens[j].kind == "word":
        word = doc.tokens[j].low
        pos = _pos(word)
        if pos in ("ADVB", "PRCL", "CONJ") and word not in ("и", "или", "а", "но"):
            j -= 1
        elif j >= 1 and _is_prep(doc.tokens[j - 1]) and pos in ("NPRO", "NOUN"):
            j -= 2  # «у вас», «для кошек»
        else:
            break
    if j < 0 or doc.tokens[j].clause != clause or doc.tokens[j].kind != "word":
        return
    while j >= 1 and doc.tokens[j - 1].clause == clause and doc.tokens[j - 1].kind == "word" and \
            any(r.tag.case == "gent" for r in _readings(doc.tokens[j].low)) and \
            _pos(doc.tokens[j - 1].low) == "NOUN" and \
            any(r.tag.case == "nomn" for r in _readings(doc.tokens[j - 1].low)):
        j -= 1  # «день рождения», «карта лояльности»: the head, not its genitive
    subject = doc.tokens[j]
    if _pos(subject.low) not in ("NOUN", "NPRO"):
        return
    nominative = [r for r in _readings(subject.low) if "nomn" in r.tag and r.tag.POS in ("NOUN", "NPRO")
                  and not {"Abbr", "Fixd"} & set(r.tag.grammemes)]
    if not nominative or subject.low in _PRONOUNS_NOMN or subject.low in customer or \
            any(r.normal_form in _TIME_NOUNS for r in nominative):
        return  # pronouns and the customer's name: check_gender's
    before = doc.previous_word(j)
    if _is_prep(before) or (before is not None and before.kind == "num"):
        return
    if not any("intr" in r.tag for r in verbs) and any("accs" in r.tag for r in _readings(subject.low)):
        return  # «корм купят»: the noun may be the object
    if any(_verb_agrees_with(v.tag, n.tag) for v in verbs for n in nominative):
        return
    want = russian.agree_verb(doc.tokens[i].text, subject.text)
    yield ("verb-agreement", ERROR, f"«{subject.text} … {doc.tokens[i].text}»: the verb does not agree with its "
           f"subject («{want}»; use agree_verb)", subject.start, doc.tokens[i].end)


def _verb_agrees_with(verb_tag, noun_tag) -> bool:
    number = "plur" if noun_tag.number == "plur" or "Pltm" in noun_tag else "sing"
    if verb_tag.number != number:
        return False
    if number == "sing" and verb_tag.tense == "past":
        return noun_tag.gender is None or noun_tag.gender == verb_tag.gender or "ms-f" in noun_tag or \
            noun_tag.POS == "NPRO"
    return True


# --- checks: how numbers, steps and missing values look -----------------------------------------------

_DECIMAL_POINT = re.compile(r"(?<![\w.,])(\d+)\.(\d+)(?![\w]|\.\d)")


def check_decimal_point(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """«8.5» in Russian text: Russian writes a decimal comma (8,5; the decimal filter)."""
    for m in _DECIMAL_POINT.finditer(doc.text):
        whole, part = m.group(1), m.group(2)
        before = doc.text[max(0, m.start() - 6):m.start()].lower().split()
        if len(part) == 2 and int(whole) <= 23 and int(part) < 60 and before and before[-1] in ("в", "с", "до", "к"):
            continue  # «в 10.30»: a time
        yield ("decimal-point", ERROR, f"«{m.group()}»: a decimal point in Russian text; write "
               f"«{decimal(m.group(), max(1, len(part.rstrip('0'))))}» (the decimal filter)", m.start(), m.end())


_STEP = re.compile(r"^[ \t]*(\d{1,2})[.)][ \t]+\S", re.MULTILINE)


def check_steps(doc: Doc, ctx: dict) -> Iterator[tuple]:
    """Numbered steps with a gap or a repeat (1, 2, 4): a step left out by a condition kept its number."""
    previous = None
    for m in _STEP.finditer(doc.text):
        number = int(m.group(1))
        if previous is not None and number != previous + 1 and number != 1:
            yield ("steps", ERROR, f"step {number} follows step {previous}: number the steps in a loop "
                   "(loop.index) or renumber them when a step is left out", m.start(1), m.end(1))
        previous = number


_LEFTOVERS = [
    (re.compile(r"(?<![\w])(None|True|False|undefined|Undefined|nan|NaN)(?![\w])"), "a Python / Jinja value"),
    (re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}"), "template syntax"),
    (re.compile(r"\(\s*\)|«\s*»|\[\s*\]|\"\s*\""), "empty brackets or quotes"),
    (re.compile(r"\[['\"]|\{['\"]"), "a printed list or dict"),
    (re.compile(r"(?<=\S)[ \u00a0]+[,.;:!?)](?!\.)"), "a space before punctuation"),
    (re.compile(r"[,;:][ \u00a0]*[,;:.!?]|[!?][ \u00a0]*[.,;:]|(?<![.])\.[ \u00a0]*\.(?![.])|\([ \u00a0]+|[ \u00a0]+\)"),
     "doubled punctuation"),
]


def check_leftovers(doc: Doc, ctx: dict, *, html: bool = False) -> Iterator[tuple]:
    """What a missing or raw value leaves: None, True, False, undefined, {{ }}, «()», doubled spaces or punctuation."""
    for pattern, what in _LEFTOVERS:
        for m in pattern.finditer(doc.text):
            yield ("leftover", ERROR, f"«{m.group().strip() or m.group()}»: {what} (a value missing or printed raw?)",
                   m.start(), m.end())
    if not html:  # in HTML spaces collapse
        for m in re.finditer(r"(?<=\S)[ \u00a0]{2,}(?=\S)", doc.text):
            yield ("leftover", ERROR, "doubled space (a value missing?)", m.start(), m.end())


CHECKS = (check_gender, check_past_dates, check_negative_counts, check_expired_offer, check_months, check_numerals,
          check_verb_agreement, check_decimal_point, check_steps)


def check_text(text: str, ctx: dict, *, html: bool = False) -> list[tuple[str, str, str, str]]:
    """(kind, severity, message, excerpt) for every problem in one rendered text."""
    doc = Doc(plain_text(text, html))
    found = []
    for check in CHECKS:
        for kind, severity, message, start, end in check(doc, ctx):
            found.append((kind, severity, message, doc.excerpt(start, end)))
    for kind, severity, message, start, end in check_leftovers(doc, ctx, html=html):
        found.append((kind, severity, message, doc.excerpt(start, end)))
    return found


# --- a template ---------------------------------------------------------------------------------------

def _parts(rendered) -> list[tuple[str, str, bool]]:
    """(file, text, is_html) of a rendered channel."""
    if rendered.channel == "email":
        parts = [("email_subject.txt", rendered.subject or "", False), ("email.txt", rendered.text, False)]
        return parts + ([("email.html", rendered.html, True)] if rendered.html is not None else [])
    if rendered.channel == "telegram":
        return [("telegram.html", rendered.html or "", True)]
    return [(PARTS[rendered.channel][0], rendered.text, False)]


def _uses(name: str, root: Path, word: str) -> bool:
    folder = root / name
    return any(word in path.read_text(encoding="utf-8", errors="replace")
               for path in folder.iterdir() if path.suffix in (".txt", ".html"))


_NUMBERS = re.compile(r"\d+(?:[.,]\d+)?")


def check_template(name: str, *, root: Path | None = None, today: date | None = None,
                   extra: dict[str, dict[str, Any]] | None = None, sms_max_segments: int = 3,
                   offer: dict[str, Any] | None = None) -> Report:
    """Render every part of template ``name`` in every case (and for ``extra`` real customers' contexts)
    and read what comes out. ``offer``: the offer as a run on ``today`` shows it (``touchflow template
    check`` gives ``flows.spec.resolve_offer``'s); by default the template's ``meta.yaml`` offer."""
    root = root or template_root(name)
    today = today or date.today()
    offer = offer if offer is not None else meta(name, root).get("offer") or {}
    report = Report(template=name)
    merged: dict[tuple, Finding] = {}

    def add(file: str, case: str, kind: str, severity: str, message: str, text: str) -> None:
        key = (file, kind, severity, _NUMBERS.sub("N", message))  # the same mistake at another count is one
        finding = merged.setdefault(key, Finding(f"{name}/{file}", kind, severity, message, text))
        if case not in finding.cases:
            finding.cases.append(case)

    until = next(_context_dates(offer.get("valid_until")), None) if offer.get("valid_until") else None
    if until is not None and until < today:
        add("meta.yaml", "meta.yaml", "expired-offer", WARNING,
            f"the default offer's valid_until ({until.isoformat()}) has passed", f"valid_until: {until.isoformat()}")
    expires = bool({"valid_until", "valid_days"} & set(offer)) or _uses(name, root, "valid_until")
    base = base_context(offer, today, referenced(name, root), valid=expires)
    contexts = cases(base, offer_expires=expires)
    contexts += list((extra or {}).items())
    channels = channels_of(name, root)
    for label, ctx in contexts:
        for channel in channels:
            report.renderings += 1
            try:
                rendered = render(name, channel, ctx, root=root, sms_max_segments=sms_max_segments,
                                  sms_over_limit="warn")
            except TemplateError as exc:
                file = (exc.template or f"{name}/{PARTS[channel][0]}").split("/", 1)[-1]
                severity = WARNING if label in MISSING_DATA else ERROR
                message = str(exc) + (f" (it fails only with {label}: guard it, unless the segment never selects "
                                      "such customers)" if severity == WARNING else "")
                add(file, label, "render", severity, message, "")
                continue
            for warning in rendered.warnings:
                add(PARTS[channel][0], label, "sms", WARNING, warning, "")
            for file, text, is_html in _parts(rendered):
                for kind, severity, message, excerpt in check_text(text, ctx, html=is_html):
                    add(file, label, kind, severity, message, excerpt)
    report.findings = sorted(merged.values(), key=lambda f: (f.severity != ERROR, f.file, f.kind))
    return report


def check_templates(names: Iterable[str], **options: Any) -> list[Report]:
    """``check_template`` for each name."""
    return [check_template(name, **options) for name in names]

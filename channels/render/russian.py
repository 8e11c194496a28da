"""Russian that agrees: gender, cases, numerals with nouns, verbs with subjects, months and relative days.

Morphology comes from pymorphy3 (OpenCorpora dictionaries), not from hand-written endings: names,
surnames and irregular nouns («день — дня — дней», «раз — раза») are in its dictionary. The analyzer
loads once per process, lazily (~0.2 s); every result is cached, so a campaign that renders «5 дней»
a thousand times analyses the words once and then does a dict lookup.

Gender codes everywhere: ``"f"``, ``"m"`` or ``None`` (unknown). Unknown gender takes the plural,
which is how Russian politely avoids gender when addressing someone: «вы пробовали», «вы записаны».

    gender_of("Ксения")                       "f"
    agree(21, "день")                         "21 день"      agree(1.5, "день") -> "1,5 дня"
    inflect("Лебедева Ксения Петровна", "gent")  "Лебедевой Ксении Петровны"
    verb("пробовал", gender="f")              "пробовала"     agree_verb("закончится", "визитки") -> "закончатся"
    month_in(date(2026, 7, 5))                "в июле 2026 года"
    relative_days(-5)                         "5 дней назад"  passed(41, "день") -> "прошёл 41 день"

Strings longer than ``MAX_TEXT`` characters are returned as they are: names and noun phrases are
short, and a template must not make the cache hold (or the analyzer chew on) megabytes.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal

CASES = ("nomn", "gent", "datv", "accs", "ablt", "loct")
GENDERS = {"f": "femn", "m": "masc", "n": "neut", "femn": "femn", "masc": "masc", "neut": "neut"}
_CODE = {"femn": "f", "masc": "m"}
_UNSET: Any = object()  # "not given", as opposed to an explicit ``None`` (unknown gender)
_NAME_TAGS = ("Name", "Surn", "Patr")
MAX_TEXT = 200
_WORD = re.compile(r"[А-Яа-яЁё]+(?:-[А-Яа-яЁё]+)*")
_MONTHS_LOCT = ("январе", "феврале", "марте", "апреле", "мае", "июне", "июле", "августе", "сентябре",
                "октябре", "ноябре", "декабре")


@lru_cache(maxsize=1)
def analyzer():
    """The process's one pymorphy3 analyzer (its dictionaries take ~0.2 s and ~15 MB to load)."""
    import pymorphy3

    return pymorphy3.MorphAnalyzer(lang="ru")


@lru_cache(maxsize=65536)
def parse(word: str) -> tuple:
    """All readings of a word, best first (cached: a campaign repeats the same few hundred words)."""
    return tuple(analyzer().parse(word))


@lru_cache(maxsize=65536)
def is_known(word: str) -> bool:
    """Whether the dictionary has the word (an unknown word is only guessed at, so we leave it alone)."""
    return analyzer().word_is_known(word.lower())


@lru_cache(maxsize=65536)
def is_compound_noun(word: str) -> bool:
    """An unknown word that is a known noun behind a prefix or a stem, read with certainty: «когтеточка»
    (когте + точка), «автопоилка». Such words inflect like their head; other unknown words (brands,
    names the dictionary lacks) are left alone."""
    if is_known(word):
        return False
    return any(p.score >= 0.9 and p.tag.POS == "NOUN" and "nomn" in p.tag
               and not {"Name", "Surn", "Patr", "Geox", "Abbr"} & set(p.tag.grammemes)
               and any(type(method[0]).__name__ == "UnknownPrefixAnalyzer" for method in p.methods_stack)
               for p in parse(word.lower()))


def is_noun_word(word: str) -> bool:
    """Whether a word of a noun phrase may be inflected: the dictionary knows it, or it is a compound of a known noun."""
    return is_known(word) or is_compound_noun(word)


@lru_cache(maxsize=16)
def _ru() -> Locale:
    return Locale.parse("ru")


@lru_cache(maxsize=64)
def _locale(value: str | None) -> Locale:
    return Locale.parse((value or "ru_RU").replace("-", "_"))


def _plain(count: Any) -> int | float | Decimal:
    """1.0 counts as 1 (a float from the database is often whole)."""
    if isinstance(count, bool):
        raise TypeError("a count must be a number, not a boolean")
    if isinstance(count, str):
        count = Decimal(count.replace(",", ".").replace("\u00a0", "").replace(" ", ""))
    if isinstance(count, (float, Decimal)) and count == int(count):
        return int(count)
    return count


def category(count: Any) -> str:
    """The CLDR plural category of a count in Russian: one (1, 21), few (2–4, 22), many (0, 5–20, 25), other (1,5)."""
    return _ru().plural_form(abs(_plain(count)))


def format_count(count: Any, locale: str = "ru_RU") -> str:
    """A count as the locale writes it: ``12 500``, ``1,5``."""
    return format_decimal(_plain(count), format="#,##0.###", locale=_locale(locale))


def _restyle(original: str, new: str) -> str:
    """The new form written like the original: «Ксения» → «Ксении», «КОРМ» → «КОРМА»."""
    if len(original) > 1 and original.isupper():
        return new.upper()
    old_parts, new_parts = original.split("-"), new.split("-")
    if len(old_parts) != len(new_parts):
        old_parts, new_parts = [original], [new]
    return "-".join(n[:1].upper() + n[1:] if o[:1].isupper() else n for o, n in zip(old_parts, new_parts, strict=True))


# --- gender -----------------------------------------------------------------------------------------

_FEMININE_PATRONYMIC = ("овна", "евна", "ична", "инична", "кызы", "гызы")
_MASCULINE_PATRONYMIC = ("ович", "евич", "ич", "оглы", "улы", "уулу")


@lru_cache(maxsize=65536)
def gender_of(first_name: str | None = None, patronymic: str | None = None,
              full_name: str | None = None) -> str | None:
    """"f", "m" or None: from the patronymic when there is one, else from the first name's dictionary gender.

    ``full_name`` is "Фамилия Имя Отчество" in this base ("Имя Фамилия" is recognised too); it
    supplies whatever the other two arguments leave out. Ambiguous names (Саша, Женя) and names the
    dictionary does not know give None: better the polite plural than the wrong gender.
    """
    if full_name and (not first_name or not patronymic):
        named_first, named_patronymic = _split_full_name(full_name)
        first_name, patronymic = first_name or named_first, patronymic or named_patronymic
    if patronymic:
        word = patronymic.strip().lower()
        if word.endswith(_FEMININE_PATRONYMIC):
            return "f"
        if word.endswith(_MASCULINE_PATRONYMIC):
            return "m"
    if first_name:
        return _name_gender(first_name.strip().split()[0] if first_name.strip() else "")
    return None


def _split_full_name(full_name: str) -> tuple[str | None, str | None]:
    """(first name, patronymic) from "Фамилия Имя Отчество", "Фамилия Имя" or "Имя Фамилия"."""
    words = full_name.split()
    if len(words) >= 3:
        return words[1], words[2]
    if len(words) == 2:
        first = next((w for w in reversed(words) if _name_gender(w, loose=True) != "?"), None)
        return first, None
    return (words[0], None) if words else (None, None)


@lru_cache(maxsize=65536)
def _name_gender(word: str, loose: bool = False) -> str | None:
    """The dictionary gender of a first name in the nominative ("?" with ``loose`` when it is no name)."""
    if not word or not is_known(word):
        return "?" if loose else None
    names = [p for p in parse(word) if "Name" in p.tag and "nomn" in p.tag and "sing" in p.tag]
    if not names:
        return "?" if loose else None
    return _CODE.get(names[0].tag.gender)


# --- nouns and names in a case ------------------------------------------------------------------------

def _nominative(word: str, *, prefer: tuple[str, ...] = (), gender: str | None = None):
    """The reading of ``word`` as a nominative (how names and nouns are given), the best that fits."""
    readings = [p for p in parse(word) if "nomn" in p.tag]
    if not readings:
        return None

    def rank(p) -> tuple:
        return (any(t in p.tag for t in prefer), gender is None or p.tag.gender == gender or "ms-f" in p.tag, p.score)

    return max(readings, key=rank)


# the genitive plural a count takes where it differs from the dictionary's first one («5 лет», «5 человек»)
COUNTED_GENITIVE = {"год": "лет", "человек": "человек"}


def _inflected(reading, grammemes: set[str], counted: bool = False) -> str | None:
    """pymorphy3's inflection, trying the plural when a noun has no singular («сутки»); after a count,
    the counted genitive plural («лет», not «годов»)."""
    if counted and {"gent", "plur"} <= grammemes and reading.normal_form in COUNTED_GENITIVE:
        return COUNTED_GENITIVE[reading.normal_form]
    form = reading.inflect(grammemes)
    if form is None and "sing" in grammemes:
        form = reading.inflect((grammemes - {"sing"}) | {"plur"})
    return form.word if form is not None else None


def inflect(text: str, case: str, number: str | None = None) -> str:
    """A name or a noun phrase in ``case`` (and ``number``), written as it was given: «Ксения» → «Ксении».

    A person's name ("Лебедева Ксения Петровна") inflects every part in the person's gender; a noun
    phrase inflects its leading adjectives and its head noun and keeps the rest («трансляция
    футбола» → «трансляции футбола»). Words the dictionary does not know stay as they are, except
    compounds of a known noun («когтеточка» → «когтеточку»).
    """
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; use one of {', '.join(CASES)}")
    if number not in (None, "sing", "plur"):
        raise ValueError(f"unknown number {number!r}; use 'sing' or 'plur'")
    if not text or len(text) > MAX_TEXT or not _WORD.search(text):
        return text
    return _inflect(text, case, number)


@lru_cache(maxsize=65536)
def _inflect(text: str, case: str, number: str | None) -> str:
    words = text.split(" ")
    if _is_person(words):
        gender = GENDERS.get(gender_of(full_name=_as_full_name(words)) or "")
        return " ".join(_inflect_name_word(w, case, gender) for w in words)
    return _inflect_phrase(words, case, number)


def _is_person(words: list[str]) -> bool:
    readings = [_nominative(w, prefer=_NAME_TAGS) for w in words if _WORD.fullmatch(w)]
    return any(r is not None and ("Name" in r.tag or "Patr" in r.tag) for r in readings) and \
        all(w[:1].isupper() for w in words if _WORD.fullmatch(w))


def _as_full_name(words: list[str]) -> str:
    """The words of a name put in "Фамилия Имя Отчество" order for ``gender_of``."""
    names = [w for w in words if (r := _nominative(w, prefer=_NAME_TAGS)) is not None and "Name" in r.tag]
    patronymics = [w for w in words if (r := _nominative(w, prefer=("Patr",))) is not None and "Patr" in r.tag]
    others = [w for w in words if w not in names and w not in patronymics]
    return " ".join((others[:1] or ["-"]) + names[:1] + patronymics[:1])


def _inflect_name_word(word: str, case: str, gender: str | None) -> str:
    if "-" in word and not is_known(word):  # «Анна-Мария», «Петров-Водкин»: each part
        return "-".join(_inflect_name_word(part, case, gender) for part in word.split("-"))
    if not _WORD.fullmatch(word) or not is_known(word):
        return word
    reading = _nominative(word, prefer=_NAME_TAGS, gender=gender)
    if reading is None:
        return word
    form = _inflected(reading, {case, "sing"})
    return _restyle(word, form) if form else word


def _inflect_phrase(words: list[str], case: str, number: str | None, head_grammemes: set[str] | None = None,
                    modifier_grammemes: set[str] | None = None) -> str:
    """Leading adjectives and the head noun in the grammemes asked for; words after the head unchanged."""
    out = list(words)
    readings = [(_nominative(w) if _WORD.fullmatch(w) and is_noun_word(w) else None) for w in words]
    head = next((i for i, r in enumerate(readings) if r is not None and "NOUN" in r.tag), None)
    if head is None:
        return " ".join(words)
    noun = readings[head]
    plural = number == "plur" or (number is None and "plur" in noun.tag)
    wanted = head_grammemes or {case, "plur" if plural else "sing"}
    form = _inflected(noun, wanted, counted=head_grammemes is not None)
    if form:
        out[head] = _restyle(words[head], form)
    for i in range(head):
        reading = readings[i]
        if reading is None or not ({"ADJF", "PRTF", "NPRO"} & set(reading.tag.grammemes)):
            continue
        grammemes = set(modifier_grammemes or wanted)
        if "sing" in grammemes and noun.tag.gender:
            grammemes.add(noun.tag.gender)
        if "accs" in grammemes and noun.tag.animacy:
            grammemes.add(noun.tag.animacy)
        form = _inflected(reading, grammemes)
        if form:
            out[i] = _restyle(words[i], form)
    return " ".join(out)


# --- numerals and nouns -------------------------------------------------------------------------------

def count_grammemes(count: Any, case: str = "nomn") -> tuple[str, str]:
    """(case, number) of a noun after ``count`` in a phrase in ``case``: 2 → (gent, sing), 5 → (gent, plur).

    In the nominative and accusative the numeral governs the noun (1 день, 2 дня, 5 дней, 1,5 дня);
    in the other cases it agrees with it (2 дням, 5 днями), except that 1, 21 … stay singular and
    a fraction always takes the genitive singular («1,5 дня»).
    """
    kind = category(count)
    if kind == "other":
        return "gent", "sing"
    if kind == "one":
        return case, "sing"
    if case in ("nomn", "accs"):
        return "gent", "sing" if kind == "few" else "plur"
    return case, "plur"


@lru_cache(maxsize=65536)
def _agree(count: Any, noun: str, case: str, locale: str) -> str:
    noun_case, number = count_grammemes(count, case)
    words = noun.split(" ")
    modifiers = None
    if (noun_case, number) == ("gent", "sing") and case in ("nomn", "accs") and category(count) == "few":
        head = _nominative(next((w for w in words if _WORD.fullmatch(w) and is_noun_word(w)), words[0]))
        # «2 детских канала», «2 новые книги»: adjectives take the plural before a counted noun
        modifiers = {"nomn" if head is not None and head.tag.gender == "femn" else "gent", "plur"}
    elif category(count) == "other":
        modifiers = {"gent", "sing"}
    phrase = _inflect_phrase(words, noun_case, number, head_grammemes={noun_case, number}, modifier_grammemes=modifiers)
    return f"{format_count(count, locale)} {phrase}"


def agree(count: Any, noun: str, case: str = "nomn", locale: str = "ru_RU") -> str:
    """The count and its noun agreeing with it: 1 день, 2 дня, 5 дней, 21 день, 1,5 дня; in any ``case``.

    ``noun`` is given in the nominative singular (a phrase's head may be followed by other words:
    «трансляция футбола» → «4 трансляции футбола»).
    """
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; use one of {', '.join(CASES)}")
    if len(noun) > MAX_TEXT:
        return f"{format_count(count, locale)} {noun}"
    return _agree(_plain(count), noun, case, locale)


# --- verbs --------------------------------------------------------------------------------------------

def _verb_reading(word: str):
    readings = [p for p in parse(word) if {"VERB", "INFN"} & set(p.tag.grammemes)]
    return readings[0] if readings else None


@lru_cache(maxsize=65536)
def _verb(word: str, gender: str | None, number: str | None, person: str | None, tense: str | None) -> str:
    reading = _verb_reading(word)
    if reading is None:
        return word
    tag = reading.tag
    tense = tense or tag.tense or ("past" if gender or (number and not person) else None)
    if tense == "past":
        if number == "plur" or (number is None and gender is None and tag.number == "plur"):
            grammemes = {"past", "plur"}
        else:
            grammemes = {"past", "sing", gender or tag.gender or "masc"}
    else:
        aspect_tense = "futr" if tag.aspect == "perf" else "pres"
        grammemes = {aspect_tense, "indc", number or tag.number or "sing", person or tag.person or "3per"}
    form = reading.inflect(grammemes)
    return _restyle(word, form.word) if form is not None else word


def verb(word: str, *, gender: Any = _UNSET, number: str | None = None, person: int | str | None = None,
         tense: str | None = None) -> str:
    """A verb (a lemma or any form) in the form asked for: ``verb("пробовал", gender="f")`` → «пробовала».

    ``gender`` is "f", "m", "n" or None; None means unknown and gives the polite plural in the past
    («пробовали»), so ``verb(..., gender=customer.gender)`` is always right. Gender implies the past
    tense; ``number`` is "sing" or "plur", ``person`` 1, 2 or 3, ``tense`` "past", "pres" or "futr"
    (a perfective verb has no present: its non-past is the future).
    """
    grammeme_gender = None
    if gender is not _UNSET:
        if gender is None or gender == "" or gender == "plur":
            number, tense = number or "plur", tense or "past"
        elif gender in GENDERS:
            grammeme_gender, tense = GENDERS[gender], tense or "past"
            number = number or "sing"
        else:
            raise ValueError(f"unknown gender {gender!r}; use 'f', 'm', 'n' or None")
    if number not in (None, "sing", "plur"):
        raise ValueError(f"unknown number {number!r}; use 'sing' or 'plur'")
    if tense not in (None, "past", "pres", "futr"):
        raise ValueError(f"unknown tense {tense!r}; use 'past', 'pres' or 'futr'")
    if len(word) > MAX_TEXT:
        return word
    per = f"{person}per" if isinstance(person, int) or (isinstance(person, str) and person.isdigit()) else person
    return _verb(word, grammeme_gender, number, per, tense)


@lru_cache(maxsize=65536)
def subject_grammemes(subject: str) -> tuple[str | None, str, str]:
    """(gender, number, person) a verb takes from its subject: «визитки» → (None, plur, 3per), «вы» → 2per plur."""
    words = [w for w in subject.split() if _WORD.fullmatch(w)]
    if len(words) > 2 and "и" in (w.lower() for w in words[1:-1]):
        return None, "plur", "3per"
    for word in words:
        reading = _nominative(word, prefer=("NPRO", "NOUN"))
        if reading is None:
            continue
        tag = reading.tag
        if "NPRO" in tag:
            return tag.gender, tag.number or "sing", tag.person or "3per"
        if "NOUN" in tag:
            if "Name" in tag:
                code = _name_gender(word)
                return (GENDERS[code], "sing", "3per") if code else (None, "plur", "3per")
            if tag.number == "plur" or "Pltm" in tag:
                return None, "plur", "3per"
            return (tag.gender if tag.gender in ("masc", "femn", "neut") else "masc"), "sing", "3per"
    return None, "sing", "3per"


def agree_verb(verb_form: str, subject: str) -> str:
    """The verb agreeing with its subject, in the verb's own tense: «закончится» + «визитки» → «закончатся»."""
    if len(verb_form) > MAX_TEXT or len(subject) > MAX_TEXT:
        return verb_form
    gender, number, person = subject_grammemes(subject)
    reading = _verb_reading(verb_form)
    tense = reading.tag.tense if reading is not None else None
    if tense == "past":
        return _verb(verb_form, gender if number == "sing" else None, number, None, "past")
    return _verb(verb_form, None, number, person, tense)


def counted_verb(verb_form: str, count: Any, noun: str, locale: str = "ru_RU") -> str:
    """A verb before a counted subject, agreeing with the numeral: «прошёл 41 день», «прошли 2 дня», «прошло 5 дней».

    1, 21 … agree with the noun (masculine «прошёл день», feminine «прошла неделя»); 2–4 take the
    plural; 5–20 and fractions the neuter singular (non-past: the 3rd person singular).
    """
    kind = category(_plain(count))
    reading = _verb_reading(verb_form)
    past = reading is not None and (reading.tag.tense == "past" or "INFN" in reading.tag)
    if kind == "one":
        gender, _, _ = subject_grammemes(noun)
        form = _verb(verb_form, gender or "masc", "sing", None, "past") if past else \
            _verb(verb_form, None, "sing", "3per", None)
    elif kind == "few":
        form = _verb(verb_form, None, "plur", None if past else "3per", "past" if past else None)
    else:
        form = _verb(verb_form, "neut", "sing", None, "past") if past else _verb(verb_form, None, "sing", "3per", None)
    return f"{form} {agree(count, noun, locale=locale)}"


def passed(count: Any, noun: str = "день", locale: str = "ru_RU") -> str:
    """«прошёл 41 день», «прошли 2 дня», «прошло 5 дней», «прошла 1 неделя»."""
    return counted_verb("прошёл", count, noun, locale)


def remaining(count: Any, noun: str = "день", locale: str = "ru_RU") -> str:
    """«остался 1 день», «остались 2 дня», «осталось 5 дней», «осталась 1 неделя»."""
    return counted_verb("остался", count, noun, locale)


# --- gender of the addressee --------------------------------------------------------------------------

def polite_plural(text: str) -> str:
    """Past-tense verbs and short adjectives / participles put in the plural: «пробовал и отказался» →
    «пробовали и отказались», «рад» → «рады». How Russian addresses someone whose gender it does not know."""
    return text if len(text) > MAX_TEXT else _polite_plural(text)


@lru_cache(maxsize=65536)
def _polite_plural(text: str) -> str:
    def plural(match: re.Match) -> str:
        word = match.group(0)
        for reading in parse(word):
            tag = reading.tag
            if ("VERB" in tag and tag.tense == "past" and tag.number == "sing") or \
                    ({"ADJS", "PRTS"} & set(tag.grammemes) and tag.number == "sing"):
                form = reading.inflect({"plur"} | ({"past"} if "VERB" in tag else set()))
                return _restyle(word, form.word) if form is not None else word
            break
        return word

    return _WORD.sub(plural, text)


def pick(gender: str | None, masculine: str, feminine: str, neutral: str | None = None) -> str:
    """The form for a gender: "m" → masculine, "f" → feminine, unknown → ``neutral`` (by default the
    polite plural of the masculine form: «пробовал» → «пробовали»)."""
    if gender in ("m", "masc"):
        return masculine
    if gender in ("f", "femn"):
        return feminine
    return neutral if neutral is not None else polite_plural(masculine)


# --- dates --------------------------------------------------------------------------------------------

def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, str):
        return date.fromisoformat(value)
    return value


@lru_cache(maxsize=4096)
def _month_in(value: date, with_year: bool, locale: str) -> str:
    if _locale(locale).language != "ru":
        return format_date(value, "LLLL y" if with_year else "LLLL", locale=_locale(locale))
    month = f"в {_MONTHS_LOCT[value.month - 1]}"
    return f"{month} {value.year} года" if with_year else month


def month_in(value: Any, with_year: bool = True, locale: str = "ru_RU") -> str:
    """«в июле 2026 года» (``with_year=False``: «в июле»): a month as running text says it."""
    return _month_in(_as_date(value), with_year, locale)


def days_between(value: Any, today: Any) -> int:
    """Days from ``today`` to ``value`` (negative when it has passed)."""
    return (_as_date(value) - _as_date(today)).days


@lru_cache(maxsize=4096)
def _relative_days(days: int, locale: str) -> str:
    near = {0: "сегодня", 1: "завтра", 2: "послезавтра", -1: "вчера", -2: "позавчера"}
    if days in near:
        return near[days]
    return f"через {agree(days, 'день', locale=locale)}" if days > 0 else f"{agree(-days, 'день', locale=locale)} назад"


def relative_days(days: Any, today: Any = None, locale: str = "ru_RU") -> str:
    """«сегодня», «завтра», «послезавтра», «через 5 дней», «вчера», «позавчера», «5 дней назад».

    ``days`` is a number of days from today, a ``timedelta``, or a date (then ``today`` is needed).
    """
    if isinstance(days, timedelta):
        days = days.days
    elif isinstance(days, (date, str)):
        if today is None:
            raise ValueError("relative_days of a date needs today's date")
        days = days_between(days, today)
    return _relative_days(int(days), locale)

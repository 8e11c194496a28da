"""Formatting filters for templates: money, numbers, dates and plural forms in the customer's locale.

They are pure, so their results are cached per process: a campaign formats the same few dates and
prices thousands of times. The Russian grammar (agreement, cases, verbs, months) is in
``channels.render.russian``; the two helpers at the end read the template's context for it
(the customer's gender, today's date).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache, wraps
from typing import Any, Callable

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2 import pass_context

from channels.render import russian


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
def decimal(value: Any, digits: int = 1, locale: str = "ru_RU") -> str:
    """A number as the locale writes it, at most ``digits`` decimals: ``8,5``, ``12 500``, never ``8.5``."""
    if isinstance(value, str):
        value = Decimal(value.replace(",", "."))
    pattern = "#,##0" + ("." + "#" * int(digits) if int(digits) > 0 else "")
    return format_decimal(value, format=pattern, locale=_locale(locale))


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


def with_verb(count: Any, verb: str, noun: str = "день", locale: str = "ru_RU") -> str:
    """``{{ n|with_verb("остался", "день") }}``: a verb agreeing with a counted subject («осталось 5 дней»)."""
    return russian.counted_verb(verb, count, noun, locale)


def in_sentence(text: Any) -> str:
    """A title inside a sentence: «Менеджер по продажам» → «менеджер по продажам»; «IT-директор», «ООО …» stay."""
    text = "" if text is None else str(text)
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


@pass_context
def by_gender(context: Any, masculine: str, feminine: str, neutral: str | None = None) -> str:
    """The template global ``g``: the form for ``customer.gender`` (unknown: ``neutral``, else the polite plural).

    ``{{ g("пробовал", "пробовала") }}`` → «пробовала» for a woman, «пробовали» when the gender is unknown.
    """
    customer = context.get("customer")
    gender = customer.get("gender") if isinstance(customer, dict) else getattr(customer, "gender", None)
    return russian.pick(gender, masculine, feminine, neutral)


@pass_context
def relative_days(context: Any, value: Any, locale: str = "ru_RU") -> str:
    """«сегодня», «завтра», «через 5 дней», «5 дней назад»: from a number of days, or from a date and ``today``."""
    return russian.relative_days(value, context.get("today"), locale=locale)

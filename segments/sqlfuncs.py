"""SQL building blocks that must mean the same on SQLite and PostgreSQL.

Each is a SQLAlchemy element compiled per dialect; every value (attribute names included) stays a
bound parameter. Typed attribute access returns NULL when the attribute is missing or of another
JSON type, so ``attr_number`` never fails on a text value (PostgreSQL would raise on a cast).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

_SQLITE_PATH = "'$.' || json_quote({key})"


class attr_text(FunctionElement):
    """A commercial attribute's value when it is a JSON string, else NULL."""

    type = String()
    inherit_cache = True
    name = "attr_text"


class attr_number(FunctionElement):
    """A commercial attribute's value when it is a JSON number, else NULL."""

    type = Float()
    inherit_cache = True
    name = "attr_number"


class attr_present(FunctionElement):
    """The attribute's JSON type name when present and not null, else NULL."""

    type = String()
    inherit_cache = True
    name = "attr_present"


class month_day(FunctionElement):
    """``MM-DD`` of a date (birthdays)."""

    type = String()
    inherit_cache = True
    name = "month_day"


class text_contains(FunctionElement):
    """True when the first text contains the second, case-sensitively on both databases."""

    type = Boolean()
    inherit_cache = True
    name = "text_contains"


class epoch_day(FunctionElement):
    """Days from 1970-01-01 to a date, as an integer."""

    type = Integer()
    inherit_cache = True
    name = "epoch_day"


def _args(element: FunctionElement, compiler: Any, **kw: Any) -> list[str]:
    return [compiler.process(arg, **kw) for arg in element.clauses]


@compiles(attr_text, "sqlite")
def _attr_text_sqlite(element, compiler, **kw):
    column, key = _args(element, compiler, **kw)
    path = _SQLITE_PATH.format(key=key)
    return f"(CASE WHEN json_type({column}, {path}) = 'text' THEN json_extract({column}, {path}) END)"


@compiles(attr_text, "postgresql")
def _attr_text_pg(element, compiler, **kw):
    column, key = _args(element, compiler, **kw)
    return f"(CASE WHEN jsonb_typeof({column} -> CAST({key} AS TEXT)) = 'string' " \
           f"THEN {column} ->> CAST({key} AS TEXT) END)"


@compiles(attr_number, "sqlite")
def _attr_number_sqlite(element, compiler, **kw):
    column, key = _args(element, compiler, **kw)
    path = _SQLITE_PATH.format(key=key)
    return (f"(CASE WHEN json_type({column}, {path}) IN ('integer', 'real') "
            f"THEN json_extract({column}, {path}) END)")


@compiles(attr_number, "postgresql")
def _attr_number_pg(element, compiler, **kw):
    column, key = _args(element, compiler, **kw)
    return (f"(CASE WHEN jsonb_typeof({column} -> CAST({key} AS TEXT)) = 'number' "
            f"THEN CAST({column} ->> CAST({key} AS TEXT) AS DOUBLE PRECISION) END)")


@compiles(attr_present, "sqlite")
def _attr_present_sqlite(element, compiler, **kw):
    column, key = _args(element, compiler, **kw)
    return f"NULLIF(json_type({column}, {_SQLITE_PATH.format(key=key)}), 'null')"


@compiles(attr_present, "postgresql")
def _attr_present_pg(element, compiler, **kw):
    column, key = _args(element, compiler, **kw)
    return f"NULLIF(jsonb_typeof({column} -> CAST({key} AS TEXT)), 'null')"


@compiles(month_day, "sqlite")
def _month_day_sqlite(element, compiler, **kw):
    (value,) = _args(element, compiler, **kw)
    return f"strftime('%m-%d', {value})"


@compiles(month_day, "postgresql")
def _month_day_pg(element, compiler, **kw):
    (value,) = _args(element, compiler, **kw)
    return f"to_char({value}, 'MM-DD')"


@compiles(text_contains, "sqlite")
def _contains_sqlite(element, compiler, **kw):
    haystack, needle = _args(element, compiler, **kw)
    return f"(instr({haystack}, {needle}) > 0)"


@compiles(text_contains, "postgresql")
def _contains_pg(element, compiler, **kw):
    haystack, needle = _args(element, compiler, **kw)
    return f"(strpos({haystack}, CAST({needle} AS TEXT)) > 0)"


@compiles(epoch_day, "sqlite")
def _epoch_day_sqlite(element, compiler, **kw):
    (value,) = _args(element, compiler, **kw)
    return f"CAST(julianday({value}) - 2440587.5 AS INTEGER)"


@compiles(epoch_day, "postgresql")
def _epoch_day_pg(element, compiler, **kw):
    (value,) = _args(element, compiler, **kw)
    return f"({value} - DATE '1970-01-01')"


def key_param(key: str):
    """A bound attribute name (never spliced into the SQL)."""
    return bindparam(None, key, type_=String())




class year_month(FunctionElement):
    """``YYYY-MM`` of a date (monthly slices)."""

    type = String()
    inherit_cache = True
    name = "year_month"


@compiles(year_month, "sqlite")
def _year_month_sqlite(element, compiler, **kw):
    (value,) = _args(element, compiler, **kw)
    return f"strftime('%Y-%m', {value})"


@compiles(year_month, "postgresql")
def _year_month_pg(element, compiler, **kw):
    (value,) = _args(element, compiler, **kw)
    return f"to_char({value}, 'YYYY-MM')"

"""Segment rules: the declarative language, parsed and checked before anything touches the database.

A rule is a mapping whose first key names its kind::

    all: [rule, ...]            any: [rule, ...]            not: rule
    segment: NAME               (another segment's rule)
    field: region               + one operator       (customer fields, see FIELDS)
    attribute: tv               + one operator       (commercial attributes, JSON)
    region: [Москва, ...]       manager: [ivanova]   (shortcuts for field: … in: …)
    purchased: {category|product: X, within_days: N}
    purchases: {metric: count|sum|avg, category|product: X, within_days: N} + operator
    stat: purchase_count|total_amount|avg_check|aipt_days|recency_days|… + operator
    event: {kind: haircut, within_days: N}
    rfm: {group: champions | groups: [...], r|f|m: [4, 5]}
    birthday_within: N                                  (days, as of the evaluation date)
    has_contact: email|phone|telegram|sms|voice|call    (an active contact point)
    consent: {purpose: marketing|service, channel: email|sms|voice|telegram|call}
    due: {need: replenishment, category|product: X, lead_days: 7, grace_days: 3}
    due: {need: service, kind: haircut, interval_days: 30 | interval: customer, lead_days: 0, grace_days: 3}
                                                        (due from lead_days before the predicted date until
                                                         grace_days after it, default 3; grace_days: null
                                                         keeps a passed need selected for good)
    since_last: {category|product|event_kind: X, months: 4, window_days: 7}
    lapsed: {k: 2, min_days: 90}
    cross_sell: {bought: A, not_bought: B, within_days: N}

Operators: equals, not_equals, in, not_in, gt, gte, lt, lte, range: [min, max], contains, exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any
from touchflow.errors import InputError

FIELDS = ("external_id", "name", "first_name", "birthday", "gender", "region", "city", "timezone", "manager",
          "preferred_channel", "created_at")
DATE_FIELDS = ("birthday",)
STATS = ("purchase_count", "purchase_days", "total_amount", "avg_check", "aipt_days", "recency_days",
         "lifetime_days", "first_purchase_on", "last_purchase_on")
DATE_STATS = ("first_purchase_on", "last_purchase_on")
OPERATORS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte", "range", "contains", "exists")
COMPARISONS = ("equals", "not_equals", "in", "not_in", "gt", "gte", "lt", "lte", "range")
METRICS = ("count", "sum", "avg")
RFM_GROUPS = ("champions", "loyal", "potential_loyalists", "new_customers", "promising", "need_attention",
              "about_to_sleep", "at_risk", "cannot_lose", "hibernating", "lost")
CONTACT_TARGETS = ("email", "phone", "telegram", "sms", "voice", "call")
CHANNELS = ("email", "sms", "voice", "telegram", "call")
PURPOSES = ("marketing", "service")
NEEDS = ("replenishment", "service")
DEFAULT_GRACE_DAYS = 3  # a need passed longer ago than this is no longer "due" (the customer has moved on)
KINDS = ("all", "any", "not", "segment", "field", "attribute", "region", "manager", "purchased", "purchases",
         "stat", "event", "rfm", "birthday_within", "has_contact", "consent", "due", "since_last", "lapsed",
         "cross_sell")


class SegmentError(InputError):
    """A segment file or rule is wrong; the message names the file, the rule and the valid choices."""


@dataclass
class Rule:
    """One checked rule: its kind, its parameters, its children and where it was written."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    children: list[Rule] = field(default_factory=list)
    where: str = ""


@dataclass
class Condition:
    """An operator and its value, e.g. ``gte 3`` or ``in [a, b]``."""

    op: str
    value: Any


def _fail(where: str, message: str) -> SegmentError:
    return SegmentError(f"{where}: {message}")


def _choices(value: Any, choices: tuple[str, ...], where: str, what: str) -> str:
    if value not in choices:
        raise _fail(where, f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
    return value


def _positive_int(value: Any, where: str, what: str, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise _fail(where, f"{what} must be a {'non-negative' if zero else 'positive'} whole number, "
                           f"not {value!r}")
    return value


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"{what} must be a number, not {value!r}")
    return value


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"{what} must be non-empty text, not {value!r}")
    return value


def _scalar(value: Any, where: str, kind: str) -> Any:
    if kind == "date":
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise _fail(where, f"{value!r} is not a date; write it as 2024-03-15") from None
    if kind == "number":
        return _number(value, where, "the value")
    if isinstance(value, (dict, list)) or value is None:
        raise _fail(where, f"the value must be text, a number or true/false, not {value!r}")
    return value


def parse_condition(spec: dict[str, Any], where: str, value_kind: str = "any",
                    allowed: tuple[str, ...] = OPERATORS) -> Condition:
    """Find the one operator in ``spec`` and check its value (``value_kind``: any, number, date, text)."""
    ops = [key for key in spec if key in OPERATORS]
    unknown = [key for key in spec if key not in OPERATORS]
    if unknown:
        raise _fail(where, f"unknown operator(s) {', '.join(map(repr, unknown))}; choose one of: "
                           f"{', '.join(allowed)}")
    if len(ops) != 1:
        raise _fail(where, f"give exactly one operator ({', '.join(allowed)}), found {len(ops)}")
    op = ops[0]
    if op not in allowed:
        raise _fail(where, f"operator {op!r} does not apply here; choose one of: {', '.join(allowed)}")
    value = spec[op]
    if op == "exists":
        if not isinstance(value, bool):
            raise _fail(where, f"exists takes true or false, not {value!r}")
    elif op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise _fail(where, f"{op} takes a non-empty list, not {value!r}")
        value = [_scalar(v, where, value_kind) for v in value]
    elif op == "range":
        if isinstance(value, dict):
            value = [value.get("min"), value.get("max")]
        if not isinstance(value, list) or len(value) != 2 or value == [None, None]:
            raise _fail(where, f"range takes [min, max] (either may be null), not {value!r}")
        value = [None if v is None else _scalar(v, where, value_kind if value_kind != "any" else "number")
                 for v in value]
    elif op == "contains":
        value = _text(value, where, "contains")
    else:
        value = _scalar(value, where, value_kind)
    return Condition(op, value)


def _split(spec: Any, where: str, kind: str) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise _fail(where, f"{kind} takes a mapping of options, not {spec!r}")
    return spec


def _only(spec: dict[str, Any], allowed: tuple[str, ...], where: str, kind: str) -> None:
    unknown = [key for key in spec if key not in allowed]
    if unknown:
        raise _fail(where, f"{kind} has unknown option(s) {', '.join(map(repr, unknown))}; "
                           f"options: {', '.join(allowed)}")


def _one_of(spec: dict[str, Any], keys: tuple[str, ...], where: str, kind: str) -> tuple[str, str]:
    given = [key for key in keys if key in spec]
    if len(given) != 1:
        raise _fail(where, f"{kind} needs exactly one of: {', '.join(keys)}")
    return given[0], _text(spec[given[0]], where, given[0])


def parse_rule(spec: Any, where: str) -> Rule:
    """Check one rule (recursively) and return it; raise SegmentError naming ``where`` otherwise."""
    if not isinstance(spec, dict) or not spec:
        raise _fail(where, f"a rule is a mapping such as {{attribute: tv, equals: 'no'}}, not {spec!r}")
    kinds = [key for key in spec if key in KINDS]
    if len(kinds) != 1:
        found = f"found {', '.join(map(repr, kinds))}" if kinds else f"found {', '.join(map(repr, spec))}"
        raise _fail(where, f"a rule needs exactly one of: {', '.join(KINDS)} ({found})")
    kind = kinds[0]
    rest = {k: v for k, v in spec.items() if k != kind}
    value = spec[kind]
    handler = _PARSERS[kind]
    return handler(value, rest, f"{where}.{kind}" if kind in ("all", "any", "not") else where)


def _parse_group(kind: str):
    def parse(value: Any, rest: dict, where: str) -> Rule:
        if rest:
            raise _fail(where, f"{kind} takes only a list of rules")
        if not isinstance(value, list) or not value:
            raise _fail(where, f"{kind} takes a non-empty list of rules")
        return Rule(kind, children=[parse_rule(item, f"{where}[{i}]") for i, item in enumerate(value)], where=where)
    return parse


def _parse_not(value: Any, rest: dict, where: str) -> Rule:
    if rest:
        raise _fail(where, "not takes one rule")
    return Rule("not", children=[parse_rule(value, where)], where=where)


def _parse_segment(value: Any, rest: dict, where: str) -> Rule:
    if rest:
        raise _fail(where, "segment takes only a segment name")
    return Rule("segment", {"name": _text(value, where, "segment")}, where=where)


def _parse_field(value: Any, rest: dict, where: str) -> Rule:
    name = _choices(value, FIELDS, where, "field")
    kind = "date" if name in DATE_FIELDS else "any"
    return Rule("field", {"name": name, "condition": parse_condition(rest, where, kind)}, where=where)


def _parse_attribute(value: Any, rest: dict, where: str) -> Rule:
    name = _text(value, where, "attribute")
    return Rule("attribute", {"name": name, "condition": parse_condition(rest, where)}, where=where)


def _parse_shortcut(name: str):
    def parse(value: Any, rest: dict, where: str) -> Rule:
        if rest:
            raise _fail(where, f"{name} takes a value or a list of values")
        values = value if isinstance(value, list) else [value]
        values = [_text(v, where, name) for v in values]
        return Rule("field", {"name": name, "condition": Condition("in", values)}, where=where)
    return parse


def _scope(spec: dict[str, Any], where: str, kind: str) -> dict[str, Any]:
    key, value = _one_of(spec, ("category", "product"), where, kind)
    result: dict[str, Any] = {"scope": key, "value": value}
    if "within_days" in spec:
        result["within_days"] = _positive_int(spec["within_days"], where, "within_days")
    return result


def _parse_purchased(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "purchased")
    _only(spec, ("category", "product", "within_days"), where, "purchased")
    if rest:
        raise _fail(where, "purchased takes its options inside it: {category: X, within_days: N}")
    return Rule("purchased", _scope(spec, where, "purchased"), where=where)


def _parse_purchases(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "purchases")
    _only(spec, ("metric", "category", "product", "within_days"), where, "purchases")
    params: dict[str, Any] = {"metric": _choices(spec.get("metric"), METRICS, where, "metric")}
    if "category" in spec or "product" in spec:
        params.update(_scope(spec, where, "purchases"))
    elif "within_days" in spec:
        params["within_days"] = _positive_int(spec["within_days"], where, "within_days")
    params["condition"] = parse_condition(rest, where, "number", COMPARISONS)
    return Rule("purchases", params, where=where)


def _parse_stat(value: Any, rest: dict, where: str) -> Rule:
    name = _choices(value, STATS, where, "stat")
    kind = "date" if name in DATE_STATS else "number"
    return Rule("stat", {"name": name, "condition": parse_condition(rest, where, kind, COMPARISONS + ("exists",))},
                where=where)


def _parse_event(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "event")
    _only(spec, ("kind", "within_days"), where, "event")
    params: dict[str, Any] = {"kind": _text(spec.get("kind"), where, "kind")}
    if "within_days" in spec:
        params["within_days"] = _positive_int(spec["within_days"], where, "within_days")
    if rest:
        params["condition"] = parse_condition(rest, where, "number", COMPARISONS)
    return Rule("event", params, where=where)


def _scores(value: Any, where: str, what: str) -> list[int]:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
            raise _fail(where, f"rfm {what} scores are whole numbers 1..5, not {v!r}")
    return values


def _parse_rfm(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "rfm")
    _only(spec, ("group", "groups", "r", "f", "m"), where, "rfm")
    params: dict[str, Any] = {}
    groups = spec.get("groups", [spec["group"]] if "group" in spec else [])
    for group in groups:
        _choices(group, RFM_GROUPS, where, "rfm group")
    if groups:
        params["groups"] = groups
    for letter in ("r", "f", "m"):
        if letter in spec:
            params[letter] = _scores(spec[letter], where, letter)
    if not params:
        raise _fail(where, "rfm needs group, groups or r / f / m scores")
    return Rule("rfm", params, where=where)


def _parse_birthday(value: Any, rest: dict, where: str) -> Rule:
    return Rule("birthday_within", {"days": _positive_int(value, where, "birthday_within", zero=True)}, where=where)


def _parse_has_contact(value: Any, rest: dict, where: str) -> Rule:
    return Rule("has_contact", {"target": _choices(value, CONTACT_TARGETS, where, "contact")}, where=where)


def _parse_consent(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "consent")
    _only(spec, ("purpose", "channel"), where, "consent")
    return Rule("consent", {"purpose": _choices(spec.get("purpose"), PURPOSES, where, "purpose"),
                            "channel": _choices(spec.get("channel"), CHANNELS, where, "channel")}, where=where)


def _parse_due(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "due")
    need = _choices(spec.get("need"), NEEDS, where, "need")
    params: dict[str, Any] = {"need": need, "lead_days": _positive_int(spec.get("lead_days", 7 if need ==
                                                                                 "replenishment" else 0),
                                                                        where, "lead_days", zero=True)}
    grace = spec.get("grace_days", DEFAULT_GRACE_DAYS)
    params["grace_days"] = None if grace is None else _positive_int(grace, where, "grace_days", zero=True)
    if need == "replenishment":
        _only(spec, ("need", "category", "product", "lead_days", "grace_days"), where, "due")
        key, item = _one_of(spec, ("category", "product"), where, "due replenishment")
        params["key"] = f"{key}:{item}"
    else:
        _only(spec, ("need", "kind", "interval_days", "interval", "lead_days", "grace_days"), where, "due")
        params["key"] = _text(spec.get("kind"), where, "kind")
        if "interval_days" in spec:
            params["interval_days"] = _positive_int(spec["interval_days"], where, "interval_days")
        else:
            _choices(spec.get("interval", "customer"), ("customer",), where, "interval")
    return Rule("due", params, where=where)


def _parse_since_last(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "since_last")
    _only(spec, ("category", "product", "event_kind", "months", "window_days"), where, "since_last")
    scope, item = _one_of(spec, ("category", "product", "event_kind"), where, "since_last")
    return Rule("since_last", {"scope": scope, "value": item,
                               "months": _positive_int(spec.get("months"), where, "months"),
                               "window_days": _positive_int(spec.get("window_days", 7), where, "window_days",
                                                            zero=True)}, where=where)


def _parse_lapsed(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "lapsed")
    _only(spec, ("k", "min_days"), where, "lapsed")
    return Rule("lapsed", {"k": _number(spec.get("k", 2), where, "k"),
                           "min_days": _positive_int(spec.get("min_days", 90), where, "min_days")}, where=where)


def _parse_cross_sell(value: Any, rest: dict, where: str) -> Rule:
    spec = _split(value, where, "cross_sell")
    _only(spec, ("bought", "not_bought", "within_days"), where, "cross_sell")
    params = {"bought": _text(spec.get("bought"), where, "bought"),
              "not_bought": _text(spec.get("not_bought"), where, "not_bought")}
    if "within_days" in spec:
        params["within_days"] = _positive_int(spec["within_days"], where, "within_days")
    return Rule("cross_sell", params, where=where)


_PARSERS = {
    "all": _parse_group("all"), "any": _parse_group("any"), "not": _parse_not, "segment": _parse_segment,
    "field": _parse_field, "attribute": _parse_attribute, "region": _parse_shortcut("region"),
    "manager": _parse_shortcut("manager"), "purchased": _parse_purchased, "purchases": _parse_purchases,
    "stat": _parse_stat, "event": _parse_event, "rfm": _parse_rfm, "birthday_within": _parse_birthday,
    "has_contact": _parse_has_contact, "consent": _parse_consent, "due": _parse_due,
    "since_last": _parse_since_last, "lapsed": _parse_lapsed, "cross_sell": _parse_cross_sell,
}

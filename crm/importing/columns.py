"""The header convention of import files: canonical column names, their aliases, and ``--map``.

Headers are matched case-insensitively, ignoring spaces, dashes and underscores, so
``Дата рождения``, ``birthday`` and ``Birth-Date`` all find their column. Customer and event files
may carry any number of commercial attributes as ``attr.<name>`` (or ``attr_<name>``) columns.
Rejects files written by touchflow add ``_row`` and ``_reason`` columns, which are ignored, so a
fixed rejects file can be imported as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from touchflow.errors import InputError

ATTRIBUTE_PREFIXES = ("attr.", "attr_", "attr:")
IGNORED_COLUMNS = {"_row", "_reason"}


@dataclass(frozen=True)
class ColumnSpec:
    """The columns one kind of import file knows."""

    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    aliases: dict[str, tuple[str, ...]]
    attributes: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """Every canonical column name, required first."""
        return self.required + self.optional


_CUSTOMER = "customer"
_CUSTOMER_ALIASES = ("customer", "customer_id", "customer_external_id", "client", "client_id",
                     "клиент", "код клиента", "id клиента")

SPECS: dict[str, ColumnSpec] = {
    "customers": ColumnSpec(
        kind="customers",
        required=("external_id",),
        optional=("name", "first_name", "birthday", "gender", "region", "city", "timezone", "manager", "email",
                  "phone", "telegram", "preferred_channel"),
        aliases={
            "external_id": ("id", "customer_id", "client_id", "код", "код клиента", "id клиента", "external id"),
            "name": ("full_name", "фио", "клиент", "наименование", "имя клиента"),
            "first_name": ("имя", "given_name"),
            "birthday": ("birth_date", "date_of_birth", "dob", "дата рождения", "день рождения"),
            "gender": ("sex", "пол"),
            "region": ("регион", "область"),
            "city": ("town", "город", "населённый пункт", "населенный пункт"),
            "timezone": ("tz", "time_zone", "часовой пояс"),
            "manager": ("owner", "manager_code", "менеджер", "ответственный"),
            "email": ("e-mail", "mail", "почта", "электронная почта", "эл. почта"),
            "phone": ("mobile", "phone_number", "телефон", "мобильный", "мобильный телефон"),
            "telegram": ("telegram_chat_id", "chat_id", "телеграм"),
            "preferred_channel": ("channel", "предпочтительный канал", "канал"),
        },
        attributes=True,
    ),
    "managers": ColumnSpec(
        kind="managers",
        required=("code",),
        optional=("name", "position", "phone", "email", "capacity", "active"),
        aliases={
            "code": ("manager", "manager_code", "login", "код", "код менеджера", "менеджер", "логин"),
            "name": ("full_name", "фио", "имя"),
            "position": ("title", "job_title", "должность"),
            "phone": ("mobile", "phone_number", "телефон"),
            "email": ("e-mail", "mail", "почта", "электронная почта"),
            "capacity": ("daily_call_capacity", "calls_per_day", "звонков в день", "лимит звонков"),
            "active": ("status", "активен", "статус"),
        },
    ),
    "purchases": ColumnSpec(
        kind="purchases",
        required=(_CUSTOMER, "date", "product", "amount"),
        optional=("order_id", "category", "quantity", "currency"),
        aliases={
            _CUSTOMER: _CUSTOMER_ALIASES[1:],
            "date": ("purchased_on", "purchase_date", "order_date", "дата", "дата покупки"),
            "product": ("product_name", "item", "sku", "товар", "номенклатура", "наименование"),
            "amount": ("sum", "total", "сумма", "стоимость"),
            "order_id": ("line_id", "purchase_id", "номер заказа", "заказ"),
            "category": ("категория", "группа"),
            "quantity": ("qty", "количество", "кол-во", "колво"),
            "currency": ("валюта",),
        },
    ),
    "events": ColumnSpec(
        kind="events",
        required=(_CUSTOMER, "date", "kind"),
        optional=("event_id", "note"),
        aliases={
            _CUSTOMER: _CUSTOMER_ALIASES[1:],
            "date": ("occurred_on", "visit_date", "дата", "дата визита"),
            "kind": ("type", "event", "service", "вид", "услуга", "тип"),
            "event_id": ("visit_id", "id визита"),
            "note": ("comment", "комментарий", "примечание"),
        },
        attributes=True,
    ),
    "consents": ColumnSpec(
        kind="consents",
        required=(_CUSTOMER, "channel", "purpose", "status", "at"),
        optional=("source", "wording"),
        aliases={
            _CUSTOMER: _CUSTOMER_ALIASES[1:],
            "channel": ("канал",),
            "purpose": ("цель",),
            "status": ("granted", "action", "статус", "согласие"),
            "at": ("date", "given_at", "timestamp", "дата", "дата согласия"),
            "source": ("источник",),
            "wording": ("version", "text", "формулировка", "версия"),
        },
    ),
}


class ColumnError(InputError):
    """The header does not fit the convention (unknown or missing columns)."""


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lstrip("\ufeff").lower())


def parse_map(text: str | None) -> dict[str, str]:
    """Parse ``--map "Tel=phone,Client Code=external_id"`` into {file header: column}."""
    mapping: dict[str, str] = {}
    if not text:
        return mapping
    for part in text.split(","):
        if not part.strip():
            continue
        source, eq, target = part.partition("=")
        if not eq or not source.strip() or not target.strip():
            raise ColumnError(f"--map entry {part!r} is not HEADER=column; example: --map \"Tel=phone\"")
        mapping[source.strip()] = target.strip()
    return mapping


def resolve_header(spec: ColumnSpec, header: list[str], mapping: dict[str, str] | None = None) -> dict[int, str]:
    """Map column positions to canonical names (``attr.<name>`` for attributes; ignored ones left out).

    Raises ColumnError naming unknown and missing columns and the accepted names.
    """
    lookup: dict[str, str] = {}
    for name in spec.names:
        lookup[_key(name)] = name
        for alias in spec.aliases.get(name, ()):
            lookup[_key(alias)] = name
    user_map = {_key(k): v for k, v in (mapping or {}).items()}
    for target in user_map.values():
        if target not in spec.names and not (spec.attributes and target.startswith(ATTRIBUTE_PREFIXES)):
            raise ColumnError(
                f"--map names column {target!r}, which {spec.kind} files do not have; "
                f"columns: {', '.join(spec.names)}"
            )
    positions: dict[int, str] = {}
    unknown: list[str] = []
    for index, raw in enumerate(header):
        key = _key(raw)
        if not key or raw.strip() in IGNORED_COLUMNS:
            continue
        target = user_map.get(key) or lookup.get(key)
        if target is None and spec.attributes:
            lowered = raw.strip().lower()
            for prefix in ATTRIBUTE_PREFIXES:
                if lowered.startswith(prefix) and len(lowered) > len(prefix):
                    target = "attr." + raw.strip()[len(prefix):].strip()
                    break
        if target is not None and target.startswith(ATTRIBUTE_PREFIXES) and not target.startswith("attr."):
            target = "attr." + target[5:]
        if target is None:
            unknown.append(raw)
            continue
        if target in positions.values():
            raise ColumnError(f"column {raw!r} maps to {target!r}, which another column already fills")
        positions[index] = target
    if unknown:
        hint = " or name commercial attributes attr.<name>" if spec.attributes else ""
        raise ColumnError(
            f"unknown column(s) {', '.join(repr(u) for u in unknown)} in a {spec.kind} file. "
            f"Known columns: {', '.join(spec.names)}. Rename them, map them with --map \"HEADER=column\"{hint}."
        )
    missing = [name for name in spec.required if name not in positions.values()]
    if missing:
        raise ColumnError(
            f"required column(s) {', '.join(missing)} missing from a {spec.kind} file "
            f"(header: {', '.join(header)}). Add them or map them with --map \"HEADER=column\"."
        )
    return positions

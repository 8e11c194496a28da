"""Turn values as CRMs and Excel export them into clean ones, or say exactly what is wrong.

Every parser raises ``ValueError`` with a message meant for the person who fixes the row.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email

_PHONE_PUNCTUATION = re.compile(r"[\s()\-.\u00a0\u2010-\u2015/]")
_EMAIL_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_ISO_DATE = re.compile(r"^(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})$")
_RU_DATE = re.compile(r"^(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})$")
_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d.%m.%y", "%d/%m/%Y", "%Y.%m.%d")
_DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%Y-%m-%dT%H:%M",
)
_TRUE = {"1", "true", "yes", "y", "да", "granted", "opt-in", "optin", "subscribed", "+"}
_FALSE = {"0", "false", "no", "n", "нет", "revoked", "opt-out", "optout", "unsubscribed", "-"}


def normalize_phone(raw: str, default_region: str = "RU") -> str:
    """Return ``raw`` in E.164 (``8 (916) 123-45-67`` → ``+79161234567``) or raise ValueError."""
    text = raw.strip()
    if not text:
        raise ValueError("phone is empty")
    compact = _PHONE_PUNCTUATION.sub("", text)
    number = _fast_number(compact, default_region)
    if number is None:
        try:
            number = phonenumbers.parse(text, default_region)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"phone {raw!r} is not a phone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"phone {raw!r} is not a valid number for region {default_region} or its own country code")
    return f"+{number.country_code}{number.national_number}"


def _fast_number(compact: str, region: str) -> phonenumbers.PhoneNumber | None:
    """Build the number directly for the common shapes (``+<digits>``, Russian ``8``/``7`` + 10 digits).

    Skips ``phonenumbers.parse`` (the costly part) where the country code is certain; every
    result is still checked by ``is_valid_number``.
    """
    if compact.startswith("+") and compact[1:].isdigit():
        digits = compact[1:]
        for size in (1, 2, 3):
            code = int(digits[:size])
            if phonenumbers.region_code_for_country_code(code) != phonenumbers.UNKNOWN_REGION:
                national = digits[size:]
                if not national or national.startswith("0"):
                    return None
                return phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
        return None
    if region == "RU" and compact.isdigit():
        if len(compact) == 11 and compact[0] in "78":
            return phonenumbers.PhoneNumber(country_code=7, national_number=int(compact[1:]))
        if len(compact) == 10 and compact[0] in "3489":
            return phonenumbers.PhoneNumber(country_code=7, national_number=int(compact))
    return None


@lru_cache(maxsize=65536)
def _normalize_domain(domain: str) -> str:
    return validate_email(f"a@{domain}", check_deliverability=False).ascii_domain


def normalize_email(raw: str) -> str:
    """Return the address trimmed and lower-cased, or raise ValueError if it is not valid syntax.

    No DNS lookups. Plain ASCII addresses are checked with email-validator's rules per domain
    (cached); anything else goes through email-validator whole.
    """
    text = raw.strip()
    if not text:
        raise ValueError("email is empty")
    local, at, domain = text.rpartition("@")
    try:
        if at and len(local) <= 64 and len(text) <= 254 and _EMAIL_LOCAL_ATOM.match(local):
            return f"{local}@{_normalize_domain(domain.lower())}".lower()
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(f"email {raw!r} is not valid: {exc}") from None


def _strptime_any(text: str, formats: tuple[str, ...]) -> datetime | None:
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def parse_date(raw: object) -> date:
    """Parse ISO (``2024-03-15``) or Russian (``15.03.2024``) dates; Excel cells may be dates already."""
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    text = str(raw).strip()
    match = _ISO_DATE.match(text) or _RU_DATE.match(text)
    if match:
        year, month, day = (int(match[g]) for g in ("y", "m", "d"))
        try:
            return date(year, month, day)
        except ValueError:
            raise ValueError(f"date {raw!r} is not a date: there is no such day") from None
    value = _strptime_any(text, _DATE_FORMATS) or _strptime_any(text, _DATETIME_FORMATS)
    if value is None:
        raise ValueError(f"date {raw!r} is not a date; write it as 2024-03-15 or 15.03.2024")
    return value.date()


def parse_datetime(raw: object, tz: str = "UTC") -> datetime:
    """Parse a date or date-time; values without a zone are read in ``tz``; returns UTC."""
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, date):
        value = datetime.combine(raw, time())
    else:
        text = str(raw).strip()
        value = _strptime_any(text, _DATETIME_FORMATS) or _strptime_any(text, _DATE_FORMATS)
        if value is None:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"date-time {raw!r} is not a date-time; write it as 2024-03-15 10:30 or 15.03.2024 10:30"
                ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(tz))
    return value.astimezone(timezone.utc)


def parse_decimal(raw: object, field: str = "number") -> Decimal:
    """Parse ``1 500,50`` / ``1500.5`` / Excel numbers into a Decimal."""
    if isinstance(raw, bool):
        raise ValueError(f"{field} {raw!r} is not a number")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        return Decimal(repr(raw))
    text = str(raw).strip().replace("\u00a0", "").replace(" ", "").replace("\u202f", "")
    if "," in text and "." in text:
        text = text.replace(",", "")
    else:
        text = text.replace(",", ".")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{field} {raw!r} is not a number; write it as 1500,50 or 1500.50") from None
    if not value.is_finite():
        raise ValueError(f"{field} {raw!r} is not a finite number")
    return value


def parse_bool(raw: object, field: str) -> bool:
    """Parse yes/no words in English and Russian."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{field} {raw!r} is neither yes nor no; use one of {sorted(_TRUE)} or {sorted(_FALSE)}")


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name`` or raise ValueError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {name!r} is unknown; use an IANA name such as Europe/Moscow") from None


def person_key(kind: str, value: str) -> str:
    """Return the key shared by every customer record holding this normalised address."""
    return f"{kind}:{value}"

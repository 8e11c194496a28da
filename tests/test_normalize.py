"""Value parsing: phones, emails, dates, numbers as CRMs export them."""

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from crm.importing.normalize import (
    normalize_email,
    normalize_phone,
    parse_bool,
    parse_date,
    parse_datetime,
    parse_decimal,
)


@pytest.mark.parametrize("raw", ["8 (916) 123-45-67", "+7 916 123 45 67", "79161234567", "9161234567",
                                 "+7(916)1234567", "8-916-123-45-67", "+7 (916) 123-45-67"])
def test_russian_phone_formats_normalise_to_e164(raw):
    assert normalize_phone(raw, "RU") == "+79161234567"


def test_foreign_and_landline_numbers():
    assert normalize_phone("+44 20 7946 0958", "RU") == "+442079460958"
    assert normalize_phone("(495) 123-45-67", "RU") == "+74951234567"
    assert normalize_phone("020 7946 0958", "GB") == "+442079460958"


@pytest.mark.parametrize("raw", ["12345", "8 (000) 000-00-00", "телефон", "+7 916 123", "+999 1234567"])
def test_bad_phones_are_refused_with_the_value(raw):
    with pytest.raises(ValueError) as err:
        normalize_phone(raw, "RU")
    assert str(err.value).startswith(f"phone {raw!r}")


def test_emails_are_trimmed_lower_cased_and_validated_without_dns():
    assert normalize_email("  Ivan.Petrov@Mail.RU ") == "ivan.petrov@mail.ru"
    assert normalize_email("user+tag@xn--80ak6aa92e.com") == "user+tag@xn--80ak6aa92e.com"
    assert normalize_email("иван@почта.рф") == "иван@почта.рф"
    for bad in ("inna@", "@mail.ru", "a..b@mail.ru", "no-at-sign", "a@b", "x@localhost", ".a@mail.ru"):
        with pytest.raises(ValueError, match="email"):
            normalize_email(bad)


def test_dates_iso_russian_and_excel_cells():
    assert parse_date("2024-03-15") == date(2024, 3, 15)
    assert parse_date("15.03.2024") == date(2024, 3, 15)
    assert parse_date(datetime(2024, 3, 15, 10, 0)) == date(2024, 3, 15)
    assert parse_date("15.03.2024 10:30") == date(2024, 3, 15)
    for bad in ("31.02.2024", "не помню", "2024-13-01", "03/15/2024 PM"):
        with pytest.raises(ValueError, match="date"):
            parse_date(bad)


def test_datetimes_without_zone_are_read_in_the_given_zone():
    assert parse_datetime("15.03.2024 12:00", "Europe/Moscow") == datetime(2024, 3, 15, 9, 0, tzinfo=timezone.utc)
    assert parse_datetime("2024-03-15T12:00:00+00:00", "Europe/Moscow").hour == 12
    with pytest.raises(ValueError, match="time zone"):
        parse_datetime("15.03.2024 12:00", "Mars/Olympus")


def test_decimals_with_comma_spaces_and_excel_numbers():
    assert parse_decimal("1 500,50") == Decimal("1500.50")
    assert parse_decimal("1\u00a0500,5") == Decimal("1500.5")
    assert parse_decimal("1,500.25") == Decimal("1500.25")
    assert parse_decimal(12.5) == Decimal("12.5")
    assert parse_decimal(3) == Decimal(3)
    for bad in ("пятьсот", "1.2.3", "NaN", ""):
        with pytest.raises(ValueError):
            parse_decimal(bad)


def test_booleans_in_both_languages():
    assert parse_bool("да", "status") is True
    assert parse_bool("Revoked", "status") is False
    with pytest.raises(ValueError, match="status"):
        parse_bool("maybe", "status")

"""A small, fully known customer base for segment, metric and audience tests (through the real importer)."""

from __future__ import annotations

from pathlib import Path

from crm.importing import import_file
from segments.stats import refresh
from tests.helpers import write_csv

AS_OF = "2026-04-04"

CUSTOMERS = [
    # external_id, name, birthday, region, manager, email, phone, internet, tv, years, wallet, haircut_interval
    ["CARD", "Визиткин", "1980-04-10", "Москва", "ivanova", "card@mail.ru", "+79160000001", "", "", "", "10000", ""],
    ["ISP1", "Абонент Один", "1985-12-30", "Москва", "petrov", "isp1@mail.ru", "+79160000002", "yes", "no", "5",
     "50000", ""],
    ["ISP2", "Абонент Два", "1992-02-29", "Татарстан", "petrov", "", "+79160000003", "yes", "yes", "2", "", ""],
    ["HAIR", "Стрижкин", "1992-04-06", "Москва", "sidorov", "hair@mail.ru", "", "", "", "", "", "30"],
    ["CAT", "Кошкина", "", "Москва", "ivanova", "cat@mail.ru", "+79160000005", "", "", "", "", ""],
    ["OLD", "Пропавший", "", "Санкт-Петербург", "sidorov", "old@mail.ru", "+79160000006", "", "", "", "", ""],
    ["INJ", "x' OR 1=1 --", "", "'; DROP TABLE customers; --", "ivanova", "", "", "", "", "", "", ""],
]
CUSTOMER_HEADER = ["external_id", "name", "birthday", "region", "manager", "email", "phone", "attr.internet",
                   "attr.tv", "attr.years_customer", "attr.wallet_size", "attr.haircut_interval_days"]

PURCHASES = [
    # the business-card worked example: 1000 cards, 40 days, 500 cards, 20 days, 1000 cards
    ["CARD", "2026-01-01", "Визитки 1000 шт", "business_cards", "1000", "1600"],
    ["CARD", "2026-02-10", "Визитки 500 шт", "business_cards", "500", "800"],
    ["CARD", "2026-03-02", "Визитки 1000 шт", "business_cards", "1000", "1600"],
    ["ISP1", "2026-03-10", "Трансляция матча", "football_stream", "1", "55"],
    ["ISP1", "2026-03-20", "Трансляция матча", "football_stream", "1", "55"],
    ["ISP1", "2026-03-30", "Трансляция матча", "football_stream", "1", "55"],
    ["ISP2", "2026-03-15", "Трансляция матча", "football_stream", "1", "55"],
    ["CAT", "2026-03-25", "Когтеточка", "cat_goods", "1", "1290"],
    ["CAT", "2026-03-25", "Домик для кошки", "cat_goods", "1", "3490"],
    ["OLD", "2025-01-10", "Тур в Сочи", "travel", "1", "60000"],
    ["OLD", "2025-03-10", "Тур в Турцию", "travel", "1", "90000"],
    ["OLD", "2025-12-04", "Тур в Египет", "travel", "1", "70000"],
]
EVENTS = [
    ["HAIR", "2026-02-01", "haircut"], ["HAIR", "2026-03-05", "haircut"],
    ["CAT", "2026-01-10", "grooming"], ["CAT", "2026-02-10", "grooming"], ["CAT", "2026-03-20", "grooming"],
    ["OLD", "2025-09-01", "car_service"],
    # article 004's G: three contracts over five years, support calls that stopped long ago
    ["ISP1", "2021-02-15", "isp_contract"], ["ISP1", "2023-06-01", "isp_contract"],
    ["ISP1", "2025-01-20", "isp_contract"],
    ["ISP1", "2025-10-01", "support_call"], ["ISP1", "2025-10-08", "support_call"],
    ["ISP1", "2025-11-02", "support_call"],
]
CONSENTS = [
    ["CARD", "email", "marketing", "granted", "2025-01-01 10:00"],
    ["ISP1", "all", "marketing", "granted", "2025-01-01 10:00"],
    ["ISP2", "sms", "marketing", "granted", "2025-01-01 10:00"],
    ["ISP2", "all", "marketing", "revoked", "2026-01-01 10:00"],
    ["HAIR", "email", "marketing", "granted", "2025-01-01 10:00"],
    ["CAT", "email", "marketing", "revoked", "2025-06-01 10:00"],
    ["CAT", "email", "marketing", "granted", "2026-03-01 10:00"],
    ["OLD", "email", "marketing", "granted", "2025-01-01 10:00"],
    ["OLD", "email", "marketing", "revoked", "2026-02-01 10:00"],
]


def build(engine, tmp_path: Path) -> None:
    """Import the base and refresh statistics."""
    files = {
        "customers": write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, CUSTOMERS),
        "purchases": write_csv(tmp_path / "p.csv", ["customer", "date", "product", "category", "quantity", "amount"],
                               PURCHASES),
        "events": write_csv(tmp_path / "e.csv", ["customer", "date", "kind"], EVENTS),
        "consents": write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"], CONSENTS),
    }
    for kind, path in files.items():
        summary = import_file(engine, kind, path)
        assert summary.rejected == 0, (kind, summary)
    refresh(engine)

"""Build the demo base: a synthetic but realistic customer base for every scenario in MISSION.md.

The data is written as the files a real CRM would export (semicolon CSV with a BOM, a cp1251 CSV,
an XLSX sheet) and goes in through the real importer, dirty rows included, so the demo shows
what the import does with them.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.table import Table

from crm.cards import base_stats
from crm.db import make_engine, upgrade
from crm.importing import ImportOptions, import_file
from crm.models import Manager
from crm.persons import duplicate_groups, refresh_persons
from segments.compile import months_before as _months_before
from segments.stats import refresh as refresh_stats
from touchflow.console import console
from touchflow.settings import shipped

MANAGERS = (  # code, name, position, email, phone, calls a day: the reps file the sales team keeps
    ("ivanova", "Анна Иванова", "Менеджер по работе с клиентами", "a.ivanova@touchflow.example", "+74951230001", 40),
    ("petrov", "Сергей Петров", "Менеджер по продажам", "s.petrov@touchflow.example", "+74951230002", 40),
    ("sidorov", "Дмитрий Сидоров", "Менеджер по продажам", "d.sidorov@touchflow.example", "+74951230003", 30),
)
REGIONS = (  # region, its main city, time zone
    ("Москва", "Москва", "Europe/Moscow"), ("Санкт-Петербург", "Санкт-Петербург", "Europe/Moscow"),
    ("Свердловская область", "Екатеринбург", "Asia/Yekaterinburg"),
    ("Новосибирская область", "Новосибирск", "Asia/Novosibirsk"),
    ("Приморский край", "Владивосток", "Asia/Vladivostok"), ("Татарстан", "Казань", "Europe/Moscow"),
)
MALE = (("Иван", "Иванов"), ("Алексей", "Смирнов"), ("Дмитрий", "Кузнецов"), ("Сергей", "Попов"),
        ("Андрей", "Васильев"), ("Михаил", "Соколов"), ("Николай", "Михайлов"), ("Павел", "Новиков"),
        ("Егор", "Фёдоров"), ("Артём", "Морозов"), ("Олег", "Волков"), ("Виктор", "Лебедев"))
FEMALE = (("Мария", "Иванова"), ("Елена", "Смирнова"), ("Ольга", "Кузнецова"), ("Наталья", "Попова"),
          ("Татьяна", "Васильева"), ("Анна", "Соколова"), ("Ирина", "Михайлова"), ("Светлана", "Новикова"),
          ("Юлия", "Фёдорова"), ("Екатерина", "Морозова"), ("Дарья", "Волкова"), ("Ксения", "Лебедева"))
PATRONYMICS_M = ("Александрович", "Сергеевич", "Петрович", "Игоревич", "Викторович")
PATRONYMICS_F = ("Александровна", "Сергеевна", "Петровна", "Игоревна", "Викторовна")
SCENARIOS = ("business_cards", "car_service", "barbershop", "retail", "travel", "isp")
RETAIL = ("cat_goods", "pet_food", "diapers")  # article 001's cat order, and article 000's replenishment
CUSTOMER_HEADER = ["external_id", "ФИО", "Имя", "Пол", "Дата рождения", "Регион", "Город", "Часовой пояс", "Менеджер",
                   "E-mail", "Телефон", "telegram", "preferred_channel", "attr.segment", "attr.internet", "attr.tv",
                   "attr.has_router", "attr.children",
                   "attr.football_stream_price", "attr.haircut_interval_days", "attr.car", "attr.pet",
                   "attr.wallet_size"]


@dataclass
class DemoData:
    """Rows for the four import files, plus what each scenario holds."""

    customers: list[list[Any]] = field(default_factory=list)
    purchases: list[list[Any]] = field(default_factory=list)
    events: list[list[Any]] = field(default_factory=list)
    consents: list[list[Any]] = field(default_factory=list)
    scenarios: dict[str, int] = field(default_factory=dict)


def _phone(rng: random.Random, index: int) -> str:
    number = f"{rng.choice(('916', '903', '926', '985', '977', '999'))}{index % 10_000_000:07d}"
    style = index % 4
    if style == 0:
        return f"8 ({number[:3]}) {number[3:6]}-{number[6:8]}-{number[8:]}"
    if style == 1:
        return f"+7 {number[:3]} {number[3:6]} {number[6:]}"
    if style == 2:
        return f"7{number}"
    return f"+7({number[:3]}){number[3:]}"


def _translit(text: str) -> str:
    table = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                     ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o", "p", "r", "s",
                      "t", "u", "f", "h", "ts", "ch", "sh", "sch", "", "y", "", "e", "yu", "ya"]))
    return "".join(table.get(ch, ch) for ch in text.lower())


def generate(n: int, seed: int, today: date) -> DemoData:
    """Generate ``n`` customers spread over the scenarios, with purchases, visits and consents."""
    rng = random.Random(seed)
    data = DemoData(scenarios={s: 0 for s in SCENARIOS})
    for index in range(n):
        scenario = SCENARIOS[index % len(SCENARIOS)]
        data.scenarios[scenario] += 1
        female = rng.random() < 0.5
        first, last = rng.choice(FEMALE if female else MALE)
        patronymic = rng.choice(PATRONYMICS_F if female else PATRONYMICS_M)
        gender = ("ж" if female else "м") if index % 4 else ""   # a quarter leave it to the name
        region, city, tz = rng.choice(REGIONS)
        city = city if index % 5 else ""                        # some records know only the region
        external_id = f"C{index + 1:06d}"
        birthday = today.replace(year=today.year - rng.randint(20, 65)) - timedelta(days=rng.randint(-180, 180))
        if scenario == "travel" and index % 4 == 0:
            birthday = (today + timedelta(days=rng.randint(1, 14))).replace(year=today.year - rng.randint(25, 60))
        email = f"{_translit(first)}.{_translit(last)}{index}@{rng.choice(('mail.ru', 'yandex.ru', 'gmail.com'))}"
        attrs: dict[str, Any] = {"segment": scenario}
        if scenario == "isp":
            # what the ISP's systems hold as fields; contracts, support calls, a TV trial and football
            # streams are its history (_isp_history), from which the call script is built (article 004)
            attrs.update({"internet": "yes", "tv": "no",
                          "has_router": rng.choice(("yes", "no")),
                          "children": rng.randint(0, 3),
                          "football_stream_price": 55})
        elif scenario == "barbershop":
            attrs["haircut_interval_days"] = rng.choice((21, 28, 30, 35, 42))
        elif scenario == "car_service":
            attrs["car"] = rng.choice(("Kia Rio", "Lada Vesta", "Hyundai Solaris", "Skoda Octavia"))
        elif scenario == "retail" and _retail(index) != "diapers":
            attrs["pet"] = "cat"
        attrs["wallet_size"] = rng.choice((20000, 50000, 120000))
        data.customers.append(_customer_row(
            external_id, f"{last} {first} {patronymic}", first, gender, birthday.strftime("%d.%m.%Y"),
            (region, city, tz), MANAGERS[index // len(SCENARIOS) % 3][0], email, _phone(rng, index),
            str(100_000_000 + index) if index % 3 == 0 else "",
            rng.choice(("email", "sms", "telegram", "")) if index % 3 == 0 else rng.choice(("email", "sms", "")),
            attrs))
        _history(rng, data, scenario, external_id, today, index, attrs)
        _consents(rng, data, external_id, today, index)
    _customer_g(data, today)
    _dirty_rows(data)
    return data


EMAIL, PHONE = CUSTOMER_HEADER.index("E-mail"), CUSTOMER_HEADER.index("Телефон")
ATTRIBUTES = CUSTOMER_HEADER.index("attr.segment")


def _customer_row(external_id: str, name: str, first: str, gender: str, birthday: str, place: tuple[str, str, str],
                  manager: str, email: str, phone: str, telegram: str, channel: str, attrs: dict[str, Any]
                  ) -> list[Any]:
    region, city, tz = place
    row = [external_id, name, first, gender, birthday, region, city, tz, manager, email, phone, telegram, channel]
    row += [attrs.get(column[5:], "") for column in CUSTOMER_HEADER[ATTRIBUTES:]]
    return row


def _retail(index: int) -> str:
    """Which retail story a retail customer tells: the cat order, pet food or diapers."""
    return RETAIL[index // len(SCENARIOS) % len(RETAIL)]


def _refills(data: DemoData, customer: str, today: date, *, prefix: str, product: str, category: str,
             quantity: int, days: int, amount: int, runs_out_in: int) -> None:
    """Four purchases of the same pack about ``days`` apart, the last one running out in ``runs_out_in`` days."""
    day = today - timedelta(days=days - runs_out_in)
    for number in range(4):
        data.purchases.append([f"{prefix}-{number}", customer, day.isoformat(), product, category, quantity, amount])
        day -= timedelta(days=days + (number % 2) * 2 - 1)


def _history(rng: random.Random, data: DemoData, scenario: str, customer: str, today: date, index: int,
             attrs: dict[str, Any]) -> None:
    if scenario == "business_cards":
        day = today - timedelta(days=rng.randint(250, 400))
        daily_use = rng.choice((5, 8, 10, 20))
        while day < today:
            quantity = rng.choice((500, 1000, 2000))
            data.purchases.append([f"O{index}-{day:%Y%m%d}", customer, day.strftime("%d.%m.%Y"),
                                   f"Визитки {quantity} шт", "business_cards", quantity,
                                   f"{quantity * 1.6:.2f}".replace(".", ",")])
            day += timedelta(days=max(7, int(quantity / daily_use * rng.uniform(0.85, 1.15))))
    elif scenario in ("car_service", "barbershop"):
        # visits about ``every`` days apart; the next one due ``due_in`` days from today (some on schedule,
        # some a little late, some long gone, some not yet due)
        if scenario == "car_service":
            kind, every, due_in = "car_service", rng.choice((150, 180, 210)), rng.choice((60, 25, 10, 3, -7, -20, -90))
        else:
            kind, every = "haircut", int(attrs["haircut_interval_days"])
            due_in = rng.choice((20, 8, 2, 1, -3, -9, -40))
        day = today + timedelta(days=due_in - every)
        for _ in range(rng.randint(3, 6)):
            data.events.append([customer, day.isoformat(), kind, f"{kind}-{customer}-{day:%Y%m%d}", ""])
            price = 4500 if kind == "car_service" else 1500
            data.purchases.append([f"S{index}-{day:%Y%m%d}", customer, day.isoformat(),
                                   "ТО" if kind == "car_service" else "Стрижка", kind, 1, price])
            day -= timedelta(days=int(every * rng.uniform(0.9, 1.1)))
    elif scenario == "retail" and _retail(index) == "cat_goods":
        # article 001: a scratcher and a house, some of them two weeks ago
        day = today - timedelta(days=rng.choice((3, 9, 14, 15, 17, 20, 35, 50)))
        data.purchases.append([f"P{index}-a", customer, day.isoformat(), "Когтеточка", "cat_goods", 1, 1290])
        data.purchases.append([f"P{index}-b", customer, day.isoformat(), "Домик для кошки", "cat_goods", 1, 3490])
        if index // 18 % 2:
            data.purchases.append([f"P{index}-c", customer, (day - timedelta(days=40)).isoformat(),
                                   "Корм для кошек 2 кг", "cat_food", 2, "1 180,00"])
    elif scenario == "retail" and _retail(index) == "pet_food":
        kilos = rng.choice((2, 3, 5))
        _refills(data, customer, today, prefix=f"K{index}", product=f"Корм для кошек {kilos} кг", category="pet_food",
                 quantity=kilos, days=kilos * 10, amount=kilos * 590, runs_out_in=rng.choice((-4, 1, 3, 9, 20)))
    elif scenario == "retail":
        _refills(data, customer, today, prefix=f"D{index}", product="Подгузники 60 шт", category="diapers",
                 quantity=60, days=rng.choice((8, 10)), amount=1490, runs_out_in=rng.choice((-3, 1, 2, 6, 12)))
    elif scenario == "travel":
        months_ago = rng.choice((2, 4, 4, 6, 12))
        day = _months_before(today, months_ago) - timedelta(days=rng.randint(0, 6))
        data.purchases.append([f"T{index}", customer, day.isoformat(), rng.choice(("Тур в Турцию", "Тур в Сочи",
                                                                                   "Тур в Египет")),
                               "travel", 1, rng.choice((85000, 120000, 64000))])
        data.events.append([customer, day.isoformat(), "trip", f"trip-{customer}", ""])
    elif scenario == "isp":
        start = today - timedelta(days=365 * rng.randint(1, 6))
        _isp_history(rng, data, customer, start, today, index)
        for month in range(0, 12):
            day = today - timedelta(days=30 * month)
            if day > start:
                data.purchases.append([f"I{index}-{month}", customer, day.isoformat(), "Интернет 500 Мбит/с",
                                       "internet", 1, 650])
        for stream in range(rng.randint(0, 4)):
            day = today - timedelta(days=rng.randint(1, 30))
            data.purchases.append([f"F{index}-{stream}", customer, day.isoformat(), "Трансляция матча",
                                   "football_stream", 1, 55])


def _isp_history(rng: random.Random, data: DemoData, customer: str, start: date, today: date, index: int) -> None:
    """Article 004's facts as the ISP's systems record them: contracts, a digital TV trial, support calls."""
    contracts = rng.randint(1, 3)
    span = (today - start).days
    for number in range(contracts):
        day = start + timedelta(days=span * number // contracts)
        data.events.append([customer, day.isoformat(), "isp_contract", f"contract-{customer}-{number}", ""])
    if index % 3 == 0:
        day = start + timedelta(days=span // 2)
        data.purchases.append([f"V{index}", customer, day.isoformat(), "Цифровое ТВ, пробный месяц", "digital_tv", 1,
                               0])
    support = rng.choice(("none", "resolved", "resolved", "open"))
    days = {"none": (), "resolved": (240, 230, 200), "open": (12, 5)}[support]
    for number, ago in enumerate(days):
        data.events.append([customer, (today - timedelta(days=ago)).isoformat(), "support_call",
                            f"support-{customer}-{number}", ""])


def _consents(rng: random.Random, data: DemoData, customer: str, today: date, index: int) -> None:
    given = (today - timedelta(days=rng.randint(30, 700))).strftime("%d.%m.%Y 12:00")
    for channel in ("email", "sms", "telegram", "voice", "call"):
        if index % 11 == 5 and channel == "sms":
            continue
        data.consents.append([customer, channel, "marketing", "granted", given, "website_form", "privacy-v3"])
    data.consents.append([customer, "all", "service", "granted", given, "contract", "contract-v1"])
    if index % 13 == 7:
        data.consents.append([customer, "email", "marketing", "revoked",
                              (today - timedelta(days=rng.randint(1, 20))).strftime("%d.%m.%Y 09:30"),
                              "unsubscribe_link", ""])


def _customer_g(data: DemoData, today: date) -> None:
    """Article 004's customer G: an ISP subscriber in three records, one per sales rep."""
    attrs = {"segment": "isp", "internet": "yes", "tv": "no", "has_router": "yes", "children": 2,
             "football_stream_price": 55, "wallet_size": 50000}
    for number, (manager, *_rest) in enumerate(MANAGERS, start=1):
        data.customers.append(_customer_row(
            f"ISP-G{number}", "Григорьев Геннадий Петрович", "Геннадий", "м", "14.05.1979",
            ("Москва", "Москва", "Europe/Moscow"), manager, "g.grigoriev@mail.ru" if number != 2 else "",
            "8 (916) 555-12-34" if number != 3 else "", "", "sms", attrs))
        # five years, three contracts, a month of digital TV, support calls that stopped long ago
        for contract, years in enumerate((5, 3, 1)):
            data.events.append([f"ISP-G{number}", (today - timedelta(days=365 * years + 20)).isoformat(),
                                "isp_contract", f"contract-G{number}-{contract}", ""])
        for call, ago in enumerate((250, 243, 221)):
            data.events.append([f"ISP-G{number}", (today - timedelta(days=ago)).isoformat(), "support_call",
                                f"support-G{number}-{call}", ""])
        data.purchases.append([f"GV{number}", f"ISP-G{number}", (today - timedelta(days=600)).isoformat(),
                               "Цифровое ТВ, пробный месяц", "digital_tv", 1, 0])
        for stream in range(4):
            data.purchases.append([f"G{number}-{stream}", f"ISP-G{number}",
                                   (today - timedelta(days=7 * stream + 1)).isoformat(), "Трансляция матча",
                                   "football_stream", 1, 55])
        for channel in ("email", "sms", "voice", "call"):
            data.consents.append([f"ISP-G{number}", channel, "marketing", "granted",
                                  (today - timedelta(days=400)).isoformat(), "contract", "privacy-v3"])
    data.customers[-1][PHONE] = "+7 916 555 12 34"  # the third record shares the phone in another format
    data.customers[-1][EMAIL] = "G.Grigoriev@Mail.ru "
    data.scenarios["customer_g_records"] = len(MANAGERS)


def _dirty_rows(data: DemoData) -> None:
    """Rows a real export would contain: each must be rejected with its reason, the rest imported."""
    moscow = ("Москва", "Москва", "Europe/Moscow")
    data.customers += [
        _customer_row("BAD-1", "Плохой Телефон", "Пётр", "м", "01.02.1990", moscow, "petrov", "petr@mail.ru", "12345",
                      "", "", {}),
        _customer_row("BAD-2", "Плохая Почта", "Инна", "ж", "03.04.1985", moscow, "ivanova", "inna@", "+79161112233",
                      "", "", {}),
        _customer_row("", "Без Кода", "Олег", "м", "05.06.1970", moscow, "sidorov", "oleg@mail.ru", "", "", "", {}),
        _customer_row("BAD-3", "Из Будущего", "Марк", "м", "01.01.2999", moscow, "sidorov", "", "", "", "", {}),
    ]
    data.purchases += [
        ["X-1", "NO-SUCH-CUSTOMER", "2024-01-10", "Визитки 500 шт", "business_cards", 500, 800],
        ["X-2", "C000001", "31.02.2024", "Визитки 500 шт", "business_cards", 500, 800],
        ["X-3", "C000001", "2024-01-10", "Визитки 500 шт", "business_cards", "пятьсот", 800],
    ]
    data.events.append(["C000002", "не помню", "car_service", "bad-event", ""])


def _write_csv(path: Path, header: list[str], rows: list[list[Any]], *, encoding: str, delimiter: str) -> None:
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def _write_xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("events")
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    workbook.save(path)


def write_files(data: DemoData, directory: Path) -> dict[str, Path]:
    """Write the reps file and the four export files in the formats real CRMs produce; return their paths by kind."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "managers": directory / "managers.csv",
        "customers": directory / "customers.csv",
        "purchases": directory / "purchases.csv",
        "events": directory / "events.xlsx",
        "consents": directory / "consents.csv",
    }
    _write_csv(paths["managers"], ["Код", "ФИО", "Должность", "Почта", "Телефон", "Звонков в день"],
               [list(rep) for rep in MANAGERS], encoding="utf-8-sig", delimiter=";")
    _write_csv(paths["customers"], CUSTOMER_HEADER, data.customers, encoding="utf-8-sig", delimiter=";")
    _write_csv(paths["purchases"], ["Номер заказа", "Код клиента", "Дата", "Товар", "Категория", "Количество",
                                    "Сумма"], data.purchases, encoding="cp1251", delimiter=";")
    _write_xlsx(paths["events"], ["customer", "date", "kind", "event_id", "note"], data.events)
    _write_csv(paths["consents"], ["customer", "channel", "purpose", "status", "at", "source", "wording"],
               data.consents, encoding="utf-8", delimiter=",")
    return paths


DEMO_CAMPAIGNS = ("business_cards_refill", "pet_food_refill", "diapers_refill", "haircut_followup",
                  "car_service_call", "birthday_trip", "trip_four_months", "cat_food_thanks", "winback",
                  "isp_tv_package_ivanova", "isp_tv_package_petrov", "isp_tv_package_sidorov")


class _MailboxHandler:
    """aiosmtpd handler that writes every received message to ``outbox/email`` as an .eml file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = f"{self.count:05d}-{envelope.rcpt_tos[0].replace('@', '_at_')}.eml"
        (self.folder / name).write_bytes(envelope.original_content)
        return "250 Message accepted for delivery"


def run_scenarios(url: str, directory: Path, *, today: date) -> list[dict[str, Any]]:
    """Run the mission's campaigns on the demo base: a local SMTP server, file outboxes, call tasks."""
    import socket
    from datetime import datetime, time, timezone
    from zoneinfo import ZoneInfo

    from aiosmtpd.controller import Controller

    from flows.engine import run_campaign
    from flows.spec import load_spec
    from touchflow.settings import Settings

    mailbox = directory / "outbox" / "email"
    mailbox.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(_MailboxHandler(mailbox), hostname="127.0.0.1", port=port)
    controller.start()
    settings = Settings(database_url=url, email_transport="smtp", smtp_host="127.0.0.1", smtp_port=port,
                        sms_transport="file", voice_transport="file", telegram_transport="file",
                        call_transport="tasks", outbox_dir=str(directory / "outbox"), company_name="touchflow demo",
                        public_url="http://127.0.0.1:8000")
    noon = datetime.combine(today, time(12, 0), tzinfo=ZoneInfo("Europe/Moscow")).astimezone(timezone.utc)
    engine = make_engine(url)
    summaries = []
    try:
        for name in DEMO_CAMPAIGNS:
            summaries.append(run_campaign(engine, load_spec(shipped("campaigns") / f"{name}.yaml"), now=noon, as_of=today,
                                          settings=settings))
    finally:
        controller.stop()
        engine.dispose()
    return summaries


def run_demo(directory: Path, *, customers: int = 300, seed: int = 7, quiet: bool = False,
             today: date | None = None, campaigns: bool = True) -> dict[str, Any]:
    """Recreate the demo database in ``directory`` and import a generated base into it."""
    today = today or date.today()
    directory = directory.resolve()
    db_path = directory / "touchflow-demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    import shutil

    shutil.rmtree(directory / "outbox", ignore_errors=True)
    url = f"sqlite:///{db_path}"
    engine = make_engine(url)
    upgrade(engine)
    data = generate(customers, seed, today)
    paths = write_files(data, directory / "data")
    imports = {}
    for kind in ("managers", "customers", "purchases", "events", "consents"):
        imports[kind] = import_file(engine, kind, paths[kind], options=ImportOptions()).to_dict()
    refresh_stats(engine)
    refresh_persons(engine)
    groups = duplicate_groups(engine)
    result = {
        "database_url": url,
        "directory": str(directory),
        "imports": imports,
        "base": base_stats(engine),
        "scenarios": data.scenarios,
        "people_with_several_records": len(groups),
    }
    engine.dispose()
    if campaigns:
        result["campaigns"] = [{k: v for k, v in summary.items() if k != "samples"}
                               for summary in run_scenarios(url, directory, today=today)]
        result["outbox"] = str(directory / "outbox")
        result["call_tasks"] = _call_tasks(url)
    if not quiet:
        _print(result)
    return result


def _call_tasks(url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from crm.models import CallTask

    engine = make_engine(url)
    tasks, managers = CallTask.__table__, Manager.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(managers.c.name, func.count(tasks.c.id)).join(tasks, tasks.c.manager_id ==
                                                                                 managers.c.id)
                            .group_by(managers.c.name).order_by(managers.c.name)).all()
    engine.dispose()
    return {name: count for name, count in rows}


def _print(result: dict[str, Any]) -> None:
    table = Table(title="demo import (the real importer, dirty rows included)")
    for column in ("file", "rows", "new", "updated", "rejected", "rejects file"):
        table.add_column(column)
    for kind, summary in result["imports"].items():
        table.add_row(Path(summary["path"]).name, str(summary["rows"]), str(summary["created"]),
                      str(summary["updated"]), str(summary["rejected"]), summary["rejects_path"] or "—")
    console.print(table)
    base = Table(title="what is in the demo base")
    base.add_column("what")
    base.add_column("count", justify="right")
    for key, value in {**result["base"], **{f"scenario: {k}": v for k, v in result["scenarios"].items()},
                       "people with several records": result["people_with_several_records"]}.items():
        base.add_row(key, str(value))
    console.print(base)
    if "campaigns" in result:
        runs = Table(title="campaigns run on the demo base (as of noon, Moscow time)")
        for column in ("campaign", "selected", "contacted", "not contacted (why)"):
            runs.add_column(column)
        for summary in result["campaigns"]:
            contacted = ", ".join(f"{channel} {counts.get('sent', 0)}" + (
                f" (+{counts['deferred']} deferred)" if counts.get("deferred") else "")
                for channel, counts in sorted(summary["channels"].items()))
            why = ", ".join(f"{reason} {n}" for reason, n in sorted(summary["not_contacted"].items()))
            runs.add_row(summary["campaign"], str(summary["selected"]), contacted or "—", why or "—")
        console.print(runs)
        console.print("call tasks per rep: " + ", ".join(f"{k} {v}" for k, v in result["call_tasks"].items()),
                      highlight=False)
        console.print(f"Received mail, SMS, voice and Telegram messages: {result['outbox']}/", highlight=False)
        console.print("Customer G (three records, three reps, one offer) got one call: "
                      "touchflow history --customer ISP-G1", highlight=False)
    console.print(f"Explore it:  export TOUCHFLOW_DATABASE_URL={result['database_url']}\n"
                  "             touchflow stats; touchflow customers duplicates; touchflow customers show ISP-G1",
                  highlight=False)

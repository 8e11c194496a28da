"""Issue 14's findings on the SHIPPED templates and campaigns, for customers imported through the real
importer: each rendered text is compared with the Russian a reader expects.

The base: a woman and a man with the same ISP history (article 004), business cards used at 8,5 a day
with a named rep, a rep known only by a code and no rep, pet food and diapers running out, barbershop
clients on schedule, a few days late and long overdue, a car serviced by its own interval, a cat-goods
order of two items (article 001), a traveller with a birthday ahead. Already covered elsewhere (not
repeated here): the city after «г.», discounts on every line, «без НДС» and who signs
(tests/test_documents.py); a segment dropping a passed need (tests/test_needs.py); offer rules on a
probe template (tests/test_offers.py); ISP1's script from its history (tests/test_channel_registry.py).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from crm.importing import import_file
from crm.models import CallTask, Customer, Manager
from crm.persons import refresh_persons
from flows import engine as campaign_engine
from flows.spec import load_spec
from segments.stats import refresh
from tests.helpers import run_json, write_csv
from tests.test_campaigns import settings
from touchflow.settings import shipped

AS_OF = date(2026, 11, 23)                      # a Monday
CARDS_RUN_OUT = AS_OF + timedelta(days=5)       # 850 cards last 100 days: 8,5 a day
CAT_DAY = AS_OF - timedelta(days=14)            # the scratcher and the house, two weeks before


def ago(days: int) -> str:
    return (AS_OF - timedelta(days=days)).isoformat()


MANAGERS = [["ivanova", "Анна Иванова", "Менеджер по работе с клиентами", "+74951230001", "a.ivanova@example.ru"],
            ["petrov", "Пётр Петров", "Менеджер по продажам", "+74951230002", "p.petrov@example.ru"]]
CUSTOMER_HEADER = ["external_id", "name", "first_name", "gender", "region", "city", "birthday", "manager", "email",
                   "phone", "attr.internet", "attr.tv", "attr.children", "attr.haircut_interval_days", "attr.car"]
CUSTOMERS = [
    # article 004: the same history for a woman and a man; she also called support three times (resolved)
    ["KSENIA", "Лебедева Ксения Петровна", "Ксения", "ж", "Приморский край", "Владивосток", "", "ivanova",
     "ksenia@mail.ru", "+79160000101", "yes", "no", "2", "", ""],
    ["IVAN", "Смирнов Иван Сергеевич", "Иван", "м", "Москва", "Москва", "", "ivanova", "ivan@mail.ru",
     "+79160000102", "yes", "no", "", "", ""],
    # one contract, nothing else known; the gender from the name
    ["PAVEL", "Новиков Павел", "Павел", "", "Москва", "Москва", "", "ivanova", "", "+79160000107", "yes", "no", "", "",
     ""],
    # business cards, 8.5 a day: a named rep, a rep known only by a code, no rep
    ["CARDS", "Визиткин Олег", "Олег", "", "Москва", "Москва", "", "petrov", "cards@mail.ru", "+79160000103",
     "", "", "", "", ""],
    ["CARDS_CODE", "Печаткина Ольга", "Ольга", "", "Москва", "", "", "ghost", "cards2@mail.ru", "", "", "", "", "", ""],
    ["CARDS_NONE", "Бумагин Павел", "Павел", "", "Москва", "", "", "", "cards3@mail.ru", "", "", "", "", "", ""],
    ["PET", "Кормова Мария", "Мария", "", "Москва", "Москва", "", "", "pet@mail.ru", "", "", "", "", "", ""],
    ["BABY", "Пелёнкина Анна", "Анна", "", "Москва", "Москва", "", "", "baby@mail.ru", "", "", "", "", "", ""],
    # a haircut every 23 days, the last 22 days ago (due tomorrow); every 30 days, the last 41 days ago (11 days
    # late) and the last 33 days ago (3 days late)
    ["HAIR_ON", "Стрижкин Егор", "Егор", "", "Москва", "Москва", "", "", "", "+79160000104", "", "", "", "23", ""],
    ["HAIR_LATE", "Лохматов Артём", "Артём", "", "Москва", "Москва", "", "", "", "+79160000105", "", "", "", "30", ""],
    ["HAIR_BIT", "Чёлкин Максим", "Максим", "", "Москва", "Москва", "", "", "", "+79160000108", "", "", "", "30", ""],
    ["CAT", "Кошкина Дарья", "Дарья", "", "Москва", "Москва", "", "", "cat@mail.ru", "", "", "", "", "", ""],
    ["TRIP", "Путешественникова Юлия", "Юлия", "", "Москва", "Москва", "1990-12-01", "", "trip@mail.ru", "", "",
     "", "", "", ""],
    # a car serviced every 150 days, the last 140 days ago: the next service in 10 days
    ["CAR", "Колёсов Виктор", "Виктор", "", "Москва", "Москва", "", "petrov", "", "+79160000106", "", "", "", "",
     "Kia Rio"],
]
PURCHASES = [
    ["KSENIA", "2024-03-10", "Цифровое ТВ, пробный месяц", "digital_tv", "1", "0"],
    *[["KSENIA", ago(days), "Трансляция матча", "football_stream", "1", "55"] for days in (2, 9, 16, 23)],
    ["IVAN", "2024-05-10", "Цифровое ТВ, пробный месяц", "digital_tv", "1", "0"],
    ["IVAN", "2024-06-10", "Цифровое ТВ", "digital_tv", "1", "299"],
    ["IVAN", ago(3), "Трансляция матча", "football_stream", "1", "55"],
    *[[who, (CARDS_RUN_OUT - timedelta(days=days)).isoformat(), "Визитки 850 шт", "business_cards", "850", "1360"]
      for who in ("CARDS", "CARDS_CODE", "CARDS_NONE") for days in (200, 100)],
    # 2 kg of food every 20 days, the last 17 days ago: runs out in 3 days; 60 diapers every 6 days, in 2
    ["PET", ago(37), "Корм для кошек 2 кг", "pet_food", "2", "1180"],
    ["PET", ago(17), "Корм для кошек 2 кг", "pet_food", "2", "1180"],
    ["BABY", ago(10), "Подгузники 60 шт", "diapers", "60", "1500"],
    ["BABY", ago(4), "Подгузники 60 шт", "diapers", "60", "1500"],
    ["CAT", CAT_DAY.isoformat(), "Когтеточка", "cat_goods", "1", "1290"],
    ["CAT", CAT_DAY.isoformat(), "Домик для кошки", "cat_goods", "1", "3490"],
    ["TRIP", "2026-07-20", "Тур в Сочи", "travel", "1", "64000"],
    ["TRIP", "2025-08-02", "Тур в Турцию", "travel", "1", "85000"],
]
EVENTS = [
    *[[who, day, "isp_contract"] for who in ("KSENIA", "IVAN") for day in ("2021-02-15", "2023-06-01", "2025-01-20")],
    ["PAVEL", "2025-01-20", "isp_contract"],
    ["IVAN", "2026-10-05", "support_call"],
    *[["KSENIA", day, "support_call"] for day in ("2025-08-01", "2025-08-08", "2025-09-02")],
    *[["HAIR_ON", ago(days), "haircut"] for days in (68, 45, 22)],
    *[["HAIR_LATE", ago(days), "haircut"] for days in (101, 71, 41)],
    *[["HAIR_BIT", ago(days), "haircut"] for days in (93, 63, 33)],
    *[["CAR", ago(days), "car_service"] for days in (440, 290, 140)],
]


def build(engine, tmp_path: Path) -> None:
    """Import the reps, customers, purchases, events and consents (marketing and service, every channel)."""
    externals = [row[0] for row in CUSTOMERS]
    consents = [[e, "all", purpose, "granted", "2025-01-01 10:00"] for e in externals
                for purpose in ("marketing", "service")]
    files = {
        "managers": write_csv(tmp_path / "m.csv", ["code", "name", "position", "phone", "email"], MANAGERS),
        "customers": write_csv(tmp_path / "c.csv", CUSTOMER_HEADER, CUSTOMERS),
        "purchases": write_csv(tmp_path / "p.csv", ["customer", "date", "product", "category", "quantity", "amount"],
                               PURCHASES),
        "events": write_csv(tmp_path / "e.csv", ["customer", "date", "kind"], EVENTS),
        "consents": write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"], consents),
    }
    for kind, path in files.items():
        summary = import_file(engine, kind, path)
        assert summary.rejected == 0, (kind, summary)
    refresh_persons(engine)
    refresh(engine)


# --- helpers ------------------------------------------------------------------------------------------

@pytest.fixture
def base(engine, tmp_path, cli_env):
    build(engine, tmp_path)
    return engine


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12, 0), tzinfo=ZoneInfo("Europe/Moscow"))


def flat(text: str) -> str:
    """Money keeps its no-break spaces («1 600 ₽»); compare it with ordinary ones."""
    return text.replace("\u00a0", " ")


def run_shipped(engine, tmp_path: Path, name: str, day: date, *, dry_run: bool = False, **changes):
    """Run a shipped campaign at noon (Moscow) on ``day``: memory transports, call tasks in the table.

    ``changes`` replace fields of the spec (e.g. ``offer_group=None`` to see a message its group would hold back).
    """
    spec = load_spec(shipped("campaigns") / f"{name}.yaml").model_copy(update=changes)
    run = campaign_engine.start(engine, spec, dry_run=dry_run, now=noon(day), as_of=day, settings=settings(tmp_path))
    campaign_engine.process_deferred(run)
    for page in campaign_engine.segment_pages(run):
        campaign_engine.process_batch(run, page)
    return campaign_engine.finish(run), run


def sent(run, channel: str) -> dict[str, object]:
    """The messages a run's memory channel received, by address."""
    return {message.to: message for message in run.channels[channel].outbox}


def selected(engine, tmp_path, name: str, day: date) -> int:
    summary, _ = run_shipped(engine, tmp_path, name, day, dry_run=True)
    return summary["selected"]


def call_scripts(engine, campaign: str) -> dict[str, tuple[str, str | None]]:
    """The call tasks a campaign created: external id -> (script, the assigned rep's name)."""
    tasks, customers, managers = CallTask.__table__, Customer.__table__, Manager.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(customers.c.external_id, tasks.c.script, managers.c.name)
                            .join(customers, customers.c.id == tasks.c.customer_id)
                            .outerjoin(managers, managers.c.id == tasks.c.manager_id)
                            .where(tasks.c.campaign == campaign)).all()
    return {row.external_id: (flat(row.script), row.name) for row in rows}


def preview(name: str, customer: str, channel: str, day: date = AS_OF) -> str:
    parts = run_json("template", "preview", name, "--customer", customer, "--channel", channel,
                     "--as-of", day.isoformat())["parts"]
    return flat(parts[0]["text"])


def subject(name: str, customer: str, day: date = AS_OF) -> str:
    return run_json("template", "preview", name, "--customer", customer, "--channel", "email",
                    "--as-of", day.isoformat())["parts"][0]["subject"]


def steps(script: str) -> list[int]:
    return [int(line.split(".")[0]) for line in script.splitlines() if line[:1].isdigit()]


# --- gender, counts, steps, reps by name: the ISP script (article 004) ----------------------------------

def test_the_isp_call_addresses_a_woman_in_feminine_forms_and_a_man_in_masculine_ones(base, tmp_path):
    summary, _ = run_shipped(base, tmp_path, "isp_tv_package_ivanova", AS_OF)
    assert summary["channels"]["call"]["sent"] == 3
    scripts = call_scripts(base, "isp_tv_package_ivanova")
    her, her_rep = scripts["KSENIA"]
    him, his_rep = scripts["IVAN"]
    assert her.startswith("Клиент: Лебедева Ксения Петровна (KSENIA), Владивосток.\n")     # the city, not the region
    assert "- с нами 5 лет: заключила 3 договора, первый — в феврале 2021 года;" in her
    assert "- в марте 2024 года пробовала цифровое ТВ (1 месяц) и отказалась — спросите, что не устроило;" in her
    assert "- в поддержку обращалась 3 раза, последний раз — в сентябре 2025 года; с тех пор обращений нет, " \
           "проблемы решены;" in her
    assert "- за последний месяц купила 4 трансляции футбола по 55 ₽ — 220 ₽ в месяц;" in her
    assert "- с нами 5 лет: заключил 3 договора, первый — в феврале 2021 года;" in him
    assert "- в мае 2024 года пробовал цифровое ТВ (2 месяца) и отказался — спросите, что не устроило;" in him
    assert "- в поддержку обращался один раз — в октябре 2026 года;" in him      # not «1 раз, последний раз — …»
    assert "- за последний месяц купил 1 трансляцию футбола по 55 ₽ — 55 ₽ в месяц;" in him
    # one contract is not «1 договор, первый — …»
    assert "- с нами 1 год: заключил договор в январе 2025 года;" in scripts["PAVEL"][0]
    for masculine in ("заключил ", "пробовал ", "отказался", "обращался", "купил "):
        assert masculine not in her
    for feminine in ("заключила", "пробовала", "отказалась", "купила"):
        assert feminine not in him
    # the article's offer, worded for each
    assert "всего на 120 ₽" in her and "на 25%" in her and "до 30 ноября" in her and "в течение месяца" in her
    assert "для вас и для ваших детей" in her and "для вас и для ваших близких" in him
    # a call task for ivanova's customers shows her name, never «не назначен» or the code
    assert her_rep == his_rep == "Анна Иванова"
    assert "Менеджер клиента: Анна Иванова, менеджер по работе с клиентами." in her.splitlines()
    assert "не назначен" not in her + him and "ivanova" not in her + him


def test_the_isp_steps_stay_contiguous_when_a_step_is_left_out(base, tmp_path):
    run_shipped(base, tmp_path, "isp_tv_package_ivanova", AS_OF)
    scripts = call_scripts(base, "isp_tv_package_ivanova")
    her, him = scripts["KSENIA"][0], scripts["IVAN"][0]
    assert "технические проблемы" in her and "технические проблемы" not in him   # his support step is left out
    assert steps(her) == list(range(1, 9)) and steps(him) == list(range(1, 8))
    assert steps(scripts["PAVEL"][0]) == list(range(1, 8))
    expired = preview("isp_tv_package", "IVAN", "call", date(2026, 12, 1))     # a month later: a new month's offer
    assert steps(expired) == list(range(1, 8)) and "до 31 декабря" in expired and "до 30 ноября" not in expired


# --- count agreement, the verb with the count, the opening of the haircut call -------------------------

def test_the_haircut_call_opens_by_the_schedule_and_counts_agree(base, tmp_path):
    summary, _ = run_shipped(base, tmp_path, "haircut_followup", AS_OF)
    assert summary["channels"]["call"]["sent"] == 3
    scripts = call_scripts(base, "haircut_followup")
    on_time, late = scripts["HAIR_ON"][0], scripts["HAIR_LATE"][0]
    assert "Стрижек: 3, последняя — 1 ноября (прошли 22 дня); обычно приходит раз в 23 дня." in on_time
    assert "Следующая стрижка — около 24 ноября (завтра)." in on_time
    assert "1. «Егор, здравствуйте! Это touchflow. Подходит срок следующей стрижки — записать вас?»" in on_time
    assert "Давно вас не видели" not in on_time and "опаздывает" not in on_time
    assert "Стрижек: 3, последняя — 13 октября (прошёл 41 день); обычно приходит раз в 30 дней." in late
    assert "Следующую стрижку ждали около 12 ноября (11 дней назад) — клиент опаздывает." in late
    assert "1. «Артём, здравствуйте! Это touchflow. Давно вас не видели — записать вас на стрижку?»" in late
    # three days late is not «давно»
    a_bit_late = scripts["HAIR_BIT"][0]
    assert "Следующую стрижку ждали около 20 ноября (3 дня назад) — клиент опаздывает." in a_bit_late
    assert "1. «Максим, здравствуйте! Это touchflow. Самое время для новой стрижки — записать вас?»" in a_bit_late
    assert "Давно вас не видели" not in a_bit_late
    assert steps(on_time) == steps(late) == steps(a_bit_late) == [1, 2, 3]
    # the other parts, the same day
    assert preview("haircut_reminder", "HAIR_ON", "sms").startswith("Егор, с прошлой стрижки прошли 22 дня — ")
    assert preview("haircut_reminder", "HAIR_LATE", "sms").startswith("Артём, с прошлой стрижки прошёл 41 день — ")
    assert subject("haircut_reminder", "HAIR_BIT") == "Максим, пора на стрижку"
    assert subject("haircut_reminder", "HAIR_LATE") == "Артём, давно вас не видели — пора на стрижку"
    email = preview("haircut_reminder", "HAIR_LATE", "email")
    assert "Последний раз вы были у нас 13 октября — с тех пор прошёл 41 день." in email
    assert "прошло 41" not in email


# --- the product noun, decimals, past and future, reps by name in the email ----------------------------

def test_business_cards_future_before_the_run_out_and_reps_by_name(base, tmp_path):
    summary, run = run_shipped(base, tmp_path, "business_cards_refill", AS_OF)
    assert summary["channels"]["email"]["sent"] == 3
    mail = {to: flat(m.text) for to, m in sent(run, "email").items()}
    subjects = {m.subject for m in sent(run, "email").values()}
    assert subjects == {"Олег, визитки скоро закончатся", "Ольга, визитки скоро закончатся",
                        "Павел, визитки скоро закончатся"}
    named = mail["cards@mail.ru"]
    assert "По нашим расчётам, визитки у вас закончатся около 28 ноября — через 5 дней." in named
    assert "В прошлый раз вы заказывали «Визитки 850 шт» за 1 360 ₽." in named
    assert "Закажите до 30 ноября со скидкой 5% — и запас не прервётся." in named
    # the rep by name and position, never by code; a rep known only by a code or none: the company signs
    assert "С уважением,\nПётр Петров, менеджер по продажам\ntouchflow, тел. +74951230002\n" in named
    assert "petrov" not in named
    for address, code in (("cards2@mail.ru", "ghost"), ("cards3@mail.ru", None)):
        text = mail[address]
        assert "С уважением" not in text and "менеджер" not in text.lower() and "None" not in text
        assert (code is None or code not in text) and "\ntouchflow\n" in text


def test_the_proposal_names_the_rep_and_never_a_code(base, tmp_path):
    from docx import Document

    from documents.proposals import generate

    def proposal(customer: str) -> list[str]:
        done = generate(base, "proposal", customer, out_dir=tmp_path / "out", today=AS_OF)
        return [flat(p.text) for p in Document(done.path).paragraphs]

    assert "Ваш менеджер: Пётр Петров, +74951230002, p.petrov@example.ru" in proposal("CARDS")
    for customer, code in (("CARDS_CODE", "ghost"), ("CARDS_NONE", "None")):
        text = "\n".join(proposal(customer))
        assert "Ваш менеджер" not in text and code not in text
    assert "Предложение действительно до 07.12.2026." in proposal("CARDS")       # 14 days from the day


def test_business_cards_past_the_run_out_say_so_and_a_month_later_nobody_is_selected(base, tmp_path):
    after = CARDS_RUN_OUT + timedelta(days=2)                      # within the segment's grace days
    summary, run = run_shipped(base, tmp_path, "business_cards_refill", after)
    assert summary["channels"]["email"]["sent"] == 3
    for message in sent(run, "email").values():
        text = flat(message.text)
        assert message.subject.endswith(", визитки, похоже, уже закончились")
        assert "визитки у вас, скорее всего, уже закончились: запаса хватало примерно до 28 ноября." in text
        assert "закончатся" not in text and "не прервётся" not in text
        assert "Закажите до 7 декабря со скидкой 5%." in text                  # valid_days: 7 from the run
    sms = preview("replenishment_reminder", "CARDS", "sms", after)
    assert sms == "Олег, визитки, похоже, уже закончились. Скидка 5% на заказ до 7 декабря. touchflow"
    call = preview("replenishment_reminder", "CARDS", "call", after)
    assert "Запас, по расчётам, закончился около 28 ноября (позавчера)." in call
    assert "2. «По нашим данным, визитки у вас уже закончились — подготовить такой же заказ?»" in call
    assert selected(base, tmp_path, "business_cards_refill", CARDS_RUN_OUT + timedelta(days=30)) == 0


def test_decimals_are_written_with_a_comma(base):
    call = preview("replenishment_reminder", "CARDS", "call")
    assert "Средний расход: 8,5 шт. в день. Запас закончится около 28 ноября (через 5 дней)." in call
    assert "8.5" not in call
    assert steps(call) == [1, 2, 3, 4]


def test_pet_food_and_diapers_agree_with_their_product(base, tmp_path):
    summary, run = run_shipped(base, tmp_path, "pet_food_refill", AS_OF)
    assert summary["selected"] == 1 and summary["channels"]["email"]["sent"] == 1
    pet = sent(run, "email")["pet@mail.ru"]
    assert pet.subject == "Мария, корм скоро закончится"
    assert "По нашим расчётам, корм у вас закончится около 26 ноября — через 3 дня." in pet.text
    assert "В прошлый раз вы заказывали «Корм для кошек 2 кг» за 1 180 ₽." in flat(pet.text)
    assert "закончатся" not in pet.text + pet.subject
    # two days after the run-out (a dry run: the first run's cooldown holds the real one back)
    later, _ = run_shipped(base, tmp_path, "pet_food_refill", AS_OF + timedelta(days=5), dry_run=True)
    (pet,) = later["samples"]
    assert pet["subject"] == "Мария, корм, похоже, уже закончился"
    assert "корм у вас, скорее всего, уже закончился: запаса хватало примерно до 26 ноября." in pet["text"]
    assert "Закажите до 5 декабря со скидкой 5%. Просто ответьте на это письмо." in pet["text"]
    summary, run = run_shipped(base, tmp_path, "diapers_refill", AS_OF)
    assert summary["selected"] == 1
    baby = sent(run, "email")["baby@mail.ru"]
    assert baby.subject == "Анна, подгузники скоро закончатся"
    assert "По нашим расчётам, подгузники у вас закончатся около 25 ноября — послезавтра." in baby.text
    assert "закончится" not in baby.text + baby.subject


def test_the_car_service_call_uses_the_customers_own_interval_and_names_the_rep(base, tmp_path):
    summary, _ = run_shipped(base, tmp_path, "car_service_call", AS_OF)
    assert summary["channels"]["call"]["sent"] == 1
    script, rep = call_scripts(base, "car_service_call")["CAR"]
    assert "Клиент: Колёсов Виктор (CAR), автомобиль: Kia Rio." in script
    assert "Визитов на ТО: 3, последний — 6 июля 2026 года; обычно приезжает раз в 5 месяцев." in script
    assert "Следующее ТО — около 3 декабря (через 10 дней)." in script
    assert "Менеджер клиента: Пётр Петров, менеджер по продажам." in script       # a position inside a sentence
    assert rep == "Пётр Петров" and "petrov" not in script
    assert "Напоминаем, что подходит время планового ТО для вашего Kia Rio." in script
    assert "уже подошёл" not in script and steps(script) == [1, 2, 3, 4]


# --- the cat trigger (article 001) ----------------------------------------------------------------------

def test_the_cat_campaign_writes_two_weeks_after_and_thanks_for_the_whole_order(base, tmp_path):
    windows = {days: selected(base, tmp_path, "cat_food_thanks", CAT_DAY + timedelta(days=days))
               for days in (1, 13, 14, 20, 21)}
    assert windows == {1: 0, 13: 0, 14: 1, 20: 1, 21: 0}
    summary, run = run_shipped(base, tmp_path, "cat_food_thanks", AS_OF)          # 14 days after
    assert summary["channels"]["email"]["sent"] == 1
    message = sent(run, "email")["cat@mail.ru"]
    assert message.subject == "Дарья, как вам обновки?"
    text = message.text
    assert "9 ноября вы купили у нас когтеточку и домик для кошки. Спасибо за покупку!" in text
    assert "довольны ли вы качеством, ценой и скоростью доставки" in text           # the article's questions
    assert "накопительную бонусную карту" in text
    assert "А до 30 ноября для вас скидка 10% на корм для кошек." in text           # until the end of the month
    # the same offer on 15 December promises the end of December, never 30 November
    sms = preview("cat_food_offer", "CAT", "sms", date(2026, 12, 15))
    assert sms == "Дарья, спасибо за когтеточку и домик для кошки! До 31 декабря скидка 10% на корм для кошек. " \
                  "touchflow"


# --- months after a preposition: travel ------------------------------------------------------------------

def test_trips_name_the_month_in_the_prepositional_case(base, tmp_path):
    summary, run = run_shipped(base, tmp_path, "birthday_trip", AS_OF)
    assert summary["channels"]["email"]["sent"] == 1
    birthday = sent(run, "email")["trip@mail.ru"].text
    assert "1 декабря — ваш день рождения." in birthday
    assert "В прошлый раз вы путешествовали с нами в июле 2026 года («Тур в Сочи») — в этот раз подберём " \
           "что-то новое." in birthday
    held, _ = run_shipped(base, tmp_path, "trip_four_months", AS_OF, dry_run=True)
    assert held["not_contacted"] == {"offer_group": 1}          # the birthday trip's offer, one group: travel
    summary, run = run_shipped(base, tmp_path, "trip_four_months", AS_OF, offer_group=None)
    assert summary["selected"] == 1
    trip = sent(run, "email")["trip@mail.ru"].text
    assert "В последний раз вы путешествовали с нами в июле 2026 года («Тур в Сочи») — с тех пор прошли " \
           "4 месяца." in trip
    assert "июль 2026" not in birthday + trip
    assert selected(base, tmp_path, "trip_four_months", AS_OF + timedelta(days=14)) == 0


# --- the linter in CI -------------------------------------------------------------------------------------

def test_template_check_reports_nothing_on_the_shipped_templates(base, cli_env):
    report = run_json("template", "check", "--as-of", AS_OF.isoformat())
    findings = [(t["template"], f["file"], f["kind"], f["message"]) for t in report["templates"]
                for f in t["findings"]]
    assert report["errors"] == 0 and report["warnings"] == 0, findings
    names = {t["template"] for t in report["templates"]}
    assert {"isp_tv_package", "replenishment_reminder", "cat_food_offer", "haircut_reminder", "trip_reminder",
            "birthday_trip", "car_service_reminder", "winback"} <= names
    assert report["checked"] > 100

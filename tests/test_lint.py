"""The template linter: each kind of finding on a deliberately wrong template, none on correct Russian,
today's known problems in copies of the shipped templates, and ``touchflow template check``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml

from channels.render.lint import base_context, check_template, check_text
from tests.helpers import run_cli

TODAY = date(2026, 11, 23)
OFFER = {"key": "refill", "product": "визитки", "need_key": "category:business_cards", "discount_percent": 5}


def make(root: Path, name: str, parts: dict[str, str], offer: dict | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for file, text in parts.items():
        (folder / file).write_text(text, encoding="utf-8")
    (folder / "meta.yaml").write_text(yaml.safe_dump({"offer": offer if offer is not None else OFFER},
                                                     allow_unicode=True), encoding="utf-8")
    return root


def findings(root: Path, name: str, kind: str | None = None):
    report = check_template(name, root=root, today=TODAY)
    return [f for f in report.findings if kind is None or f.kind == kind]


def only(found, severity: str = "error"):
    return [f for f in found if f.severity == severity]


# --- today's shipped templates (copies as they are on 23 November 2026): the known problems ----------

ISP_CALL_SCRIPT = """{% set a = customer.attributes %}
Клиент: {{ customer.name }} ({{ customer.external_id }}), менеджер: {{ customer.manager.name if customer.manager else "не назначен" }}.
Что мы знаем:
- с нами {{ a.years_customer | default(0) | plural("год", "года", "лет", locale) }}, договоров: {{ a.contracts | default(1) }};
{% if a.digital_tv_trial_months | default(0) %}- пробовал цифровое ТВ {{ a.digital_tv_trial_months | plural("месяц", "месяца", "месяцев", locale) }} и отказался — спросите, что не устроило;
{% endif %}{% if a.has_router | default("no") == "yes" %}- роутер уже есть — подключение без визита мастера;
{% endif %}{% if a.football_streams_per_month | default(0) %}- покупает трансляции футбола ~{{ a.football_streams_per_month }} раз в месяц по {{ a.football_stream_price | default(55) | money("RUB", locale) }} — в пакете спортивный канал, трансляции покупать не придётся;
{% endif %}
Скрипт:
1. «{{ customer.greeting_name }}, добрый день! Это {{ company }}. Спасибо, что вы с нами уже {{ a.years_customer | default(0) | plural("год", "года", "лет", locale) }}.»
2. «У нас пакет {{ offer.name }}, первый месяц бесплатно.»
{% if a.football_streams_per_month | default(0) %}3. «Вы смотрите футбол — в пакете спортивный канал.»
{% endif %}4. Ответьте на вопросы; при согласии оформите подключение, при отказе отметьте причину.
"""
REPLENISHMENT_SMS = """{% set need = needs | selectattr("key", "equalto", offer.need_key) | first %}{{ customer.greeting_name }}, {{ offer.product }} закончатся ~{{ need.due_on | day_month(locale) }}. Закажите со скидкой {{ offer.discount_percent }}%. {{ company }}"""
REPLENISHMENT_CALL = """{% set need = needs | selectattr("key", "equalto", offer.need_key) | first %}
Средний расход: {{ need.avg_daily_use | round(1) }} шт. в день; запас закончится около {{ need.due_on | day_month(locale) }}."""
CAT_FOOD_SMS = """{{ customer.greeting_name }}, спасибо за покупку! До {{ offer.valid_until | day_month(locale) }} −{{ offer.discount_percent }}% на корм для кошек. {{ company }}"""
BIRTHDAY_EMAIL = """Здравствуйте, {{ customer.greeting_name }}!
{% if purchases.by_category.travel is defined %}В прошлый раз вы ездили {{ purchases.by_category.travel.last_on | day_month(locale, "LLLL y") }} — подберём что-то новое.{% endif %}"""
HAIRCUT_SMS = """{{ customer.greeting_name }}, с прошлой стрижки прошло {{ (today - events.haircut.last_on).days | plural("день", "дня", "дней", locale) }}. Записаться: ответьте на SMS. {{ company }}"""


def test_todays_isp_call_script_for_a_woman_a_count_and_a_left_out_step(tmp_path):
    root = make(tmp_path, "isp", {"call_script.txt": ISP_CALL_SCRIPT}, {"name": "«ТВ + интернет»"})
    found = findings(root, "isp")
    gender = [f for f in only(found) if f.kind == "gender"]
    assert {f.message.split("»")[0] for f in gender} == {"«пробовал", "«отказался"}
    assert all("woman" in f.cases and "man" not in f.cases for f in gender)
    assert "«пробовала»" in gender[0].message or "«отказалась»" in gender[0].message
    assert any(f.kind == "gender" and f.severity == "warning" and f.cases == ["gender unknown"] for f in found)
    numeral = [f for f in found if f.kind == "numeral"]
    assert numeral and "«4 раза»" in numeral[0].message and "~4 раз" in numeral[0].text
    steps = [f for f in found if f.kind == "steps"]
    assert steps and steps[0].cases == ["no attributes"] and "step 4 follows step 2" in steps[0].message


def test_todays_replenishment_sms_with_a_passed_need_and_a_decimal_point(tmp_path):
    root = make(tmp_path, "refill", {"sms.txt": REPLENISHMENT_SMS, "call_script.txt": REPLENISHMENT_CALL})
    found = findings(root, "refill")
    passed = [f for f in only(found) if f.kind == "past-date"]
    assert {f.file for f in passed} == {"refill/sms.txt", "refill/call_script.txt"}
    assert all(f.cases == ["need passed"] for f in passed)
    assert any("закончатся ~26 октября" in f.text and "today is 23 ноября" in f.message for f in passed)
    decimal = [f for f in found if f.kind == "decimal-point"]
    assert decimal and "«25.0»" in decimal[0].message and "«25»" in decimal[0].message
    product = [f for f in found if f.kind == "verb-agreement"]   # «визитки закончатся» written for every product
    assert product and product[0].cases == ["product «корм для кошек»"] and "«закончится»" in product[0].message


def test_todays_cat_food_offer_with_an_expired_offer(tmp_path):
    root = make(tmp_path, "cat", {"sms.txt": CAT_FOOD_SMS}, {"discount_percent": 10, "valid_until": "2026-11-30"})
    found = only(findings(root, "cat"))
    assert {f.kind for f in found} == {"expired-offer"}
    assert all(f.cases == ["offer expired"] for f in found)
    assert {f.message.split("«")[1].split("»")[0] for f in found} == {"31 октября", "10%"}


def test_todays_birthday_email_names_the_month_in_the_nominative(tmp_path):
    root = make(tmp_path, "trip", {"email_subject.txt": "С днём рождения", "email.txt": BIRTHDAY_EMAIL},
                {"discount_percent": 7})
    months = findings(root, "trip", "month")
    assert months and "ездили июль 2026" in months[0].text and "«в июле 2026 года»" in months[0].message


def test_todays_haircut_sms_says_прошло_21_день(tmp_path):
    root = make(tmp_path, "hair", {"sms.txt": HAIRCUT_SMS}, {})
    found = findings(root, "hair", "verb-agreement")
    assert len(found) == 1 and set(found[0].cases) == {"count 1", "count 21"}
    assert "«прошёл 1 день»" in found[0].message or "«прошёл 21 день»" in found[0].message


# --- every kind on a small wrong template, nothing on the right one ------------------------------------

@pytest.mark.parametrize("kind, wrong, right", [
    ("gender", "{{ customer.first_name }} пробовал цифровое ТВ и отказался.",
     "{{ customer.first_name }} {{ g('пробовал', 'пробовала') }} цифровое ТВ и {{ g('отказался', 'отказалась') }}."),
    ("gender", "Ксения, спасибо, что выбрал нас!", "{{ customer.first_name }}, спасибо, что выбрали нас!"),
    ("gender", "Вы записан на приём.", "Вы записаны на приём."),
    ("past-date", "{% set need = needs|first %}Визитки закончатся {{ need.due_on|day_month }}.",
     "{% set need = needs|first %}Визитки {% if need.days_left >= 0 %}закончатся {{ need.due_on|day_month }}"
     "{% else %}закончились {{ need.due_on|day_month }}{% endif %}."),
    ("past-date", "{% set need = needs|first %}Запас — через {{ need.days_left }} дн.",
     "{% set need = needs|first %}Запас закончится {{ need.days_left|relative_days }}."),
    ("numeral", "Вы заказываете ~{{ customer.attributes.children }} раз в месяц.",
     "Вы заказываете ~{{ customer.attributes.children|default(1)|agree('раз') }} в месяц."),
    ("numeral", "В семье {{ customer.attributes.children }} детей.",
     "{% if customer.attributes.children is defined %}В семье {{ customer.attributes.children|agree('ребёнок') }}.{% endif %}"),
    ("verb-agreement", "С прошлой покупки прошло {{ purchases.count|plural('день', 'дня', 'дней') }}.",
     "С прошлой покупки {{ purchases.count|passed('день') }}."),
    ("verb-agreement", "Корм для кошек скоро закончатся.", "Корм для кошек скоро {{ 'закончатся'|agree_verb('корм') }}."),
    ("decimal-point", "{% set need = needs|first %}Расход {{ need.avg_daily_use|round(1) }} шт. в день.",
     "{% set need = needs|first %}Расход {{ need.avg_daily_use|decimal }} шт. в день."),
    ("month", "Последняя покупка: вы заказывали {{ purchases.first_on|day_month('ru_RU', 'LLLL y') }}.",
     "{% if purchases.first_on %}Последняя покупка: вы заказывали {{ purchases.first_on|month_in }}.{% endif %}"),
    ("steps", "1. Поздоровайтесь.\n2. Предложите скидку.\n{% if customer.attributes.car is defined %}3. Спросите про "
              "машину.\n{% endif %}4. Попрощайтесь.",
     "{% set s = namespace(n=0) %}{% set s.n = s.n + 1 %}{{ s.n }}. Поздоровайтесь.\n{% set s.n = s.n + 1 %}{{ s.n }}."
     " Предложите скидку.\n{% if customer.attributes.car is defined %}{% set s.n = s.n + 1 %}{{ s.n }}. Спросите про "
     "машину.\n{% endif %}{% set s.n = s.n + 1 %}{{ s.n }}. Попрощайтесь."),
    ("leftover", "Ваш менеджер: {{ customer.manager.name if customer.manager }}.",
     "{% if customer.manager %}Ваш менеджер: {{ customer.manager.name }}.{% endif %}"),
    ("leftover", "Менеджер: {{ customer.manager }}", "Менеджер: {{ customer.manager.name if customer.manager else "
                                                     "'не назначен' }}"),
    ("leftover", "Авто ({{ customer.attributes.car|default('') }}) ждёт ТО.",
     "Авто{% if customer.attributes.car is defined %} ({{ customer.attributes.car }}){% endif %} ждёт ТО."),
])
def test_each_kind_on_a_wrong_template_and_none_on_the_right_one(tmp_path, kind, wrong, right):
    make(tmp_path / "wrong", "t", {"call_script.txt": wrong})
    make(tmp_path / "right", "t", {"call_script.txt": right})
    assert only(findings(tmp_path / "wrong", "t", kind)), kind
    assert findings(tmp_path / "right", "t") == []


def test_an_expired_offer_is_reported_unless_the_template_withdraws_it(tmp_path):
    offer = {"discount_percent": 10, "valid_until": "2026-11-30"}
    make(tmp_path / "wrong", "t", {"sms.txt": "Скидка {{ offer.discount_percent }}% до {{ offer.valid_until|day_month }}"},
         offer)
    make(tmp_path / "right", "t", {"sms.txt": "{% if offer.valid_until >= today %}Скидка "
                                              "{{ offer.discount_percent }}% до {{ offer.valid_until|day_month }}"
                                              "{% else %}Ждём вас снова{% endif %}"}, offer)
    assert {f.kind for f in findings(tmp_path / "wrong", "t")} == {"expired-offer"}
    assert findings(tmp_path / "right", "t") == []


@pytest.mark.parametrize("validity", [{"valid_until": "end_of_month"}, {"valid_days": 14}, {}])
def test_an_offer_valid_by_a_rule_renders_as_a_run_would_show_it(tmp_path, validity):
    """A run gives ``offer.valid_until`` as a date whatever meta.yaml says (a date, a rule, valid_days)."""
    make(tmp_path, "t", {"sms.txt": "Скидка {{ offer.discount_percent }}% до {{ offer.valid_until|day_month }}"},
         {"discount_percent": 10, **validity})
    found = findings(tmp_path, "t")
    assert {f.kind for f in found} == {"expired-offer"} and all(f.cases == ["offer expired"] for f in found)


def test_a_part_that_fails_only_on_missing_data_is_a_warning_one_that_always_fails_an_error(tmp_path):
    make(tmp_path, "t", {"sms.txt": "Стрижек: {{ events.haircut.count }}", "voice.txt": "{{ offer.nope }}"})
    found = findings(tmp_path, "t", "render")
    sms = [f for f in found if f.file == "t/sms.txt"]
    assert [f.severity for f in sms] == ["warning"] and sms[0].cases == ["no events"]
    assert any(f.file == "t/voice.txt" and f.severity == "error" for f in found)


def test_a_correct_template_written_with_the_tools_has_no_findings(tmp_path):
    script = """{% set a = customer.attributes %}{% set need = needs | selectattr("key", "equalto", offer.need_key) | first %}
Клиент: {{ customer.name }}, менеджер: {{ customer.manager.name if customer.manager else "не назначен" }}.
- с нами {{ a.years_customer | default(0) | agree("год", locale=locale) }}, детей: {{ a.children | default(0) }};
{% if a.digital_tv_trial_months | default(0) %}- {{ g("пробовал", "пробовала") }} цифровое ТВ {{ a.digital_tv_trial_months | agree("месяц") }} и {{ g("отказался", "отказалась") }};
{% endif %}{% if a.football_streams_per_month | default(0) %}- покупает {{ a.football_streams_per_month | agree("трансляция футбола") }} в месяц;
{% endif %}- расход {{ need.avg_daily_use | decimal(1, locale) }} шт. в день; {% if need.days_left >= 0 %}{{ offer.product }} {{ "закончится" | agree_verb(offer.product) }} {{ need.days_left | relative_days }}, {{ need.due_on | day_month(locale) }}{% else %}{{ offer.product }} {{ "закончились" | agree_verb(offer.product) }} {{ -need.days_left | agree("день") }} назад{% endif %};
{% if events.haircut is defined %}- с прошлой стрижки {{ (today - events.haircut.last_on).days | passed("день") }}, всего {{ events.haircut.count | agree("визит") }};
{% endif %}{% if purchases.last %}- последняя покупка {{ purchases.last.on | month_in }}.
{% endif %}
{% for step in ["Поздоровайтесь.", "Предложите скидку " ~ offer.discount_percent ~ "%."] %}{{ loop.index }}. {{ step }}
{% endfor %}"""
    make(tmp_path, "good", {"call_script.txt": script,
                            "sms.txt": "{{ customer.greeting_name }}, {{ offer.product }} — скидка "
                                       "{{ offer.discount_percent }}%. {{ company }}"})
    assert findings(tmp_path, "good") == []


def test_check_text_on_correct_russian_finds_nothing():
    ctx = base_context({}, TODAY)
    for text in ("Ваш менеджер Игорь Петров звонил вам вчера, но не дозвонился.",
                 "Мастер Иван Сергеевич будет рад вас видеть.", "Ваш заказ готов: курьер привезёт его завтра.",
                 "Вы пробовали цифровое ТВ 1 месяц и отказались.", "Скидка 10% действует до 30 ноября.",
                 "Визитки закончились около 26 октября — пора заказать новые.", "Прошло 5 дней, осталось 2 дня.",
                 "Около 4 раз в месяц; 21 день; 1,5 дня; в течение 2 дней; за 2026 год.",
                 "Мастер приедет в 10.30.", "Напишите на info@example.com или https://example.com/a.b."):
        assert check_text(text, ctx) == [], text


# --- the command ----------------------------------------------------------------------------------------

@pytest.fixture
def templates_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TOUCHFLOW_TEMPLATES_DIR", str(tmp_path / "templates"))
    monkeypatch.setenv("TOUCHFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    from touchflow.settings import reset_settings

    reset_settings()
    make(tmp_path / "templates", "bad", {"sms.txt": "{{ customer.first_name }} пробовал ~{{ purchases.count }} раз."})
    make(tmp_path / "templates", "good", {"sms.txt": "{{ customer.greeting_name }}, ждём вас!"})
    yield tmp_path / "templates"
    reset_settings()


def test_the_command_exits_1_on_errors_and_prints_json(templates_env):
    result = run_cli("template", "check", "bad", "--as-of", TODAY.isoformat(), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["template"] == "bad" and data["errors"] >= 2 and data["checked"] >= 14
    kinds = {f["kind"] for f in data["templates"][0]["findings"]}
    assert {"gender", "numeral"} <= kinds
    finding = data["templates"][0]["findings"][0]
    assert {"file", "kind", "severity", "message", "text", "cases"} <= set(finding)
    human = run_cli("template", "check", "bad", "--as-of", TODAY.isoformat())
    assert human.exit_code == 1 and "bad/sms.txt" in human.output and "пробовал" in human.output


def test_the_command_exits_0_on_a_clean_template_and_checks_all_without_a_name(templates_env):
    clean = run_cli("template", "check", "good", "--json")
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["errors"] == 0
    every = json.loads(run_cli("template", "check", "--json", "--customers", "0").stdout)
    names = {t["template"] for t in every["templates"]}
    assert {"bad", "good", "winback"} <= names   # the project's and the shipped ones

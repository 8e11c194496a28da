"""Russian that agrees: each expected form is what a Russian reader writes, not a snapshot of our output."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from channels.render import render, russian
from channels.render.context import customer_gender, sample_context
from channels.render.filters import decimal
from channels.render.russian import (
    agree,
    agree_verb,
    gender_of,
    inflect,
    month_in,
    passed,
    pick,
    relative_days,
    remaining,
    verb,
)

NBSP = "\u00a0"


@pytest.mark.parametrize("count, expected", [
    (0, "0 дней"), (1, "1 день"), (2, "2 дня"), (3, "3 дня"), (4, "4 дня"), (5, "5 дней"), (11, "11 дней"),
    (12, "12 дней"), (14, "14 дней"), (21, "21 день"), (22, "22 дня"), (25, "25 дней"), (101, "101 день"),
    (111, "111 дней"), (1.5, "1,5 дня"), (2.0, "2 дня"), ("1,5", "1,5 дня"), (12500, f"12{NBSP}500 дней"),
])
def test_a_count_and_its_noun_agree(count, expected):
    assert agree(count, "день") == expected


@pytest.mark.parametrize("noun, forms", [
    ("раз", ["1 раз", "2 раза", "4 раза", "5 раз", "11 раз", "21 раз", "22 раза", "1,5 раза"]),
    ("неделя", ["1 неделя", "2 недели", "4 недели", "5 недель", "11 недель", "21 неделя", "22 недели", "1,5 недели"]),
    ("ребёнок", ["1 ребёнок", "2 ребёнка", "4 ребёнка", "5 детей", "11 детей", "21 ребёнок", "22 ребёнка",
                 "1,5 ребёнка"]),
    ("трансляция футбола", ["1 трансляция футбола", "2 трансляции футбола", "4 трансляции футбола",
                            "5 трансляций футбола", "11 трансляций футбола", "21 трансляция футбола",
                            "22 трансляции футбола", "1,5 трансляции футбола"]),
    ("спортивный канал", ["1 спортивный канал", "2 спортивных канала", "4 спортивных канала",
                          "5 спортивных каналов", "11 спортивных каналов", "21 спортивный канал",
                          "22 спортивных канала", "1,5 спортивного канала"]),
])
def test_other_nouns_and_phrases_agree_with_their_head(noun, forms):
    assert [agree(n, noun) for n in (1, 2, 4, 5, 11, 21, 22, 1.5)] == forms


def test_counted_genitives_that_differ_from_the_dictionary_plural():
    assert [agree(n, "год") for n in (1, 2, 5, 11, 21, 25)] == ["1 год", "2 года", "5 лет", "11 лет", "21 год", "25 лет"]
    assert agree(5, "год", case="gent") == "5 лет" and agree(5, "год", case="datv") == "5 годам"
    assert [agree(n, "человек") for n in (1, 3, 5)] == ["1 человек", "3 человека", "5 человек"]


def test_agreement_in_the_other_cases():
    # «в течение 1 дня / 2 дней / 5 дней / 21 дня», «к 1 дню / 2 дням / 5 дням»
    assert [agree(n, "день", case="gent") for n in (1, 2, 5, 21)] == ["1 дня", "2 дней", "5 дней", "21 дня"]
    assert [agree(n, "день", case="datv") for n in (1, 2, 5)] == ["1 дню", "2 дням", "5 дням"]
    assert [agree(n, "неделя", case="ablt") for n in (1, 3)] == ["1 неделей", "3 неделями"]
    assert agree(1.5, "день", case="datv") == "1,5 дня"      # a fraction keeps the genitive singular
    assert agree(1, "ребёнок", case="accs") == "1 ребёнка"   # an animate noun's accusative
    with pytest.raises(ValueError, match="unknown case"):
        agree(2, "день", case="dative")


@pytest.mark.parametrize("args, expected", [
    (("Саша", "Петровна"), "f"), (("Саша", "Иванович"), "m"), (("Вера", "Ильинична"), "f"), (("Лев", "Ильич"), "m"),
    ((None, "Кузьминична"), "f"), (("Эльдар", "Рашид оглы"), "m"),
    (("Ксения",), "f"), (("Иван",), "m"), (("Дмитрий",), "m"), (("Никита",), "m"), (("Анна",), "f"),
    (("Саша",), None), (("Женя",), None), (("Ыкдрф",), None), ((None,), None), (("",), None),
])
def test_gender_from_the_patronymic_then_the_first_name(args, expected):
    assert gender_of(*args) == expected


def test_gender_from_a_full_name():
    assert gender_of(full_name="Лебедева Ксения Петровна") == "f"
    assert gender_of(full_name="Смирнов Саша Петрович") == "m"     # the patronymic decides
    assert gender_of(full_name="Петрова Анна") == "f" and gender_of(full_name="Анна Петрова") == "f"
    assert gender_of(full_name="Абонент Один") is None


def test_the_context_reads_the_gender_column_and_infers_it_when_empty():
    assert customer_gender("f", "Иван", "Смирнов Иван") == "f"   # the column wins
    assert customer_gender("M", None, "") == "m"
    assert customer_gender(None, "Ксения", "Лебедева Ксения") == "f"
    assert customer_gender(None, None, "Смирнов Иван Петрович") == "m"
    assert customer_gender(None, "Саша", "Ким Саша") is None
    assert sample_context()["customer"]["gender"] == "f"


@pytest.mark.parametrize("text, case, expected", [
    ("Ксения", "datv", "Ксении"), ("Иван", "datv", "Ивану"), ("Дмитрий", "datv", "Дмитрию"),
    ("Ксения", "gent", "Ксении"), ("Иван", "ablt", "Иваном"), ("Никита", "datv", "Никите"),
    ("Лебедева Ксения Петровна", "gent", "Лебедевой Ксении Петровны"),
    ("Лебедева Ксения Петровна", "datv", "Лебедевой Ксении Петровне"),
    ("Смирнов Иван Петрович", "datv", "Смирнову Ивану Петровичу"),
    ("Анна-Мария", "datv", "Анне-Марии"),
    ("трансляция футбола", "ablt", "трансляцией футбола"), ("корм для кошек", "gent", "корма для кошек"),
    ("визитки", "gent", "визиток"), ("спортивный канал", "loct", "спортивном канале"),
    ("Ыкдрф", "datv", "Ыкдрф"), ("", "datv", ""), ("ООО «Ромашка»", "datv", "ООО «Ромашка»"),
])
def test_names_and_nouns_in_a_case_keep_their_capitals(text, case, expected):
    assert inflect(text, case) == expected


def test_inflect_in_the_plural_and_bad_arguments():
    assert inflect("спортивный канал", "nomn", number="plur") == "спортивные каналы"
    with pytest.raises(ValueError):
        inflect("день", "dative")


@pytest.mark.parametrize("call, expected", [
    (lambda: verb("пробовал", gender="f"), "пробовала"),
    (lambda: verb("пробовал", gender="m"), "пробовал"),
    (lambda: verb("пробовал", gender=None), "пробовали"),   # unknown: the polite plural
    (lambda: verb("отказаться", gender="f"), "отказалась"),
    (lambda: verb("отказался", gender=None), "отказались"),
    (lambda: verb("закончится", number="plur"), "закончатся"),
    (lambda: verb("закончиться", number="sing", person=3), "закончится"),
    (lambda: verb("прийти", number="plur", person=2), "придёте"),
    (lambda: verb("заказывать", number="plur", person=2), "заказываете"),
    (lambda: verb("закончится", tense="past", gender="n"), "закончилось"),
    (lambda: agree_verb("закончится", "визитки"), "закончатся"),
    (lambda: agree_verb("закончатся", "корм"), "закончится"),
    (lambda: agree_verb("закончатся", "корм для кошек"), "закончится"),
    (lambda: agree_verb("закончился", "бумага"), "закончилась"),
    (lambda: agree_verb("закончилась", "визитки"), "закончились"),
    (lambda: agree_verb("закончится", "вы"), "закончитесь"),
])
def test_verbs_agree_with_gender_number_and_subject(call, expected):
    assert call() == expected


def test_g_picks_by_gender_and_defaults_to_the_polite_plural():
    assert pick("f", "пробовал", "пробовала") == "пробовала"
    assert pick("m", "пробовал", "пробовала") == "пробовал"
    assert pick(None, "пробовал и отказался", "пробовала и отказалась") == "пробовали и отказались"
    assert pick(None, "рад", "рада") == "рады" and pick(None, "записан", "записана") == "записаны"
    assert pick(None, "Уважаемый", "Уважаемая", "Здравствуйте") == "Здравствуйте"


def test_passed_and_remaining_agree_with_the_numeral():
    assert [passed(n) for n in (1, 2, 5, 21, 22, 41, 1.5)] == [
        "прошёл 1 день", "прошли 2 дня", "прошло 5 дней", "прошёл 21 день", "прошли 22 дня", "прошёл 41 день",
        "прошло 1,5 дня"]
    assert passed(1, "неделя") == "прошла 1 неделя" and passed(3, "месяц") == "прошли 3 месяца"
    assert [remaining(n) for n in (1, 3, 11)] == ["остался 1 день", "остались 3 дня", "осталось 11 дней"]


def test_months_and_relative_days():
    assert month_in(date(2026, 7, 5)) == "в июле 2026 года"
    assert month_in("2026-05-01") == "в мае 2026 года" and month_in(date(2026, 3, 1), with_year=False) == "в марте"
    assert [month_in(date(2026, m, 1), False) for m in (1, 2, 6, 8, 9, 10, 11, 12)] == [
        "в январе", "в феврале", "в июне", "в августе", "в сентябре", "в октябре", "в ноябре", "в декабре"]
    assert [relative_days(d) for d in (0, 1, 2, 3, 5, 21, -1, -2, -3, -5, -21)] == [
        "сегодня", "завтра", "послезавтра", "через 3 дня", "через 5 дней", "через 21 день", "вчера", "позавчера",
        "3 дня назад", "5 дней назад", "21 день назад"]
    assert relative_days(timedelta(days=4)) == "через 4 дня"
    assert relative_days(date(2026, 11, 20), today=date(2026, 11, 23)) == "3 дня назад"


def test_decimals_as_the_locale_writes_them():
    assert decimal(8.5) == "8,5" and decimal(12500) == f"12{NBSP}500" and decimal(8.04) == "8"
    assert decimal(0.25, 2) == "0,25" and decimal("8.50") == "8,5" and decimal(1234.5, locale="en_US") == "1,234.5"


def test_the_filters_and_g_in_a_template(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "sms.txt").write_text(
        "{{ customer.first_name|inflect('datv') }}: {{ customer.first_name }} {{ g('пробовал', 'пробовала') }}; "
        "{{ needs[0].days_left|relative_days }}; {{ needs[0].due_on|relative_days }}; {{ 41|passed }}; "
        "{{ 4|agree('трансляция футбола') }}; {{ needs[0].avg_daily_use|decimal }} шт. в день; "
        "{{ purchases.first_on|month_in }}; {{ 'закончится'|agree_verb('визитки') }}; "
        "{{ 'пробовал'|verb(gender=customer.gender) }}; {{ 21|with_verb('остался') }}", encoding="utf-8")
    ctx = sample_context(as_of=date(2026, 11, 23))
    ctx["needs"][0].update(days_left=5, due_on=date(2026, 11, 28), avg_daily_use=8.5)
    assert render("t", "sms", ctx, root=tmp_path).text == (
        "Анне: Анна пробовала; через 5 дней; через 5 дней; прошёл 41 день; 4 трансляции футбола; 8,5 шт. в день; "
        "в январе 2025 года; закончатся; пробовала; остался 21 день")
    ctx["customer"]["gender"] = None
    assert "Анна пробовали;" in render("t", "sms", ctx, root=tmp_path).text  # unknown: the plural, as with «вы»


def test_results_are_cached_and_long_text_is_left_alone():
    russian._agree.cache_clear()
    agree(5, "день")
    agree(5, "день")
    assert russian._agree.cache_info().hits >= 1
    long = "слово " * 100
    assert inflect(long, "datv") == long and verb(long) == long


def test_contexts_from_the_base_carry_the_gender_column_or_the_inferred_one(engine):
    from sqlalchemy import insert, select

    from channels.render.context import contexts_for
    from crm.models import Customer

    rows = [("G1", "Смирнова Саша Петровна", None, None), ("G2", "Лебедев Иван", "Иван", None),
            ("G3", "Ким Саша", "Саша", None), ("G4", "Иванов Иван", "Иван", "f")]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            {"external_id": e, "name": n, "first_name": f, "gender": g, "attributes": {}} for e, n, f, g in rows])
        ids = list(conn.execute(select(Customer.__table__.c.id)).scalars())
    found = {c["customer"]["external_id"]: c["customer"]["gender"]
             for c in contexts_for(engine, ids, as_of=date(2026, 11, 23)).values()}
    assert found == {"G1": "f", "G2": "m", "G3": None, "G4": "f"}   # the column wins over the name


def test_a_title_inside_a_sentence_starts_small_unless_it_is_an_acronym():
    from channels.render.filters import in_sentence

    assert in_sentence("Менеджер по продажам") == "менеджер по продажам"
    assert in_sentence("Генеральный директор") == "генеральный директор"
    assert in_sentence("IT-директор") == "IT-директор" and in_sentence("ООО «Визитка»") == "ООО «Визитка»"
    assert in_sentence("") == "" and in_sentence(None) == ""

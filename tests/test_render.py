"""Rendering: sandbox, strict variables with file and line, Russian filters, escaping, SMS segments."""

from __future__ import annotations

from datetime import date

import pytest

from channels.context import contexts_for, sample_context
from channels.render import (
    TemplateError,
    TemplateSecurityError,
    channels_of,
    day_month,
    meta,
    money,
    plural,
    render,
    template_hash,
    template_names,
)
from channels.sms import sms_info
from tests import segbase


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "offer"
    folder.mkdir()
    (folder / "email_subject.txt").write_text("{{ customer.greeting_name }}, привет", encoding="utf-8")
    (folder / "email.txt").write_text("Имя: {{ customer.name }}\nСкидка {{ offer.discount }}%", encoding="utf-8")
    (folder / "email.html").write_text("<p>{{ customer.name }}</p>", encoding="utf-8")
    (folder / "telegram.html").write_text("<b>{{ customer.name }}</b>", encoding="utf-8")
    (folder / "sms.txt").write_text("{{ customer.name }}", encoding="utf-8")
    return tmp_path


def context(name="Иван <script>alert(1)</script> & Co", **offer):
    ctx = sample_context(offer or {"discount": 10})
    ctx["customer"]["name"] = name
    return ctx


def test_russian_money_dates_and_plurals():
    assert money(1500) == "1\u00a0500\u00a0₽"
    assert money("1500.50") == "1\u00a0500,50\u00a0₽"
    assert day_month(date(2026, 11, 23)) == "23 ноября"
    assert day_month("2026-03-08") == "8 марта"
    assert [plural(n, "день", "дня", "дней") for n in (1, 2, 5, 11, 21, 22, 25)] == [
        "1 день", "2 дня", "5 дней", "11 дней", "21 день", "22 дня", "25 дней"]


def test_html_parts_are_escaped_text_parts_are_not(root):
    email = render("offer", "email", context(), root=root)
    assert email.html == "<p>Иван &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</p>"
    assert "Иван <script>alert(1)</script> & Co" in email.text
    assert email.subject == "Анна, привет"
    assert render("offer", "telegram", context(), root=root).html.startswith("<b>Иван &lt;script&gt;")
    assert render("offer", "sms", context(), root=root).text == "Иван <script>alert(1)</script> & Co"


def test_a_missing_variable_names_the_file_line_and_variable(root):
    (root / "offer" / "email.txt").write_text("Привет\n\nСкидка {{ offer.percent }}%", encoding="utf-8")
    with pytest.raises(TemplateError) as err:
        render("offer", "email", context(), root=root)
    assert err.value.template == "offer/email.txt" and err.value.line == 3 and err.value.variable == "percent"
    assert "offer/email.txt, line 3" in str(err.value) and "percent" in str(err.value)


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ customer|attr('__class__') }}",
    "{{ offer.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
])
def test_template_injection_is_a_security_error(root, source):
    (root / "offer" / "sms.txt").write_text(source, encoding="utf-8")
    with pytest.raises(TemplateSecurityError, match="offer/sms.txt"):
        render("offer", "sms", context(), root=root)


def test_syntax_errors_and_unknown_channels_are_clear(root):
    (root / "offer" / "sms.txt").write_text("{% if %}", encoding="utf-8")
    with pytest.raises(TemplateError, match="line 1"):
        render("offer", "sms", context(), root=root)
    with pytest.raises(TemplateError, match="has no voice part"):
        render("offer", "voice", context(), root=root)
    with pytest.raises(TemplateError, match="no template 'nope'"):
        channels_of("nope", root)


def test_sms_segments_are_counted_and_the_limit_enforced(root):
    assert sms_info("a" * 160).segments == 1 and sms_info("a" * 161).segments == 2
    assert sms_info("я" * 70).segments == 1 and sms_info("я" * 71).segments == 2 and sms_info("я" * 135).segments == 3
    assert sms_info("€" * 80).segments == 1 and sms_info("€" * 81).segments == 2
    assert sms_info("😀" * 35).length == 70
    long = context(name="Очень длинное имя " * 12)
    with pytest.raises(TemplateError, match="SMS segments"):
        render("offer", "sms", long, root=root, sms_max_segments=3)
    warned = render("offer", "sms", long, root=root, sms_max_segments=3, sms_over_limit="warn")
    assert warned.sms.encoding == "UCS-2" and warned.sms.segments == 4 and warned.warnings


def test_the_template_hash_changes_with_any_file(root):
    before = template_hash("offer", root)
    (root / "offer" / "sms.txt").write_text("{{ customer.name }}!", encoding="utf-8")
    assert template_hash("offer", root) != before


def test_every_shipped_template_renders_for_the_sample_customer():
    names = template_names()
    assert {"replenishment_reminder", "isp_tv_package", "cat_food_offer", "haircut_reminder"} <= set(names)
    for name in names:
        ctx = sample_context(meta(name).get("offer", {}))
        for channel in channels_of(name):
            rendered = render(name, channel, ctx)
            assert rendered.text.strip(), (name, channel)


def test_contexts_come_from_the_base(engine, tmp_path):
    segbase.build(engine, tmp_path)
    from sqlalchemy import select

    from crm.models import Customer

    with engine.connect() as conn:
        ids = dict(conn.execute(select(Customer.__table__.c.external_id, Customer.__table__.c.id)).all())
    contexts = contexts_for(engine, [ids["CARD"], ids["HAIR"]], offer={"key": "x"}, as_of=date(2026, 4, 4))
    card = contexts[ids["CARD"]]
    assert card["purchases"]["count"] == 3 and card["purchases"]["total"] == 4000
    assert card["purchases"]["last"]["product"] == "Визитки 1000 шт"
    need = next(n for n in card["needs"] if n["key"] == "category:business_cards")
    assert need["due_on"] == date(2026, 4, 11) and need["days_left"] == 7
    assert card["customer"]["manager"]["name"] == "ivanova"
    hair = contexts[ids["HAIR"]]
    assert hair["events"]["haircut"]["count"] == 2 and hair["customer"]["attributes"]["haircut_interval_days"] == 30
    offer = meta("replenishment_reminder")["offer"]
    card["offer"] = offer
    text = render("replenishment_reminder", "email", card).text
    assert "11 апреля" in text and "через 7 дней" in text and "1\u00a0600\u00a0₽" in text


def test_render_pool_renders_in_another_process_and_returns_errors(root):
    from channels.render_pool import RenderPool

    good = context()
    bad = sample_context({})          # no offer.discount: the email part fails in the worker
    with RenderPool(root=root) as pool:
        first, second = pool.submit("offer", "email", [good, bad]).result()
    assert first.subject == "Анна, привет" and "Скидка 10%" in first.text
    assert isinstance(second, TemplateError) and second.variable == "discount"

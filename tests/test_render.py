"""Rendering: sandbox, strict variables with file and line, Russian filters, escaping, SMS segments."""

from __future__ import annotations

import multiprocessing
import resource
import time
import tracemalloc
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.render.context import contexts_for, sample_context
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
from channels.render import limits
from channels.render.sms import sms_info
from crm.models import Touch
from tests import segbase
from tests.test_channel_faults import build
from touchflow.settings import reset_settings


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
    from flows.spec import resolve_offer

    for name in names:   # the offer as a run shows it: valid_until a date (end_of_month evaluated today)
        ctx = sample_context(resolve_offer(meta(name).get("offer", {}), {}, date.today(), template=name, campaign="t"))
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
    # the rep is known only by the code the import named: no message may call them «ivanova»
    assert card["customer"]["manager"] is None and card["customer"]["owner"]["code"] == "ivanova"
    assert card["customer"]["owner"]["name"] is None
    hair = contexts[ids["HAIR"]]
    assert hair["events"]["haircut"]["count"] == 2 and hair["customer"]["attributes"]["haircut_interval_days"] == 30
    offer = meta("replenishment_reminder")["offer"]
    card["offer"] = offer
    text = render("replenishment_reminder", "email", card).text
    assert "11 апреля" in text and "через 7 дней" in text and "1\u00a0600\u00a0₽" in text


def test_render_pool_renders_in_another_process_and_returns_errors(root):
    from channels.render.pool import RenderPool

    good = context()
    bad = sample_context({})          # no offer.discount: the email part fails in the worker
    with RenderPool(root=root) as pool:
        first, second = pool.submit("offer", "email", [good, bad]).result()
    assert first.subject == "Анна, привет" and "Скидка 10%" in first.text
    assert isinstance(second, TemplateError) and second.variable == "discount"


# ---------------------------------------------------------------- limits: time, size, values, the offer

LOOP_FOR_MINUTES = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}done"


def sms_template(root, name: str, source: str) -> str:
    (root / name).mkdir()
    (root / name / "sms.txt").write_text(source, encoding="utf-8")
    return name


def test_a_template_that_would_loop_for_minutes_fails_within_about_its_time_limit(root):
    name = sms_template(root, "slow", "Привет! " + LOOP_FOR_MINUTES)
    for _ in range(3):                                   # and again: nothing is left behind by the first
        began = time.monotonic()
        with pytest.raises(TemplateError, match="took longer than 0.3 s") as err:
            render(name, "sms", context(), root=root, timeout=0.3)
        assert time.monotonic() - began < 30   # stopped: the loop alone would run for minutes
        assert err.value.template == "slow/sms.txt" and "slow/sms.txt" in str(err.value)
    assert render("offer", "sms", context(), root=root, timeout=0.3).text.startswith("Иван")
    assert limits._deadlines == {}


class Stubborn:
    """An iterable whose code swallows every Exception (as careless code does); ends after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def __iter__(self):
        while time.monotonic() < self.until:
            try:
                sum(range(2000))
            except Exception:  # noqa: BLE001 - the point: it would swallow a time-out that is an Exception
                pass
            yield ""


def test_code_that_swallows_exceptions_cannot_swallow_the_time_limit(root):
    name = sms_template(root, "stubborn", "{% for _ in stubborn %}{% endfor %}x")
    began = time.monotonic()
    with pytest.raises(TemplateError, match="took longer than 0.3 s"):
        render(name, "sms", {"stubborn": Stubborn(5)}, root=root, timeout=0.3)
    assert time.monotonic() - began < 30   # refused while writing, not after minutes


def test_a_template_writing_more_than_the_size_limit_is_refused_as_it_writes(root):
    name = sms_template(root, "big", "{% for i in range(100000) %}{% for j in range(100000) %}0123456789"
                                     "{% endfor %}{% endfor %}")
    began = time.monotonic()
    with pytest.raises(TemplateError, match="writes more than 10,000 bytes") as err:
        render(name, "sms", context(), root=root, max_bytes=10_000, timeout=30)
    assert time.monotonic() - began < 30 and err.value.template == "big/sms.txt"


DOUBLE = "{{% set ns = namespace(s={start}) %}}{{% for i in range(40) %}}{{% set ns.s = {step} %}}{{% endfor %}}{{{{ ns.s }}}}"
BOMBS = {
    "repeat": "{{ 'x' * 1000000000 }}",
    "repeat_power": "{{ 'x' * 10**9 }}",
    "list_repeat": "{{ ([0] * 10**9)|length }}",
    "shared_list": "{% set s = 'x' * 100000 %}{{ ([s] * 100000)|string|length }}",
    "percent_width": "{{ '%1000000000s' % 'x' }}",
    "format_width": "{{ '{:>1000000000}'.format('x') }}",
    "format_filter": "{{ '%.1000000000f'|format(1.5) }}",
    "center_filter": "{{ 'x'|center(1000000000) }}",
    "center_method": "{{ 'x'.center(1000000000) }}",
    "zfill": "{{ '1'.zfill(1000000000) }}",
    "indent": "{{ 'a\nb'|indent(500000000) }}",
    "replace": "{{ ('x' * 100000).replace('', 'y' * 10000) }}",
    "join_filter": "{{ ('x' * 100000)|join('y' * 10000) }}",
    "join_method": "{{ ('y' * 10000).join('x' * 100000) }}",
    "wordwrap": "{{ ('a ' * 50000)|wordwrap(1, wrapstring='y' * 10000) }}",
    "translate": "{{ ('x' * 100000).translate({120: 'y' * 10000}) }}",
    "doubling_concat": DOUBLE.format(start="'x'", step="ns.s ~ ns.s"),
    "doubling_plus": DOUBLE.format(start="['x']", step="ns.s + ns.s"),
    "doubling_percent": DOUBLE.format(start="'x'", step="'%s%s' % (ns.s, ns.s)"),
    "doubling_format": DOUBLE.format(start="'x'", step="'{}{}'.format(ns.s, ns.s)"),
    "huge_integer": "{{ ((((10 ** 100) ** 100) ** 100) ** 100) % 7 }}",
    "lipsum": "{{ lipsum(1000000)|length }}",
}


@pytest.fixture
def memory_ceiling():
    """At most 1 GiB more address space for the test: a regression fails with MemoryError, not by the OOM killer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as fh:
        size = int(fh.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_template_cannot_build_a_huge_value_in_one_step(root, name, memory_ceiling):
    sms_template(root, name, BOMBS[name])
    tracemalloc.start()
    began = time.monotonic()
    try:
        with pytest.raises(TemplateError, match=f"{name}/sms.txt: the template") as err:
            render(name, "sms", context(), root=root, timeout=5, sms_over_limit="warn")
        elapsed, peak = time.monotonic() - began, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "build" in str(err.value) or "width" in str(err.value) or "lipsum" in str(err.value), err.value
    assert peak < 20_000_000, (elapsed, peak)                  # refused before it was allocated


def test_bounded_operators_filters_and_methods_still_do_their_ordinary_work(root):
    name = sms_template(root, "ordinary", (
        "{{ 'x' * 3 }}|{{ 2 ** 10 }}|{{ 6 * 7 }}|{{ [1, 2] + [3] }}|{{ 'a' ~ 1 ~ 'b' }}|{{ 'a' + 'b' }}|"
        "{{ '%05.1f%%' % 3.14159 }}|{{ '%(n)s!'|format(n='hi') }}|{{ '{:>4}{}'.format('ab', 1) }}|"
        "{{ '{n}'.format_map({'n': 'm'}) }}|{{ 'ab'|center(6) }}|{{ 'ab'.rjust(4, '.') }}|{{ '7'.zfill(3) }}|"
        "{{ 'a-b'.replace('-', '+') }}|{{ 'a-b'|replace('-', '') }}|{{ ', '.join(['a', 'b']) }}|"
        "{{ ['a', 'b']|join('/') }}|{{ 'a\nb'|indent(2, true) }}|{{ 'ab'.translate({97: 'A'}) }}|"
        "{{ 'aa bb'|wordwrap(2) }}|{{ 10 % 3 }}"))
    text = render(name, "sms", context(), root=root, sms_over_limit="warn").text
    assert text == ("xxx|1024|42|[1, 2, 3]|a1b|ab|003.1%|hi!|  ab1|m|  ab  |..ab|007|a+b|ab|a, b|a/b|  a\n  b|"
                    "Ab|aa\nbb|1")


@pytest.mark.parametrize("source", [
    "{{ offer.update({'discount': 90}) }}",
    "{% set _ = offer.__setitem__('discount', 90) %}",
    "{{ offer.pop('discount') }}",
    "{% set _ = offer.setdefault('extra', 1) %}",
    "{{ offer['items'].append(99) }}",
    "{% set _ = offer['items'].extend([1, 2]) %}",
    "{{ offer.clear() }}",
])
def test_a_template_cannot_change_the_offer_the_next_customer_sees(root, source):
    offer = {"discount": 10, "items": [1, 2]}
    (root / "offer" / "sms.txt").write_text(source + "Скидка {{ offer.discount }}%", encoding="utf-8")
    with pytest.raises(TemplateError, match="offer/sms.txt"):
        render("offer", "sms", {**context(), "offer": offer}, root=root)
    assert offer == {"discount": 10, "items": [1, 2]}
    (root / "offer" / "email.txt").write_text("Скидка {{ offer.discount }}%", encoding="utf-8")
    assert render("offer", "email", {**context(), "offer": offer}, root=root).text == "Скидка 10%"


def _render_slowly(root: str, answer) -> None:
    from channels.render import render as render_in_child

    began = time.monotonic()
    try:
        render_in_child("slow", "sms", context(), root=Path(root), timeout=0.3)
    except TemplateError as exc:
        answer.send((str(exc), time.monotonic() - began))
        return
    answer.send(("rendered", time.monotonic() - began))


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_the_time_limit_works_in_a_forked_or_spawned_child(root, start):
    sms_template(root, "slow", LOOP_FOR_MINUTES)
    with pytest.raises(TemplateError):                   # the parent's watcher is running
        render("slow", "sms", context(), root=root, timeout=0.1)
    ctx = multiprocessing.get_context(start)
    receive, answer = ctx.Pipe(duplex=False)
    with limits._lock:                                   # as when the fork happens while the watcher holds it
        child = ctx.Process(target=_render_slowly, args=(str(root), answer))
        child.start()
    try:
        assert receive.poll(30), "the child's render never ended"
        message, elapsed = receive.recv()
    finally:
        child.kill()
        child.join()
    assert "took longer than 0.3 s" in message and elapsed < 30


# ---------------------------------------------------------------- limits inside a campaign

def campaign_template(tmp_path, monkeypatch, email: str) -> None:
    """A template ``limited`` whose email body is ``email`` (TOUCHFLOW_TEMPLATES_DIR points at it)."""
    folder = tmp_path / "templates" / "limited"
    folder.mkdir(parents=True)
    (folder / "email_subject.txt").write_text("Скидка", encoding="utf-8")
    (folder / "email.txt").write_text(email, encoding="utf-8")
    (folder / "meta.yaml").write_text("offer:\n  discount_percent: 15\n  items: [1, 2]\n", encoding="utf-8")
    monkeypatch.setenv("TOUCHFLOW_TEMPLATES_DIR", str(tmp_path / "templates"))
    reset_settings()  # settings are read once per process


def run_limited(engine, tmp_path, timeout: float = 0.3) -> tuple[dict, dict[str, object]]:
    from flows.engine import run_campaign
    from flows.spec import CampaignSpec
    from touchflow.settings import Settings

    spec = CampaignSpec(name="limited", rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                        offer="limited-1", template="limited", channels=["email"], policy={"quiet_hours": "off"})
    summary = run_campaign(engine, spec, now=datetime.now(timezone.utc), settings=Settings(
        email_transport="file", outbox_dir=str(tmp_path / "outbox"), send_attempts=1, render_timeout_seconds=timeout))
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.__table__).where(Touch.__table__.c.run_id == summary["run_id"])).all()
    return summary, {row.address: row for row in rows}


def test_a_customer_whose_render_runs_away_is_skipped_and_the_others_are_sent(engine, tmp_path, monkeypatch):
    campaign_template(tmp_path, monkeypatch, "{% if customer.external_id == 'K003' %}" + LOOP_FOR_MINUTES +
                      "{% endif %}Скидка {{ offer.discount_percent }}%")
    build(engine, tmp_path, 12)
    began = time.monotonic()
    summary, rows = run_limited(engine, tmp_path)
    assert time.monotonic() - began < 60   # the runaway loop alone would take minutes
    slow = rows["k3@mail.ru"]
    assert (slow.status, slow.reason) == ("skipped", "render_failed")
    assert "limited/email.txt" in slow.detail and "took longer than 0.3 s" in slow.detail
    sent = [row for row in rows.values() if row.status == "sent"]
    assert len(sent) == 11 and all(row.body == "Скидка 15%" for row in sent)


@pytest.mark.parametrize("source", [
    "{{ offer.update({'discount_percent': 90}) }}",
    "{% set _ = offer.__setitem__('discount_percent', 90) %}",
    "{{ offer['items'].append(3) }}",
])
def test_a_customer_whose_template_changes_the_offer_fails_alone(engine, tmp_path, monkeypatch, source):
    campaign_template(tmp_path, monkeypatch, "{% if customer.external_id == 'K003' %}" + source +
                      "{% endif %}Скидка {{ offer.discount_percent }}%, {{ offer['items']|length }}")
    build(engine, tmp_path, 8)
    _, rows = run_limited(engine, tmp_path, timeout=5)  # not a time-limit test: one of the seven once failed in
    # CI (826 passed), most likely a render over the 0.3 s limit on a busy machine
    assert (rows["k3@mail.ru"].status, rows["k3@mail.ru"].reason) == ("skipped", "render_failed")
    sent = [row for row in rows.values() if row.status == "sent"]
    assert len(sent) == 7 and {row.body for row in sent} == {"Скидка 15%, 2"}


def test_a_jinja_runtime_error_is_that_message_s_template_error(tmp_path):
    """A filter used wrongly (Jinja's own FilterArgumentError) fails the render with the file, not the run."""
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "sms.txt").write_text("{{ {'a': 1}|dictsort(by='x') }}", encoding="utf-8")
    with pytest.raises(TemplateError, match="odd/sms.txt"):
        render("odd", "sms", {}, root=tmp_path)

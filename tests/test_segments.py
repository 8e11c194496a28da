"""Segments: the rule language on SQLite and PostgreSQL, predicted needs, errors, injection attempts."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from crm.models import Customer, Prediction
from segments import (
    SegmentError,
    count,
    customer_ids,
    load_library,
    parse_rule,
    preview,
    resolve,
)
from segments.compile import birthday_days, rfm_group
from segments.library import load_file
from segments.stats import replenishment, service_interval
from tests import segbase

AS_OF = date.fromisoformat(segbase.AS_OF)


@pytest.fixture
def base(engine, tmp_path):
    segbase.build(engine, tmp_path)
    return engine


def ids(engine, rule, as_of=AS_OF, library=None) -> set[str]:
    """External ids of the customers a rule (dict or Rule) selects."""
    library = library if library is not None else load_library()
    rule = resolve(rule, library)
    selected = [cid for page in customer_ids(engine, rule, as_of=as_of, library=library) for cid in page]
    with engine.connect() as conn:
        return set(conn.execute(select(Customer.__table__.c.external_id)
                                .where(Customer.__table__.c.id.in_(selected))).scalars())


def test_business_card_arithmetic_worked_example():
    row = replenishment(1, "category:business_cards",
                        [(date(2026, 1, 1), 1000.0), (date(2026, 2, 10), 500.0), (date(2026, 3, 2), 1000.0)])
    # 1000 cards lasted 40 days (25/day), 500 cards lasted 20 days (25/day): average 25 a day;
    # the last 1000 cards last 40 days from 2 March: run-out on 11 April.
    assert row["avg_daily_use"] == 25.0
    assert row["due_on"] == date(2026, 4, 11)
    single = replenishment(1, "category:x", [(date(2026, 1, 1), 10.0)])
    assert single["due_on"] is None and "at least two purchases" in single["note"]


def test_replenishment_due_within_the_lead_time_and_kept_on_the_customer(base):
    rule = {"due": {"need": "replenishment", "category": "business_cards", "lead_days": 7}}
    assert ids(base, rule, as_of=date(2026, 4, 4)) == {"CARD"}
    assert ids(base, rule, as_of=date(2026, 4, 3)) == set()
    with base.connect() as conn:
        stored = conn.execute(select(Prediction.__table__).where(Prediction.__table__.c.key ==
                                                                 "category:business_cards")).one()
    assert stored.avg_daily_use == 25.0 and stored.due_on == date(2026, 4, 11)


def test_service_interval_from_attribute_median_or_rule(base):
    attr = service_interval(1, "haircut", [date(2026, 3, 5)], {"haircut_interval_days": 30})
    assert attr["interval_source"] == "attribute" and attr["due_on"] == date(2026, 4, 4)
    median = service_interval(1, "grooming", [date(2026, 1, 10), date(2026, 2, 10), date(2026, 3, 20)], {})
    assert median["interval_days"] == 34.5 and median["interval_source"] == "median"
    assert ids(base, {"due": {"need": "service", "kind": "haircut", "interval": "customer"}}) == {"HAIR"}
    assert ids(base, {"due": {"need": "service", "kind": "grooming", "interval": "customer"}}) == set()
    assert ids(base, {"due": {"need": "service", "kind": "grooming", "interval": "customer", "lead_days": 20}}) \
        == {"CAT"}
    car = {"due": {"need": "service", "kind": "car_service", "interval_days": 180, "lead_days": 14}}
    assert ids(base, car, as_of=date(2026, 2, 14)) == {"OLD"}
    assert ids(base, car, as_of=date(2026, 2, 13)) == set()


def test_attribute_field_and_logic_rules(base):
    assert ids(base, "isp_internet_no_tv") == {"ISP1"}
    assert ids(base, {"attribute": "years_customer", "gte": 3}) == {"ISP1"}
    assert ids(base, {"attribute": "years_customer", "range": [1, 2]}) == {"ISP2"}
    assert ids(base, {"attribute": "tv", "in": ["yes", "no"]}) == {"ISP1", "ISP2"}
    assert ids(base, {"attribute": "tv", "exists": False}) == {"CARD", "HAIR", "CAT", "OLD", "INJ"}
    assert ids(base, {"not": {"attribute": "tv", "equals": "no"}}) == {"CARD", "ISP2", "HAIR", "CAT", "OLD", "INJ"}
    assert ids(base, {"region": ["Татарстан", "Санкт-Петербург"]}) == {"ISP2", "OLD"}
    assert ids(base, {"manager": "petrov"}) == {"ISP1", "ISP2"}
    assert ids(base, {"field": "name", "contains": "Абонент"}) == {"ISP1", "ISP2"}
    assert ids(base, {"field": "birthday", "lt": "1986-01-01"}) == {"CARD", "ISP1"}
    assert ids(base, {"any": [{"manager": "sidorov"}, {"attribute": "tv", "equals": "yes"}]}) == {"HAIR", "OLD", "ISP2"}


def test_purchase_event_and_statistics_rules(base):
    assert ids(base, {"purchased": {"category": "football_stream", "within_days": 30}}) == {"ISP1", "ISP2"}
    assert ids(base, "isp_football_fans", as_of=date(2026, 4, 4)) == {"ISP1"}
    assert ids(base, {"purchases": {"metric": "sum", "category": "travel"}, "gte": 200000}) == {"OLD"}
    assert ids(base, {"purchases": {"metric": "count"}, "equals": 0}) == {"HAIR", "INJ"}
    assert ids(base, {"stat": "purchase_count", "gte": 3}) == {"CARD", "ISP1", "OLD"}
    assert ids(base, {"stat": "last_purchase_on", "lt": "2026-01-01"}) == {"OLD"}
    assert ids(base, {"event": {"kind": "grooming", "within_days": 30}}) == {"CAT"}
    assert ids(base, {"event": {"kind": "grooming"}, "gte": 3}) == {"CAT"}
    assert ids(base, {"cross_sell": {"bought": "cat_goods", "not_bought": "cat_food", "within_days": 30}}) == {"CAT"}
    assert ids(base, {"since_last": {"category": "travel", "months": 4, "window_days": 7}}) == {"OLD"}
    lapsed = {"lapsed": {"k": 2, "min_days": 90}}
    assert ids(base, lapsed) == set()
    # CARD: 105 days > max(2 × 30, 90); ISP2: one purchase 92 days ago; ISP1 and CAT bought within 90 days
    assert ids(base, lapsed, as_of=date(2026, 6, 15)) == {"CARD", "ISP2"}
    # OLD buys every 164 days: lapsed only after 2 × 164 = 328 days (2026-10-29)
    assert "OLD" not in ids(base, lapsed, as_of=date(2026, 10, 28))
    assert "OLD" in ids(base, lapsed, as_of=date(2026, 10, 30))


def test_rfm_quintiles_and_groups(base):
    assert rfm_group(5, 5) == "champions" and rfm_group(1, 1) == "lost" and rfm_group(1, 5) == "cannot_lose"
    assert ids(base, {"rfm": {"r": [5]}}) == {"ISP1"}
    groups = preview(base, parse_rule({"rfm": {"r": [1, 2, 3, 4, 5]}}, "t"), as_of=AS_OF, limit=10)
    assert groups["count"] == 5
    assert all(item["rfm"]["group"] is not None for item in groups["sample"])


def test_birthday_window_crosses_the_year_and_keeps_29_february(base):
    assert ids(base, {"birthday_within": 7}, as_of=date(2026, 4, 4)) == {"CARD", "HAIR"}
    assert ids(base, {"birthday_within": 3}, as_of=date(2026, 12, 29)) == {"ISP1"}
    assert "02-29" in birthday_days(date(2027, 2, 27), 2)
    assert ids(base, {"birthday_within": 0}, as_of=date(2027, 2, 28)) == {"ISP2"}


def test_contact_and_consent_rules_follow_the_latest_ledger_entry(base):
    assert ids(base, {"has_contact": "sms"}) == {"CARD", "ISP1", "ISP2", "CAT", "OLD"}
    email = {"consent": {"purpose": "marketing", "channel": "email"}}
    assert ids(base, email) == {"CARD", "ISP1", "HAIR", "CAT"}          # OLD revoked, CAT granted again
    assert ids(base, {"consent": {"purpose": "marketing", "channel": "sms"}}) == {"ISP1"}  # ISP2 revoked "all"
    assert ids(base, "email_marketing_ok") == {"CARD", "ISP1", "HAIR", "CAT"}


def test_values_that_look_like_sql_are_just_values(base):
    assert ids(base, {"attribute": "tv", "equals": "no' OR '1'='1"}) == set()
    assert ids(base, {"field": "name", "equals": "x' OR 1=1 --"}) == {"INJ"}
    assert ids(base, {"region": "'; DROP TABLE customers; --"}) == {"INJ"}
    assert ids(base, {"attribute": "tv\"') OR 1=1; DROP TABLE customers; --", "exists": True}) == set()
    assert ids(base, {"field": "name", "contains": "%"}) == set()
    with base.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Customer.__table__)).scalar_one() == 7


def test_segments_use_other_segments_and_loops_are_refused(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("segments:\n  a:\n    rule: {segment: b}\n  b:\n    rule: {segment: a}\n", encoding="utf-8")
    with pytest.raises(SegmentError, match="loop"):
        load_library([path])
    path.write_text("segments:\n  a:\n    rule: {segment: nope}\n", encoding="utf-8")
    with pytest.raises(SegmentError, match="unknown segment 'nope'"):
        load_library([path])


@pytest.mark.parametrize("rule, message", [
    ("{field: colour, equals: red}", "unknown field 'colour'; choose one of: external_id"),
    ("{attribute: tv, like: red}", "unknown operator(s) 'like'; choose one of: equals"),
    ("{purchased: {category: x, within_days: soon}}", "within_days must be a positive whole number"),
    ("{rfm: {group: heroes}}", "unknown rfm group 'heroes'; choose one of: champions"),
    ("{consent: {purpose: spam, channel: email}}", "unknown purpose 'spam'"),
    ("{shout: loud}", "a rule needs exactly one of: all, any"),
    ("{all: []}", "all takes a non-empty list"),
    ("{attribute: tv, equals: no, in: [a]}", "exactly one operator"),
    ("{stat: recency_days, contains: x}", "operator 'contains' does not apply here"),
    ("{field: birthday, gt: yesterday}", "'yesterday' is not a date"),
])
def test_bad_rules_name_the_file_the_rule_and_the_choices(tmp_path, rule, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"segments:\n  broken:\n    rule:\n      all:\n        - {{region: Москва}}\n        - {rule}\n",
                    encoding="utf-8")
    with pytest.raises(SegmentError) as err:
        load_file(path)
    text = str(err.value)
    assert str(path) in text and "'broken'" in text and message in text
    if rule != "{all: []}":
        assert "all[1]" in text


def test_shipped_library_loads_and_every_segment_runs(base):
    library = load_library()
    assert {"business_cards_running_out", "haircut_due", "isp_internet_no_tv", "champions"} <= set(library)
    for name in library:
        count(base, resolve(name, library), as_of=AS_OF, library=library)


def test_preview_lists_why_customers_are_due(base):
    result = preview(base, resolve("business_cards_running_out", load_library()), as_of=AS_OF,
                     library=load_library())
    assert result["count"] == 1
    (item,) = result["sample"]
    assert item["external_id"] == "CARD"
    assert item["due"][0]["due_on"] == date(2026, 4, 11) and item["due"][0]["avg_daily_use"] == 25.0


def test_replenishment_per_product_when_configured(base):
    from segments.stats import refresh

    rule = {"due": {"need": "replenishment", "product": "Визитки 1000 шт", "lead_days": 7}}
    assert ids(base, rule) == set()            # default scope: category only
    refresh(base, scopes=("category", "product"))
    # per product only the two 1000-card purchases count: 1000 cards lasted 60 days; due 1 May
    assert ids(base, rule, as_of=date(2026, 4, 24)) == {"CARD"}
    assert ids(base, rule, as_of=date(2026, 4, 23)) == set()


@pytest.mark.parametrize("page_size", [1, 3, 7, 40, 1000])
def test_pages_cover_the_segment_in_order_across_gaps_in_ids(engine, page_size):
    """Windowed keyset paging: every match once, in order, full pages but the last, whatever the id gaps."""
    from datetime import datetime, timezone

    from sqlalchemy import insert

    now = datetime(2026, 11, 23, tzinfo=timezone.utc)
    wanted_ids = list(range(1, 26)) + list(range(900, 912)) + [5000, 5001, 250000]
    rows = [{"id": i, "external_id": f"P{i}", "name": "x", "attributes": {"pick": "yes" if i % 3 else "no"},
             "created_at": now, "updated_at": now} for i in wanted_ids]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), rows)
    rule = parse_rule({"attribute": "pick", "equals": "yes"}, "test")
    expected = [i for i in wanted_ids if i % 3]
    pages = list(customer_ids(engine, rule, library={}, page_size=page_size))
    assert [i for page in pages for i in page] == expected
    assert all(len(page) == page_size for page in pages[:-1]) and 0 < len(pages[-1]) <= page_size
    assert list(customer_ids(engine, parse_rule({"attribute": "pick", "equals": "never"}, "test"), library={},
                             page_size=page_size)) == []

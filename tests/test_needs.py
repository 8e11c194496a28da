"""Time-aware needs: a predicted need stops being `due` its grace days after it passed."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from crm.models import Customer
from segments import SegmentError, customer_ids, load_library, resolve
from segments.rules import DEFAULT_GRACE_DAYS
from tests import segbase

CARDS = {"need": "replenishment", "category": "business_cards", "lead_days": 7}
RUN_OUT = date(2026, 4, 11)           # CARD's predicted run-out (the worked example of article 000)


@pytest.fixture
def base(engine, tmp_path):
    segbase.build(engine, tmp_path)
    return engine


def ids(engine, rule, as_of) -> set[str]:
    library = load_library()
    selected = [cid for page in customer_ids(engine, resolve(rule, library), as_of=as_of, library=library)
                for cid in page]
    with engine.connect() as conn:
        return set(conn.execute(select(Customer.__table__.c.external_id)
                                .where(Customer.__table__.c.id.in_(selected))).scalars())


def test_a_passed_run_out_is_dropped_after_its_grace_days(base):
    rule = {"due": {**CARDS, "grace_days": 14}}
    assert ids(base, rule, date(2026, 4, 4)) == {"CARD"}              # a week before: due
    assert ids(base, rule, date(2026, 4, 25)) == {"CARD"}             # 14 days after: still
    assert ids(base, rule, date(2026, 4, 26)) == set()                # 15 days after: dropped
    assert ids(base, {"due": {**CARDS, "grace_days": None}}, date(2026, 5, 11)) == {"CARD"}   # null: kept for good


def test_the_shipped_business_cards_reminder_does_not_select_a_run_out_from_a_month_ago(base):
    assert DEFAULT_GRACE_DAYS == 3
    last_day = date.fromordinal(RUN_OUT.toordinal() + DEFAULT_GRACE_DAYS)
    assert ids(base, "business_cards_running_out", last_day) == {"CARD"}
    assert ids(base, "business_cards_running_out", date.fromordinal(last_day.toordinal() + 1)) == set()
    assert ids(base, "business_cards_running_out", date(2026, 5, 11)) == set()


def test_service_intervals_have_a_grace_too(base):
    car = {"need": "service", "kind": "car_service", "interval_days": 180, "lead_days": 14}
    assert ids(base, {"due": car}, date(2026, 3, 3)) == {"OLD"}
    assert ids(base, {"due": car}, date(2026, 3, 4)) == set()
    assert ids(base, {"due": {**car, "grace_days": 30}}, date(2026, 3, 30)) == {"OLD"}
    assert ids(base, {"due": {**car, "grace_days": 30}}, date(2026, 3, 31)) == set()
    haircut = {"need": "service", "kind": "haircut", "interval": "customer", "grace_days": 0}
    assert ids(base, {"due": haircut}, date(2026, 4, 4)) == {"HAIR"}   # due that very day
    assert ids(base, {"due": haircut}, date(2026, 4, 5)) == set()


def test_a_wrong_grace_is_refused_naming_it():
    library = load_library()
    with pytest.raises(SegmentError, match="grace_days must be a non-negative whole number"):
        resolve({"due": {**CARDS, "grace_days": -1}}, library)
    with pytest.raises(SegmentError, match="grace_days"):
        resolve({"due": {**CARDS, "grace": 5}}, library)

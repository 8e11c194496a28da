"""The console's reads: a person's timeline across their records, keyset paging, history search, customer lookup."""

from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert

from crm.models import (
    CallTask,
    Consent,
    ContactPoint,
    Customer,
    Manager,
    Purchase,
    ServiceEvent,
    Touch,
    TouchEvent,
)
from crm.privacy import erase
from crm.timeline import CursorError, find_customers, person_of, search, timeline

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)  # a midnight: purchases of that day tie with it
KINDS = {"touch", "decision", "event", "consent", "purchase", "service", "call_task", "call_outcome"}


def _touch(tid, cid, at, status, *, channel="sms", campaign="spring", reason=None, address="+79161234567",
           detail=None):
    return {"id": tid, "person_key": "1", "customer_id": cid, "campaign": campaign, "purpose": "marketing",
            "channel": channel, "address": address, "status": status, "reason": reason, "detail": detail,
            "created_at": at, "updated_at": at, "manager_id": 1}


@pytest.fixture
def base(engine):
    """Person 1 = records 1 and 2 (rep 1); person 3 = record 3 (rep 2); many items at the same instant T0."""
    with engine.begin() as conn:
        conn.execute(insert(Manager.__table__), [{"id": 1, "code": "m1", "name": "Rep 1"},
                                                 {"id": 2, "code": "m2", "name": "Rep 2"}])
        conn.execute(insert(Customer.__table__), [
            {"id": 1, "external_id": "C1", "name": "Иванова Мария", "person_id": 1, "manager_id": 1,
             "attributes": {}},
            {"id": 2, "external_id": "C2", "name": "Иванова М.", "person_id": 1, "manager_id": 1, "attributes": {}},
            {"id": 3, "external_id": "C3", "name": "Петров Пётр", "person_id": 3, "manager_id": 2,
             "attributes": {}}])
        conn.execute(insert(ContactPoint.__table__), [
            {"customer_id": 1, "kind": "phone", "raw": "8 916 123-45-67", "value": "+79161234567"},
            {"customer_id": 2, "kind": "email", "raw": "Maria@Example.com", "value": "maria@example.com"},
            {"customer_id": 3, "kind": "phone", "raw": "+7 916 000 00 00", "value": "+79160000000"}])
        rows = [_touch(1, 1, T0, "sent"), _touch(2, 2, T0, "sent", channel="email", address="maria@example.com"),
                _touch(3, 1, T0, "skipped", reason="frequency_cap"), _touch(4, 2, T0, "skipped", reason="no_consent"),
                _touch(5, 1, T0 - timedelta(days=1), "delivered", campaign="autumn", detail="Мария просила вечером"),
                _touch(6, 1, T0 + timedelta(hours=1), "deferred", reason="quiet_hours"),
                _touch(7, 3, T0, "failed", campaign="spring", address="+79160000000"),
                _touch(8, 1, T0 - timedelta(days=2), "failed", campaign="spring")]
        conn.execute(insert(Touch.__table__), rows)
        conn.execute(insert(TouchEvent.__table__), [
            {"touch_id": r["id"], "status": r["status"], "at": r["created_at"], "reason": r["reason"]} for r in rows]
            + [{"touch_id": 1, "status": "delivered", "at": T0 + timedelta(minutes=5), "reason": None}])
        conn.execute(insert(Consent.__table__), [
            {"customer_id": 1, "channel": "sms", "purpose": "marketing", "granted": True, "at": T0, "source": "form"},
            {"customer_id": 2, "channel": "email", "purpose": "marketing", "granted": False,
             "at": T0 - timedelta(days=3), "source": "unsubscribe", "wording": "Мария: не пишите мне"}])
        conn.execute(insert(Purchase.__table__), [
            {"source_key": key, "customer_id": cid, "purchased_on": T0.date(), "product": product, "amount": amount,
             "quantity": 1}
            for key, cid, product, amount in (("O1", 2, "Корм", 500), ("O2", 1, "Лоток", 300), ("O3", 3, "Другое", 1))])
        conn.execute(insert(ServiceEvent.__table__), [
            {"source_key": "S1", "customer_id": 1, "kind": "haircut", "occurred_on": date(2026, 11, 1),
             "note": "Мария любит короткие", "attributes": {}}])
        conn.execute(insert(CallTask.__table__), [
            {"touch_id": 1, "customer_id": 1, "person_id": 1, "manager_id": 1, "campaign": "spring",
             "phone": "+79161234567", "script": "Здравствуйте, Мария", "due_on": T0.date(), "status": "done",
             "outcome": "callback", "note": "перезвонить", "created_at": T0, "closed_at": T0 + timedelta(hours=2)}])
    return engine


def _all(engine, person, limit):
    items, cursor, pages = [], None, 0
    while True:
        page = timeline(engine, person, before=cursor, limit=limit)
        items += page.items
        pages += 1
        assert len(page.items) <= limit
        if page.next is None:
            return items, pages
        cursor = page.next


def _key(item):
    return item["at"], item["kind"], item["id"]


def test_person_of_follows_person_id_and_unknown_raises(base):
    assert person_of(base, 2) == 1
    assert person_of(base, 3) == 3
    with pytest.raises(KeyError):
        person_of(base, 99)


def test_timeline_merges_every_record_and_kind_newest_first(base):
    page = timeline(base, 1, limit=500)
    assert page.next is None
    assert {i["customer_id"] for i in page.items} == {1, 2}          # both records, not person 3's
    assert {i["kind"] for i in page.items} == KINDS
    # 7 touches/decisions + 8 events + 2 consents + 2 purchases + 1 service + task + outcome
    assert len(page.items) == 7 + 8 + 2 + 2 + 1 + 2
    keys = [_key(i) for i in page.items]
    assert keys == sorted(keys, reverse=True)
    assert all(i["at"].tzinfo is not None for i in page.items)
    first = page.items[0]
    assert (first["kind"], first["title"]) == ("call_outcome", "call.callback")
    by_title = {i["title"]: i for i in page.items}
    assert by_title["decision.not_contacted"]["detail"]["reason"] in ("frequency_cap", "no_consent")
    assert by_title["decision.deferred"]["detail"]["reason"] == "quiet_hours"
    assert by_title["consent.revoked"]["detail"]["source"] == "unsubscribe"
    assert by_title["event.delivered"]["detail"]["touch_id"] in (1, 5)
    sent = next(i for i in page.items if i["kind"] == "touch" and i["id"] == 2)
    assert sent["detail"]["address"] == "m***@example.com"
    assert sent["detail"]["channel"] == "email" and sent["detail"]["campaign"] == "spring"
    assert "+79161234567" not in repr(page.items)


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_paging_across_equal_timestamps_loses_and_repeats_nothing(base, limit):
    full = timeline(base, 1, limit=500).items
    walked, pages = _all(base, 1, limit)
    assert [_key(i) for i in walked] == [_key(i) for i in full]
    assert len({_key(i) for i in walked}) == len(full)
    assert pages == -(-len(full) // limit)
    at_t0 = [i for i in full if i["at"] == T0]
    assert len({i["kind"] for i in at_t0}) >= 5                     # the ties really span kinds


def test_a_cursor_that_is_not_ours_is_refused(base):
    with pytest.raises(CursorError):
        timeline(base, 1, before="not-a-cursor")
    assert timeline(base, 999).items == []


def test_search_filters_and_pages(base):
    every = search(base, limit=500).items
    assert [i["id"] for i in every] == [6, 7, 4, 3, 2, 1, 5, 8]     # newest first, ties by id descending
    assert {i["kind"] for i in every} == {"touch", "decision"}
    assert [i["id"] for i in search(base, channel="email").items] == [2]
    assert [i["id"] for i in search(base, campaign="spring", status="failed").items] == [7, 8]
    assert [i["id"] for i in search(base, status="skipped").items] == [4, 3]
    assert [i["id"] for i in search(base, since=T0, until=T0).items] == [7, 4, 3, 2, 1]
    walked, cursor = [], None
    while True:
        page = search(base, after=cursor, limit=3)
        walked += [i["id"] for i in page.items]
        if not page.next:
            break
        cursor = page.next
    assert walked == [i["id"] for i in every]


def test_search_by_text_finds_the_whole_person(base):
    by_phone = search(base, text="8 (916) 123-45-67").items
    assert {i["customer_id"] for i in by_phone} == {1, 2}
    assert {i["id"] for i in search(base, text="MARIA@example.com").items} == {1, 2, 3, 4, 5, 6, 8}
    assert {i["id"] for i in search(base, text="C3").items} == {7}
    assert {i["id"] for i in search(base, text="петров").items} == {7}
    assert search(base, text="nobody at all").items == []
    assert by_phone[0]["detail"]["external_id"] in ("C1", "C2")


def test_sales_scoping_hides_other_reps_customers(base):
    assert {i["customer_id"] for i in search(base, manager_id=2).items} == {3}
    assert search(base, text="C1", manager_id=2).items == []
    assert {i["customer_id"] for i in search(base, manager_id=1).items} == {1, 2}
    assert find_customers(base, "C3", manager_id=1) == []
    assert [c["id"] for c in find_customers(base, "C3", manager_id=2)] == [3]


def test_find_customers_by_external_id_phone_email_and_name_prefix(base):
    assert [(c["id"], c["matched"]) for c in find_customers(base, "C2")] == [(2, "external_id")]
    assert [(c["id"], c["matched"]) for c in find_customers(base, "+7 916 000-00-00")] == [(3, "phone")]
    assert [(c["id"], c["matched"]) for c in find_customers(base, " maria@EXAMPLE.com ")] == [(2, "email")]
    named = find_customers(base, "иванова")
    assert [c["id"] for c in named] == [2, 1] and {c["person_id"] for c in named} == {1}
    assert find_customers(base, "Иванова", limit=1)[0]["id"] == 2
    assert find_customers(base, "100%") == [] and find_customers(base, "   ") == []


def test_an_erased_record_shows_no_personal_data(base):
    erase(base, "C1")
    items = timeline(base, 1, limit=500).items
    assert {i["customer_id"] for i in items} == {1, 2}
    text = repr([i for i in items if i["customer_id"] == 1])
    for personal in ("+7916", "Мария", "перезвонить", "Здравствуйте", "C1"):
        assert personal not in text
    found = search(base, campaign="autumn").items
    assert found and found[0]["detail"]["name"] == "[erased]" and found[0]["detail"]["note"] is None
    assert "Мария" not in repr(found)


def test_sales_scoping_is_the_same_whichever_way_a_rep_is_read(base, monkeypatch):
    """A rep with few customers is read record by record, one with many touch by touch: same answer."""
    import crm.timeline

    few = [(i["id"], i["customer_id"]) for i in search(base, manager_id=1, limit=500).items]
    monkeypatch.setattr(crm.timeline, "FEW_CUSTOMERS", 1)
    assert [(i["id"], i["customer_id"]) for i in search(base, manager_id=1, limit=500).items] == few
    assert [i["id"] for i in search(base, manager_id=1, status="skipped").items] == [4, 3]
    assert [i["id"] for i in search(base, manager_id=2).items] == [7]


def test_a_common_name_is_searched_touch_by_touch_with_the_same_answer(base, monkeypatch):
    import crm.timeline

    listed = [i["id"] for i in search(base, text="Иванова", limit=500).items]
    monkeypatch.setattr(crm.timeline, "NAME_MATCHES", 1)
    walked, cursor = [], None
    while True:
        page = search(base, text="иванова", after=cursor, limit=2)
        walked += [i["id"] for i in page.items]
        if not page.next:
            break
        cursor = page.next
    assert walked == listed == [6, 4, 3, 2, 1, 5, 8]
    assert [i["id"] for i in search(base, text="Иванова", manager_id=1, status="skipped").items] == [4, 3]
    assert search(base, text="Иванова", manager_id=2).items == []


def test_a_reps_timeline_holds_only_their_records_of_the_person(base):
    with base.begin() as conn:
        conn.execute(Customer.__table__.update().where(Customer.__table__.c.id == 2).values(manager_id=2))
    own = timeline(base, 1, manager_id=1, limit=500).items
    assert own and {i["customer_id"] for i in own} == {1}
    assert {i["customer_id"] for i in timeline(base, 1, manager_id=2, limit=500).items} == {2}
    assert timeline(base, 3, manager_id=1).items == []
    assert {i["customer_id"] for i in timeline(base, 1, limit=500).items} == {1, 2}


def test_a_record_that_joined_another_person_leaves_its_old_timeline(base):
    with base.begin() as conn:
        conn.execute(Customer.__table__.update().where(Customer.__table__.c.id == 3).values(person_id=1))
    assert timeline(base, 3).items == []
    assert {i["customer_id"] for i in timeline(base, 1, limit=500).items} == {1, 2, 3}
    assert person_of(base, 3) == 1

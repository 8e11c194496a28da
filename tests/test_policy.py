"""The contact policy as pure functions: quiet hours, consent, channel plan, holdout, reasons."""

from __future__ import annotations

from datetime import datetime, time, timezone

from crm.ledger.policy import (
    Candidate,
    ConsentState,
    ContactOption,
    Policy,
    QuietHours,
    channel_plan,
    decide,
    in_holdout,
)

NOON_MOSCOW = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)       # 12:00 in Moscow
LATE_MOSCOW = datetime(2026, 11, 23, 20, 30, tzinfo=timezone.utc)     # 23:30 in Moscow
AT = datetime(2025, 1, 1, tzinfo=timezone.utc)


def candidate(**kwargs) -> Candidate:
    values = dict(customer_id=1, person_id=1, timezone="Europe/Moscow", preferred_channel=None,
                  contacts=[ContactOption(10, "email", "a@mail.ru", "active"),
                            ContactOption(11, "phone", "+79161234567", "active")],
                  consents={("email", "marketing"): ConsentState(True, 100, AT),
                            ("sms", "marketing"): ConsentState(True, 101, AT)})
    values.update(kwargs)
    return Candidate(**values)


def go(c: Candidate, channels=("email", "sms"), purpose="marketing", now=NOON_MOSCOW, **kwargs):
    return decide(c, campaign="c", channels=list(channels), purpose=purpose, now=now, policy=Policy(), **kwargs)


def test_quiet_hours_defer_to_the_next_allowed_local_time():
    quiet = QuietHours(time(21), time(9))
    assert quiet.contains(time(23, 30)) and quiet.contains(time(8, 59)) and not quiet.contains(time(9))
    assert quiet.next_allowed(LATE_MOSCOW, "Europe/Moscow") == datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)
    early = datetime(2026, 11, 23, 1, 0, tzinfo=timezone.utc)  # 04:00 Moscow, 11:00 Vladivostok
    assert quiet.next_allowed(early, "Europe/Moscow") == datetime(2026, 11, 23, 6, 0, tzinfo=timezone.utc)
    assert quiet.next_allowed(early, "Asia/Vladivostok") == early
    decision = go(candidate(), now=LATE_MOSCOW)
    assert decision.action == "defer" and decision.reason == "quiet_hours" and decision.due_at.hour == 6
    assert go(candidate(), channels=("call",), now=LATE_MOSCOW).action == "skip"  # no consent for calls here


def test_marketing_needs_a_current_grant_and_revocations_win_by_time():
    assert go(candidate()).channel == "email"
    revoked = candidate(consents={("email", "marketing"): ConsentState(True, 100, AT),
                                  ("all", "marketing"): ConsentState(False, 99, datetime(2026, 1, 1, tzinfo=timezone.utc)),
                                  ("sms", "marketing"): ConsentState(True, 101, AT)})
    decision = go(revoked)
    assert decision.action == "skip" and decision.reason == "opted_out"
    none = candidate(consents={})
    assert go(none).reason == "no_consent"
    assert go(candidate(contacts=[])).reason == "unreachable"
    bounced = candidate(contacts=[ContactOption(10, "email", "a@mail.ru", "bounced")])
    assert go(bounced, channels=("email",)).reason == "unreachable"


def test_service_messages_need_no_grant_but_respect_opt_outs():
    assert go(candidate(consents={}), purpose="service").action == "touch"
    stopped = candidate(consents={("all", "service"): ConsentState(False, 5, AT)})
    assert go(stopped, purpose="service").reason == "opted_out"


def test_preferred_channel_first_and_fallbacks_in_plan_order():
    assert channel_plan(["email", "sms", "telegram"], "telegram") == ["telegram", "email", "sms"]
    assert channel_plan(["email", "sms"], "voice") == ["email", "sms"]
    decision = go(candidate(preferred_channel="sms"))
    assert decision.channel == "sms" and [f[0] for f in decision.fallbacks] == ["email"]
    assert go(candidate(preferred_channel="sms"), use_preferred=False).channel == "email"


def test_holdout_is_deterministic_per_person():
    chosen = [p for p in range(2000) if in_holdout("winback", p, 10)]
    assert 150 < len(chosen) < 250
    assert chosen == [p for p in range(2000) if in_holdout("winback", p, 10)]
    assert not in_holdout("winback", 5, 0) and in_holdout("winback", 5, 100)
    assert go(candidate(), holdout_percent=100).reason == "holdout"

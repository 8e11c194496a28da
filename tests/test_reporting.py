"""What a run shows: a Failed end when its sends mostly failed, its summary as Markdown, progress as it goes."""

from __future__ import annotations

from flows.reporting import markdown, outcome


def summary(**channels):
    return {"campaign": "promo", "run_id": "r1", "offer": "o", "purpose": "marketing", "selected": 12,
            "channels": channels, "not_contacted": {"no_consent": 2}, "other": {"fallback:email->sms": 1}}


def test_a_run_whose_sends_mostly_failed_is_failed_and_says_why():
    assert outcome(summary(email={"sent": 9, "failed": 1})) is None
    assert outcome(summary()) is None                                    # nobody to contact is not a failure
    why = outcome(summary(email={"sent": 2, "failed": 5}, sms={"unknown": 1}))
    assert why.startswith("6 of 8 touches failed") and "5 failed, 1 unknown" in why


def test_the_summary_artifact_is_a_readable_table():
    text = markdown(summary(email={"sent": 9, "failed": 1}, sms={"sent": 1}))
    assert "| channel | failed | sent |" in text and "| email | 1 | 9 |" in text and "| sms | 0 | 1 |" in text
    assert "| no_consent | 2 |" in text and "**12 selected**" in text

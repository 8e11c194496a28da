"""A run's history sealed while the run sends: by its preparer, or by the process handing out a pool's pages.

The run's closing seal then covers only its last seconds. Seals made during the run are numbered
on into the closing one, the run's summary names the newest, and the history verifies with
nothing left unsealed. Against a real aiosmtpd that takes its time over each message, on SQLite
and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import select

from crm.ledger.audit import verify
from crm.models import ChainSeal
from tests.test_pipeline import run_against_slow_smtp


def _touch_event_seals(engine) -> list:
    """(seq, rows) of every seal of the touch_events chain, in order."""
    seals = ChainSeal.__table__.c
    with engine.connect() as conn:
        return conn.execute(select(seals.seq, seals.rows).where(seals.table_name == "touch_events")
                            .order_by(seals.seq)).all()


def test_the_preparer_seals_the_history_while_the_run_sends(engine, db_url, tmp_path, monkeypatch):
    """Seals made by the preparer during the run, numbered on into the run's closing seal, and a history that verifies:
    the run's own end seals only its last rows."""
    from flows import preparer

    monkeypatch.setattr(preparer, "SEAL_EVERY", 0.2)
    summary, per_recipient = run_against_slow_smtp(engine, db_url, tmp_path, name="sealed", stall_seconds=0.1,
                                                   prepare_apart_from=0)
    assert len(per_recipient) == 80 and set(per_recipient.values()) == {1}
    made = _touch_event_seals(engine)
    assert len(made) >= 3  # while the run sent (at least twice in its 2 s), then at its end
    closing = summary["sealed"]["touch_events"]  # what the run's summary names: the newest seal
    assert (closing["seq"], closing["rows"]) == (made[-1].seq, made[-1].rows)
    report = verify(engine)
    assert report.intact, report.problems
    assert not any(report.unsealed.values())


def test_a_pool_s_parent_seals_the_history_while_its_workers_send(engine, db_url, tmp_path, monkeypatch):
    """``workers`` > 1: the process handing out the pages seals behind the workers, numbered on into the closing seal."""
    from flows import workers

    monkeypatch.setattr(workers, "SEAL_EVERY", 0.2)
    summary, per_recipient = run_against_slow_smtp(engine, db_url, tmp_path, name="pooled", stall_seconds=0.1,
                                                   workers=2)
    assert len(per_recipient) == 80 and set(per_recipient.values()) == {1}
    made = _touch_event_seals(engine)
    assert len(made) >= 3  # while the workers sent, then at the run's end
    assert summary["sealed"]["touch_events"]["seq"] == made[-1].seq
    report = verify(engine)
    assert report.intact and not any(report.unsealed.values()), report.problems

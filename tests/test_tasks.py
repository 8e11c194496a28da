"""Call tasks: fair assignment, one open task per person, outcomes, callbacks, the call schedule export."""

from __future__ import annotations

import csv
from datetime import date, timedelta

from sqlalchemy import insert, select, update

from crm.importing import import_file
from crm.models import CallTask, Consent, ContactPoint, Manager, Touch, utcnow
from crm.persons import refresh_persons
from flows import engine as campaign_engine
from flows.spec import CampaignSpec
from tests.helpers import run_cli, run_json, write_csv
from tests.test_campaigns import NOON, settings

TODAY = NOON.date()


def base(engine, tmp_path):
    with engine.begin() as conn:
        conn.execute(insert(Manager.__table__), [
            {"code": code, "name": name, "active": active, "created_at": utcnow()}
            for code, name, active in (("anna", "Анна", True), ("boris", "Борис", True), ("gone", "Уволен", False))])
    rows = [["G1", "Григорьев", "anna", "8 (916) 555-12-34"], ["G2", "Григорьев Г.", "boris", "+7 916 555 12 34"],
            ["G3", "Григорьев Г. П.", "gone", "89165551234"], ["X1", "Иксов", "gone", "+79160000001"],
            ["X2", "Игреков", "gone", "+79160000002"], ["X3", "Зетов", "", "+79160000003"]]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "manager", "phone"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              [[r[0], "call", "marketing", "granted", "2025-01-01"] for r in rows]))
    refresh_persons(engine)


def call_campaign(name: str, offer: str, manager: str | None = None) -> CampaignSpec:
    rule = {"manager": manager} if manager else {"field": "name", "exists": True}
    return CampaignSpec(name=name, rule=rule, purpose="marketing", offer=offer, template="isp_tv_package",
                        channels=["call"])


def run(engine, tmp_path, spec):
    r = campaign_engine.start(engine, spec, now=NOON, settings=settings(tmp_path))
    for page in campaign_engine.segment_pages(r):
        campaign_engine.process_batch(r, page)
    return campaign_engine.finish(r)


def tasks(engine):
    with engine.connect() as conn:
        return conn.execute(select(CallTask.__table__).order_by(CallTask.__table__.c.id)).all()


def test_three_reps_three_campaigns_one_call_and_fair_assignment(engine, tmp_path):
    base(engine, tmp_path)
    for rep, offer in (("anna", "tv"), ("boris", "tv"), ("gone", "tv")):
        run(engine, tmp_path, call_campaign(f"tv-{rep}", offer, rep))
    open_tasks = tasks(engine)
    g = [t for t in open_tasks if t.person_id == open_tasks[0].person_id]
    assert len(g) == 1                                        # customer G: one call, not three
    managers = {t.customer_id: t.manager_id for t in open_tasks}
    with engine.connect() as conn:
        ids = dict(conn.execute(select(Manager.__table__.c.code, Manager.__table__.c.id)).all())
    # X1 and X2 belong to an inactive rep: they go to the least-loaded active reps, one each
    assert sorted(m for cid, m in managers.items() if cid in (4, 5)) == sorted([ids["anna"], ids["boris"]])
    assert ids["gone"] not in managers.values()
    another, = [run(engine, tmp_path, call_campaign("other-offer", "internet"))]
    assert another["not_contacted"].get("open_call_task", 0) >= 3    # one open call task per person


def test_outcomes_callback_wrong_number_and_opt_out(engine, cli_env, tmp_path):
    base(engine, tmp_path)
    run(engine, tmp_path, call_campaign("tv-anna", "tv", "anna"))
    run(engine, tmp_path, call_campaign("tv-gone", "tv", "gone"))
    by_phone = {t.phone: t.id for t in tasks(engine)}            # the calls of one run are made concurrently
    g_task, x1_task, x2_task = by_phone["+79165551234"], by_phone["+79160000001"], by_phone["+79160000002"]
    later = (date.today() + timedelta(days=61)).isoformat()
    done = run_json("tasks", "complete", str(g_task), "--outcome", "callback", "--callback-on", later,
                    "--note", "позвоните через два месяца")
    assert done["next_task"]
    nxt = [t for t in tasks(engine) if t.id == done["next_task"]][0]
    assert nxt.status == "open" and nxt.due_on.isoformat() == later
    assert run_cli("tasks", "complete", str(g_task), "--outcome", "reached").exit_code == 1   # already closed
    assert run_cli("tasks", "complete", str(x1_task), "--outcome", "callback").exit_code == 1  # no date
    run_json("tasks", "complete", str(x1_task), "--outcome", "wrong_number")
    run_json("tasks", "complete", str(x2_task), "--outcome", "declined", "--opt-out", "--note", "не звоните")
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(ContactPoint.__table__.c.value, ContactPoint.__table__.c.status)).all())
        revoked = conn.execute(select(Consent.__table__).where(Consent.__table__.c.granted.is_(False))).all()
        outcomes = conn.execute(select(Touch.__table__.c.reason).where(Touch.__table__.c.reason.like("call_%"))
                                ).scalars().all()
    assert statuses["+79160000001"] == "invalid"
    assert [(c.channel, c.purpose) for c in revoked] == [("all", "marketing")]
    assert sorted(outcomes) == ["call_callback", "call_declined", "call_wrong_number"]
    rows = run_json("tasks", "list", "--status", "all")["tasks"]
    assert {r["outcome"] for r in rows} == {"callback", "wrong_number", "declined", None}
    # X1's person is free again (wrong number closed the task); G keeps one open call (the callback)
    again = run(engine, tmp_path, call_campaign("tv-2", "internet"))
    assert again["not_contacted"].get("open_call_task") == 1


def test_schedule_export_and_list_filters(engine, cli_env, tmp_path):
    base(engine, tmp_path)
    run(engine, tmp_path, call_campaign("tv-anna", "tv", "anna"))
    out = tmp_path / "schedule.csv"
    assert run_json("tasks", "export", "--manager", "anna", "--out", out)["tasks"] == 1
    (header, row) = list(csv.reader(out.read_text(encoding="utf-8-sig").splitlines(), delimiter=";"))
    assert header[:4] == ["task", "due", "window", "customer"] and row[3] == "G1" and "Григорьев" in row[7]
    assert run_json("tasks", "list", "--manager", "boris")["count"] == 0
    assert run_json("tasks", "list", "--due", "today")["count"] == 1
    with engine.begin() as conn:
        conn.execute(update(CallTask.__table__).values(due_on=TODAY + timedelta(days=400)))
    assert run_json("tasks", "list", "--due", "today")["count"] == 0


def test_call_tasks_carry_the_generated_proposal(engine, tmp_path):
    base(engine, tmp_path)
    spec = call_campaign("tv-anna", "tv", "anna").model_copy(update={
        "document": "proposal", "offer_values": {"items": [{"product": "ТВ", "quantity": 1, "unit_price": 500}]}})
    run(engine, tmp_path, spec)
    (task,) = tasks(engine)
    assert task.document_path and task.document_path.endswith(".docx")
    from pathlib import Path

    assert Path(task.document_path).exists()

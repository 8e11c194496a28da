"""Sales reps: import, list with load against capacity, deactivation with fair and recorded reassignment,
and new call tasks assigned within each rep's daily capacity."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select

from crm.importing import import_file
from crm.ledger import calls
from crm.models import CallTask, Customer, Manager, Reassignment
from tests.helpers import read_rejects, run_cli, run_json, write_csv

DAY = date(2026, 11, 23)
NEXT = DAY + timedelta(days=1)
HEADER = ["Код", "ФИО", "Должность", "Телефон", "Почта", "Звонков в день", "Активен"]


def reps(engine, tmp_path, *rows, name="m.csv"):
    """Import reps: (code, name, capacity) rows."""
    return import_file(engine, "managers", write_csv(tmp_path / name, ["code", "name", "capacity"], list(rows)))


def owned(engine, tmp_path, rep, *externals, name="c.csv"):
    import_file(engine, "customers", write_csv(tmp_path / name, ["external_id", "name", "manager"],
                                               [[e, f"Клиент {e}", rep] for e in externals]))


def ids(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Customer.__table__.c.external_id, Customer.__table__.c.id)).all())


def codes(engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Manager.__table__.c.id, Manager.__table__.c.code)).all())


def task_for(engine, external, due=DAY) -> tuple[str | None, str | None]:
    """Create a call task for a customer; return (its rep's code, its note)."""
    cid = ids(engine)[external]
    task_id = calls.create_task(engine, touch_id=None, customer_id=cid, person_id=cid, phone="+79160000000",
                                script="", campaign="calls", offer="tv", due_on=due)
    with engine.connect() as conn:
        task = conn.execute(select(CallTask.__table__).where(CallTask.__table__.c.id == task_id)).one()
    return codes(engine).get(task.manager_id), task.note


def test_import_upserts_by_code_keeps_rejects_and_names_the_reps_customer_files_only_coded(cli_env, tmp_path):
    run_cli("db", "upgrade")
    assert run_cli("import", "customers", write_csv(tmp_path / "c.csv", ["external_id", "manager"],
                                                    [["C1", "petrov"]])).exit_code == 0
    (petrov,) = run_json("managers", "list")["managers"]
    assert petrov["name"] == "petrov" and petrov["needs_name"] is True and petrov["customers"] == 1
    rows = [["petrov", "Пётр Петров", "Менеджер по продажам", "8 (916) 111-22-33", "P.Petrov@Mail.RU", "30", "да"],
            ["anna", "Анна Иванова", "", "", "", "2", "yes"],
            ["boris", "", "", "", "", "10", "active"],
            ["bad1", "Плохой", "", "", "", "-5", "yes"],
            ["bad2", "Плохой", "", "12", "", "5", "yes"],
            ["bad3", "Плохой", "", "", "", "5", "maybe"]]
    summary = run_json("managers", "import", write_csv(tmp_path / "m.csv", HEADER, rows), expect=3)
    assert (summary["created"], summary["updated"], summary["rejected"]) == (2, 1, 3)
    reasons = {r["Код"]: r["_reason"] for r in read_rejects(tmp_path / "m.csv.rejects.csv")}
    assert reasons["bad1"].startswith("capacity '-5' is not a whole number")
    assert reasons["bad2"].startswith("phone '12'") and reasons["bad3"].startswith("active 'maybe' is neither")
    listed = run_json("managers", "list")
    by_code = {r["code"]: r for r in listed["managers"]}
    assert by_code["petrov"]["customers"] == 1 and by_code["petrov"]["needs_name"] is False
    assert (by_code["petrov"]["name"], by_code["petrov"]["position"], by_code["petrov"]["phone"],
            by_code["petrov"]["email"], by_code["petrov"]["capacity"]) == (
        "Пётр Петров", "Менеджер по продажам", "+79161112233", "p.petrov@mail.ru", 30)
    assert by_code["boris"]["needs_name"] is True and listed["need_names"] == 1
    assert "1 reps need a name (messages and documents cannot show a code): boris;" in \
        run_cli("managers", "list").output
    # the same rows again change nothing; a file of codes and capacities keeps the names
    again = run_json("managers", "import", write_csv(tmp_path / "m2.csv", HEADER, rows[:3]))
    assert (again["unchanged"], again["rejected"]) == (3, 0)
    run_json("managers", "import", write_csv(tmp_path / "m3.csv", ["code", "capacity"], [["anna", "4"]]))
    anna = {r["code"]: r for r in run_json("managers", "list")["managers"]}["anna"]
    assert (anna["name"], anna["capacity"]) == ("Анна Иванова", 4)


def test_new_call_tasks_respect_each_reps_daily_capacity(engine, tmp_path):
    reps(engine, tmp_path, ["anna", "Анна", "2"], ["boris", "Борис", "1"], ["carl", "Карл", "3"])
    owned(engine, tmp_path, "anna", *[f"C{i}" for i in range(1, 10)])
    owned(engine, tmp_path, "", "N1", name="n.csv")
    assert task_for(engine, "C1") == ("anna", None) and task_for(engine, "C2") == ("anna", None)
    rep, note = task_for(engine, "C3")                   # anna is full: the least loaded rep under capacity
    assert rep == "boris" and note == "the customer's rep anna is at capacity (2 of 2 calls on 2026-11-23)"
    assert [task_for(engine, c)[0] for c in ("C4", "C5", "C6")] == ["carl"] * 3
    rep, note = task_for(engine, "C7")                   # everyone is full: the least loaded, and the note says so
    assert rep == "boris" and "every active rep is at capacity on 2026-11-23; given to the least loaded, boris " \
                              "(1 of 1)" in note
    full = "every active rep is at capacity on 2026-11-23; given to the least loaded, anna (2 of 2)"
    assert task_for(engine, "N1") == ("anna", full)      # no rep of their own
    # the next day the reps' lists still hold their open tasks (overdue): anna is still over capacity
    full = ("the customer's rep anna is at capacity (3 of 2 calls on 2026-11-24); every active rep is at capacity "
            "on 2026-11-24; given to the least loaded, carl (3 of 3)")
    assert task_for(engine, "C8", NEXT) == ("carl", full)
    anna = {v: k for k, v in codes(engine).items()}["anna"]
    with engine.connect() as conn:
        done = conn.execute(select(CallTask.__table__.c.id).where(CallTask.__table__.c.manager_id == anna,
                                                                  CallTask.__table__.c.due_on == DAY)).scalars().all()
    for task_id in done:                                 # her calls of the first day made: room again
        calls.complete(engine, task_id, "reached", today=DAY)
    assert task_for(engine, "C9", NEXT) == ("anna", None)
    listed = {r["code"]: r for r in calls.list_reps(engine, DAY)}
    assert (listed["anna"]["load"], listed["anna"]["open_tasks"], listed["anna"]["at_capacity"]) == (3, 1, True)
    assert (listed["carl"]["load"], listed["carl"]["capacity"], listed["boris"]["load"]) == (3, 3, 2)
    assert {r["code"]: r["load"] for r in calls.list_reps(engine, NEXT)} == {"anna": 1, "boris": 2, "carl": 4}


def test_deactivate_shares_tasks_and_customers_fairly_and_records_every_move(engine, cli_env, tmp_path):
    reps(engine, tmp_path, ["gone", "Уходящий", "40"], ["anna", "Анна", "10"], ["boris", "Борис", "30"])
    owned(engine, tmp_path, "gone", *[f"G{i}" for i in range(1, 9)])
    owned(engine, tmp_path, "anna", "A1", name="a.csv")
    for external in ("G1", "G2", "G3", "G4", "G5", "G6", "A1"):
        task_for(engine, external)
    result = run_json("managers", "deactivate", "gone")
    # by open tasks against capacity: anna 1 of 10, boris 0 of 30 -> boris takes five, anna one
    assert result["tasks"] == {"anna": 1, "boris": 5}
    # a customer follows their task; the two without one go by customers against capacity
    assert result["customers"] == {"anna": 1, "boris": 7}
    listed = {r["code"]: r for r in run_json("managers", "list")["managers"]}
    assert (listed["gone"]["active"], listed["gone"]["open_tasks"], listed["gone"]["customers"]) == (False, 0, 0)
    assert (listed["anna"]["open_tasks"], listed["boris"]["open_tasks"]) == (2, 5)
    with engine.connect() as conn:
        moves = conn.execute(select(Reassignment.__table__)).all()
        tasks = {t.customer_id: t.manager_id for t in conn.execute(select(CallTask.__table__))}
        customers = dict(conn.execute(select(Customer.__table__.c.id, Customer.__table__.c.manager_id)).all())
    gone = {v: k for k, v in codes(engine).items()}["gone"]
    assert sorted((m.subject, m.subject_id) for m in moves if m.subject == "customer") == \
        sorted(("customer", cid) for e, cid in ids(engine).items() if e.startswith("G"))
    assert len(moves) == 6 + 8 and {m.from_manager_id for m in moves} == {gone}
    assert all(m.reason == "rep gone deactivated on " + date.today().isoformat() +
               "; shared among the active reps by load and capacity" for m in moves)
    assert all(customers[cid] == manager for cid, manager in tasks.items())   # each customer with their caller
    assert {m.to_manager_id for m in moves if m.subject == "call_task"} == {tasks[m.customer_id] for m in moves
                                                                              if m.subject == "call_task"}


def test_deactivate_to_a_named_rep_and_the_errors_say_what_to_do(engine, cli_env, tmp_path):
    reps(engine, tmp_path, ["anna", "Анна", "10"], ["boris", "Борис", "10"], ["carl", "Карл", "10"])
    owned(engine, tmp_path, "carl", "K1", "K2")
    task_for(engine, "K1")
    assert run_json("managers", "deactivate", "carl", "--reassign-to", "anna") == {
        "manager": "carl", "was_active": True, "tasks": {"anna": 1}, "customers": {"anna": 2}}
    for args, message in ((("boris", "--reassign-to", "carl"), "that rep is inactive"),
                          (("boris", "--reassign-to", "boris"), "that is the rep being deactivated"),
                          (("boris", "--reassign-to", "nobody"), "no rep with that code"),
                          (("nobody",), "no rep with code 'nobody'")):
        failed = run_cli("managers", "deactivate", *args)
        assert failed.exit_code == 1 and message in failed.output, failed.output
    run_json("managers", "deactivate", "boris")                  # nothing to move: simply inactive
    failed = run_cli("managers", "deactivate", "anna")           # the last active rep, with work
    assert failed.exit_code == 1 and "no other active rep can take them" in failed.output
    assert {r["code"]: r["active"] for r in run_json("managers", "list")["managers"]}["anna"] is True


def test_an_import_does_not_deactivate_a_rep_with_open_tasks(engine, tmp_path):
    reps(engine, tmp_path, ["anna", "Анна", "10"], ["boris", "Борис", "10"])
    owned(engine, tmp_path, "anna", "A1")
    task_for(engine, "A1")
    summary = import_file(engine, "managers", write_csv(tmp_path / "off.csv", ["code", "active"],
                                                        [["anna", "no"], ["boris", "нет"]]))
    assert (summary.updated, summary.rejected) == (1, 1)
    (row,) = read_rejects(tmp_path / "off.csv.rejects.csv")
    assert row["code"] == "anna" and "touchflow managers deactivate anna" in row["_reason"]


def test_upgrading_to_0009_flags_the_reps_named_by_their_code(db_url):
    from datetime import datetime, timezone

    from sqlalchemy import text

    from crm.db import make_engine, upgrade

    engine = make_engine(db_url)
    upgrade(engine, "0008")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO managers (code, name, active, created_at) VALUES "
                          "('petrov', 'petrov', :yes, :now), ('anna', 'Анна Иванова', :yes, :now)"),
                     {"yes": True, "now": datetime.now(timezone.utc).replace(tzinfo=None)})
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(Manager.__table__.c.code, Manager.__table__.c.needs_name,
                                   Manager.__table__.c.daily_call_capacity).order_by(Manager.__table__.c.code)).all()
    assert [tuple(r) for r in rows] == [("anna", False, 40), ("petrov", True, 40)]
    engine.dispose()

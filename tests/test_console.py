"""The console over real HTTP: logins, lock-out, cookies, CSRF, the role rules of every route, each role's work."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from crm import accounts
from crm.ledger.access import entries
from crm.models import CallTask, Customer, Touch
from tests import console_base
from tests.console_base import EVIL, PASSWORD, csrf, login
from tests.helpers import run_cli, run_json
from touchflow.server import create_app
from touchflow.server.console.view import today_in
from touchflow.settings import Settings


@pytest.fixture
def console(engine, tmp_path):
    ids, tasks = console_base.build(engine, tmp_path)
    url, stop = console_base.serve(engine, Settings())
    yield console_base.Console(url, ids, tasks)
    stop()


def task_row(engine, task_id):
    with engine.connect() as conn:
        return conn.execute(select(CallTask.__table__).where(CallTask.__table__.c.id == task_id)).one()


def test_pages_need_a_login_and_a_wrong_password_is_refused(console):
    anonymous = httpx.get(f"{console.url}/calls", headers={"accept": "text/html"})
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=/calls"
    client = httpx.Client(base_url=console.url)
    token = client.get("/login").cookies["touchflow_login"]
    wrong = client.post("/login", data={"username": "anna", "password": "nope", "login_token": token})
    assert wrong.status_code == 401 and "touchflow_session" not in wrong.cookies
    forged = httpx.post(f"{console.url}/login", data={"username": "anna", "password": PASSWORD, "login_token": "x"})
    assert forged.status_code == 403                        # no login-form token: a cross-site login is refused


def test_five_failures_lock_the_name_out_even_for_the_right_password(console, engine):
    client = httpx.Client(base_url=console.url)
    token = client.get("/login").cookies["touchflow_login"]
    for _ in range(accounts.LOCK_AFTER):
        assert client.post("/login", data={"username": "mark", "password": "bad", "login_token": token}
                           ).status_code == 401
    locked = client.post("/login", data={"username": "mark", "password": PASSWORD, "login_token": token})
    assert locked.status_code == 429 and "touchflow_session" not in locked.cookies
    login(console.url, "olga")                               # others are not locked out by mark's failures
    for name in ("x1", "x2", "x3") * 6:                       # a guesser trying many names from one address
        client.post("/login", data={"username": name, "password": "bad", "login_token": token})
    assert client.post("/login", data={"username": "root", "password": PASSWORD, "login_token": token}
                       ).status_code == 429


def test_the_session_cookie_is_httponly_samesite_and_secure_behind_https(engine, tmp_path):
    console_base.build(engine, tmp_path)
    for public, secure in (("http://127.0.0.1", False), ("https://touch.example.com", True)):
        with TestClient(create_app(engine, Settings(public_url=public)),
                        base_url="https://testserver" if secure else "http://testserver") as client:
            token = client.get("/login").cookies["touchflow_login"]
            answer = client.post("/login", data={"username": "anna", "password": PASSWORD, "login_token": token},
                                 follow_redirects=False)
            assert answer.status_code == 303, answer.text
            cookie = next(v for k, v in answer.headers.multi_items()
                          if k == "set-cookie" and v.startswith("touchflow_session="))
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie and ("Secure" in cookie) is secure


# (method, path template, the roles allowed); every other role gets 403
ROUTES = [
    ("GET", "/calls", {"sales"}),
    ("GET", "/calls/{task}", {"sales"}),
    ("POST", "/calls/{task}/outcome", {"sales"}),
    ("POST", "/calls/{task}/document", {"sales"}),
    ("GET", "/dashboard", {"marketing", "admin"}),
    ("GET", "/campaigns", {"marketing", "admin"}),
    ("GET", "/campaigns/winback", {"marketing", "admin"}),
    ("POST", "/campaigns/winback/dry-run", {"marketing", "admin"}),
    ("GET", "/plan?days=2", {"marketing", "admin"}),
    ("GET", "/templates?template=winback&customer=A1", {"marketing", "admin"}),
    ("GET", "/segments?name=lapsed_customers", {"marketing", "admin"}),
    ("GET", "/people?q=A1", {"compliance"}),
    ("GET", "/people/{customer}", {"compliance"}),
    ("GET", "/people/{customer}/export", {"compliance", "admin"}),
    ("GET", "/people/{customer}/erase", {"compliance", "admin"}),
    ("POST", "/people/{customer}/erase", {"compliance", "admin"}),
    ("GET", "/history?text=A1", {"compliance"}),
    ("GET", "/history.csv?text=A1", {"compliance", "admin"}),
    ("GET", "/history.xlsx?text=A1", {"compliance", "admin"}),
    ("GET", "/reports", {"compliance"}),
    ("GET", "/access-log", {"compliance"}),
    ("GET", "/access-log.csv", {"compliance"}),
    ("GET", "/users", {"admin"}),
    ("POST", "/users", {"admin"}),
    ("POST", "/users/pete/reset", {"admin"}),
]
ROLE_USER = {"sales": "anna", "marketing": "mark", "compliance": "olga", "admin": "root"}


def test_every_route_answers_403_to_every_role_without_the_permission(console):
    clients = {role: login(console.url, name) for role, name in ROLE_USER.items()}
    tokens = {role: csrf(client) for role, client in clients.items()}
    for method, template, allowed in ROUTES:
        path = template.format(task=console.tasks["A1"], customer=console.ids["P1"])
        for role, client in clients.items():
            data = {"csrf": tokens[role], "outcome": "no_answer", "reason": "r", "confirm": "not-the-id",
                    "name": "x", "role": "boss", "password": "short"}
            answer = client.request(method, path, data=data if method == "POST" else None)
            if role in allowed:
                assert answer.status_code in (200, 303, 400), (role, method, path, answer.status_code)
            else:
                assert answer.status_code == 403, (role, method, path, answer.status_code)


def test_a_rep_records_a_callback_and_tomorrows_queue_changes_another_rep_gets_404(console, engine):
    anna, pete = login(console.url, "anna"), login(console.url, "pete")
    task = console.tasks["A1"]
    queue = anna.get("/calls").text
    assert f'data-task="{task}"' in queue and f'data-task="{console.tasks["P1"]}"' not in queue
    assert pete.get(f"/calls/{task}").status_code == 404    # someone else's task: as if it did not exist
    token = csrf(anna, f"/calls/{task}")
    refused = anna.post(f"/calls/{task}/outcome", data={"outcome": "callback", "callback_on": "2020-01-01",
                                                        "csrf": token})
    assert refused.status_code == 400 and task_row(engine, task).status == "open"
    tomorrow = (today_in(Settings().default_timezone) + timedelta(days=1)).isoformat()  # the business's day
    saved = anna.post(f"/calls/{task}/outcome", data={"outcome": "callback", "callback_on": tomorrow, "note": "после 18",
                                                      "csrf": token})
    assert saved.status_code == 303 and task_row(engine, task).outcome == "callback"
    assert f'data-task="{task}"' not in anna.get("/calls").text  # today's queue lost it; the callback is tomorrow's
    with engine.connect() as conn:
        follow_up = conn.execute(select(CallTask.__table__).where(CallTask.__table__.c.status == "open",
                                                                  CallTask.__table__.c.customer_id == console.ids["A1"])
                                 ).one()
        outcome = conn.execute(select(Touch.__table__).where(Touch.__table__.c.customer_id == console.ids["A1"])).one()
    assert follow_up.due_on.isoformat() == tomorrow and outcome.channel == "call"


def test_a_form_without_the_csrf_token_changes_nothing(console, engine):
    anna = login(console.url, "anna")
    task = console.tasks["A1"]
    assert anna.post(f"/calls/{task}/outcome", data={"outcome": "reached"}).status_code == 403
    assert anna.post(f"/calls/{task}/outcome", data={"outcome": "reached", "csrf": "forged"}).status_code == 403
    assert task_row(engine, task).status == "open"


def test_compliance_views_exports_and_erasures_are_logged_before_the_data_is_read(console, engine):
    olga = login(console.url, "olga")
    a1 = console.ids["A1"]
    assert "Алиса Анина" in olga.get(f"/people/{a1}").text
    exported = olga.get(f"/people/{a1}/export")
    assert exported.status_code == 200 and json.loads(exported.text)["customer"]["external_id"] == "A1"
    token = csrf(olga, f"/people/{a1}/erase")
    wrong = olga.post(f"/people/{a1}/erase", data={"reason": "request", "confirm": "P1", "csrf": token})
    assert wrong.status_code == 400
    assert olga.post(f"/people/{a1}/erase", data={"reason": "request", "confirm": "A1", "csrf": token}
                     ).status_code == 303
    with engine.connect() as conn:
        assert conn.execute(select(Customer.__table__.c.name).where(Customer.__table__.c.id == a1)).scalar() == "[erased]"
    logged = [(r["username"], r["action"], r["customer_id"]) for r in entries(engine)]
    assert logged == [("olga", "timeline", a1), ("olga", "export", a1), ("olga", "card", a1),
                      ("olga", "erasure", a1)]
    csv_text = olga.get("/access-log.csv").text
    assert csv_text.splitlines()[0].startswith("id,at,user_id,username") and csv_text.count("olga") == 4


def test_pages_speak_russian_by_default_and_english_on_request_and_escape_names(console):
    anna = login(console.url, "anna")
    assert "Звонки на сегодня" in anna.get("/calls").text
    english = anna.get("/calls?lang=en").text
    assert "Today&#39;s calls" in english and "Log out" in english and 'lang="en"' in english
    assert "Log out" in anna.get("/calls").text              # the choice is remembered
    olga = login(console.url, "olga")
    found = olga.get("/people", params={"q": EVIL[:7]}).text
    assert EVIL not in found and "&lt;script&gt;alert(1)&lt;/script&gt;" in found


def test_the_dashboard_draws_the_days_touches_as_svg_bars(console, engine):
    anna = login(console.url, "anna")
    task = console.tasks["A1"]
    anna.post(f"/calls/{task}/outcome", data={"outcome": "reached", "csrf": csrf(anna, f"/calls/{task}")})
    page = login(console.url, "mark").get("/dashboard").text
    today = date.today().isoformat()
    assert f'data-series="call" data-day="{today}" data-value="1"' in page and "<svg" in page


def test_the_dashboard_charts_what_recent_runs_contacted(console, engine):
    from crm.ledger.runs import close_run, open_run

    now = datetime.now(timezone.utc)
    open_run(engine, "r1", "winback", dry_run=False, now=now, lease_seconds=60)
    close_run(engine, "r1", "finished", {"selected": 5, "channels": {"email": {"sent": 3}, "sms": {"failed": 1}}})
    page = login(console.url, "mark").get("/dashboard").text
    chart = page[page.index('data-testid="runs-chart"'):]
    local = now.astimezone(ZoneInfo(Settings().default_timezone))             # times in the configured zone
    assert f'data-series="winback {local:%m-%d %H:%M}" data-value="4"' in chart


def test_logout_disable_and_reset_end_sessions(console, engine):
    anna = login(console.url, "anna")
    token = csrf(anna, "/calls")
    assert anna.post("/logout", data={"csrf": token}).status_code == 303
    assert anna.get("/calls").status_code == 303            # back to the login form
    mark = login(console.url, "mark")
    accounts.disable(engine, "mark")
    assert mark.get("/dashboard").status_code == 303
    client = httpx.Client(base_url=console.url)
    form_token = client.get("/login").cookies["touchflow_login"]
    assert client.post("/login", data={"username": "mark", "password": PASSWORD, "login_token": form_token}
                       ).status_code == 401
    olga = login(console.url, "olga")
    accounts.set_password(engine, "olga", "another-long-password")
    assert olga.get("/people").status_code == 303


def test_user_commands(cli_env, engine, tmp_path):
    console_base.build(engine, tmp_path)
    listed = {u["name"]: u for u in run_json("user", "list")["users"]}
    assert listed["anna"]["role"] == "sales" and listed["anna"]["manager"] == "ivanova"
    added = run_cli("user", "add", "nina", "--role", "compliance", "--password-stdin", input="short\n")
    assert added.exit_code != 0 and "at least" in added.output
    bad_role = run_cli("user", "add", "nina", "--role", "boss", "--password-stdin", input=PASSWORD + "\n")
    assert bad_role.exit_code != 0 and "admin, marketing, sales, compliance" in bad_role.output
    no_rep = run_cli("user", "add", "sam", "--role", "sales", "--password-stdin", input=PASSWORD + "\n")
    assert no_rep.exit_code != 0 and "--manager" in no_rep.output
    assert run_cli("user", "add", "nina", "--role", "compliance", "--password-stdin", input=PASSWORD + "\n"
                   ).exit_code == 0
    with engine.connect() as conn:
        stored = conn.execute(select(accounts.users.c.password_hash).where(accounts.users.c.name == "nina")).scalar()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    token = run_json("user", "token", "create", "nina", "--label", "script")["token"]
    assert accounts.token_account(engine, token).name == "nina"
    with engine.connect() as conn:
        hashes = conn.execute(select(accounts.tokens.c.token_hash)).scalars().all()
    assert token not in hashes and len(hashes) == 1
    assert run_cli("user", "disable", "nina").exit_code == 0
    assert accounts.token_account(engine, token) is None      # disabling revokes the tokens
    assert {u["name"]: u for u in run_json("user", "list")["users"]}["nina"]["active"] is False


def test_the_api_takes_a_token_keeps_the_role_rules_and_is_documented(console, engine):
    api = httpx.Client(base_url=console.url)
    assert api.get("/api/v1/me").status_code == 401
    anna_token, anna = accounts.create_token(engine, "anna", "script")
    _, olga = accounts.create_token(engine, "olga")
    as_anna, as_olga = ({"Authorization": f"Bearer {t}"} for t in (anna, olga))
    assert api.get("/api/v1/me", headers=as_anna).json()["role"] == "sales"
    listed = api.get("/api/v1/tasks", headers=as_anna).json()["tasks"]
    assert [t["id"] for t in listed] == [console.tasks["A1"]]
    assert api.get("/api/v1/tasks", headers=as_olga).status_code == 403
    other = api.post(f"/api/v1/tasks/{console.tasks['P1']}/outcome", json={"outcome": "reached"}, headers=as_anna)
    assert other.status_code == 404                           # pete's task
    done = api.post(f"/api/v1/tasks/{console.tasks['A1']}/outcome", json={"outcome": "reached"}, headers=as_anna)
    assert done.status_code == 200 and task_row(engine, console.tasks["A1"]).outcome == "reached"
    assert api.get("/api/v1/customers/A1/timeline", headers=as_anna).status_code == 403
    items = api.get("/api/v1/customers/A1/timeline", headers=as_olga).json()["items"]
    assert {i["kind"] for i in items} >= {"touch", "call_task"}
    assert [r["action"] for r in api.get("/api/v1/access-log", headers=as_olga).json()["entries"]] == ["timeline"]
    accounts.revoke_token(engine, anna_token)
    assert api.get("/api/v1/me", headers=as_anna).status_code == 401
    with engine.connect() as conn:
        stored = conn.execute(select(accounts.tokens.c.token_hash)).scalars().all()
    assert anna not in stored and olga not in stored
    session = login(console.url, "anna")                       # a session needs the CSRF header for unsafe calls
    assert session.post(f"/api/v1/tasks/{console.tasks['A1']}/outcome", json={"outcome": "reached"}).status_code == 403
    schema = api.get("/openapi.json").json()
    assert "/api/v1/tasks" in schema["paths"] and not [p for p in schema["paths"] if not p.startswith("/api/")]
    assert "/api/v1/customers/{external_id}/timeline" in api.get("/docs").text


def test_marketing_previews_a_template_and_a_dry_run_shows_samples_and_contacts_nobody(console, engine):
    mark = login(console.url, "mark")
    page = mark.get("/templates", params={"template": "cat_food_offer", "customer": "A1"}).text
    assert 'data-channel="email"' in page and 'data-channel="sms"' in page and "сегм." in page
    assert 'sandbox=""' in page                                # the email's HTML cannot run anything
    assert [r["action"] for r in entries(engine)] == ["card"]  # a customer's data was seen: logged
    assert "no customer with external id" in mark.get("/templates", params={"template": "winback",
                                                                              "customer": "NOPE"}).text
    with engine.connect() as conn:
        before = conn.execute(select(Touch.__table__.c.id)).all()
    done = mark.post("/campaigns/winback/dry-run", data={"csrf": csrf(mark, "/campaigns/winback")})
    assert done.status_code == 303 and done.headers["location"].startswith("/runs/")
    run = mark.get(done.headers["location"]).text
    assert 'data-testid="run-status">завершён' in run and "пробный запуск" in run
    with engine.connect() as conn:
        assert conn.execute(select(Touch.__table__.c.id)).all() == before   # nobody contacted, nothing recorded
    assert mark.get(done.headers["location"] + ".json").json()["status"] == "finished"


def test_compliance_searches_the_history_exports_it_and_reads_the_report_and_verify(console, engine):
    anna = login(console.url, "anna")
    for task in console.tasks.values():
        if task == console.tasks["A1"]:
            anna.post(f"/calls/{task}/outcome", data={"outcome": "opt_out", "csrf": csrf(anna, f"/calls/{task}")})
    olga = login(console.url, "olga")
    found = olga.get("/history", params={"text": "+7 916 000-00-01", "channel": "call"}).text
    assert found.count('data-kind="touch"') == 1 and f'href="/people/{console.ids["A1"]}"' in found
    assert "history.csv?text=%2B7+916+000-00-01&amp;channel=call" in found
    exported = olga.get("/history.csv", params={"text": "A1"})
    lines = exported.text.splitlines()
    assert lines[0] == "at,kind,title,customer_id,detail" and len(lines) == 2 and ",touch,touch.delivered," in lines[1]
    assert olga.get("/history", params={"since": "yesterday"}).status_code == 400
    report = olga.get("/reports", params={"verify": "true"}).text
    assert 'data-testid="intact"' in report and 'data-testid="checked">1<' in report
    assert [r["action"] for r in entries(engine) if r["username"] == "olga"] == ["history", "export"]


def test_a_rep_sees_the_card_beside_the_script_and_downloads_a_proposal_recorded_in_the_history(console, engine,
                                                                                               tmp_path, monkeypatch):
    import io
    import zipfile

    monkeypatch.chdir(tmp_path)                                  # the documents go to outbox/documents here
    anna = login(console.url, "anna")
    task = console.tasks["A1"]
    page = anna.get(f"/calls/{task}").text
    assert 'data-testid="card"' in page and "Алиса Анина · A1" in page
    token = csrf(anna, f"/calls/{task}")
    got = anna.post(f"/calls/{task}/document", data={"kind": "proposal", "csrf": token})
    assert got.status_code == 200 and zipfile.ZipFile(io.BytesIO(got.content)).testzip() is None
    assert "attachment" in got.headers["content-disposition"]
    assert login(console.url, "pete").post(f"/calls/{task}/document", data={"kind": "proposal", "csrf": token}
                                           ).status_code in (403, 404)
    assert anna.post(f"/calls/{task}/document", data={"kind": "nothing", "csrf": token}).status_code == 400
    with engine.connect() as conn:
        channels = conn.execute(select(Touch.__table__.c.channel).where(
            Touch.__table__.c.customer_id == console.ids["A1"])).scalars().all()
    assert channels == ["document"]
    assert {r["action"] for r in entries(engine)} == {"card"}


def test_segment_preview_counts_samples_and_says_why(console, engine):
    mark = login(console.url, "mark")
    page = mark.get("/segments", params={"name": "email_marketing_ok"}).text
    assert 'data-testid="segment-count">' in page
    assert mark.get("/segments", params={"name": "no_such_segment"}).status_code == 200
    assert "no_such_segment" in mark.get("/segments", params={"name": "no_such_segment"}).text
    assert [r["detail"] for r in entries(engine)][:1] == ["segment preview email_marketing_ok"]


def test_history_exports_as_excel(console, engine):
    import io

    from openpyxl import load_workbook

    anna = login(console.url, "anna")
    task = console.tasks["A1"]
    anna.post(f"/calls/{task}/outcome", data={"outcome": "reached", "csrf": csrf(anna, f"/calls/{task}")})
    got = login(console.url, "olga").get("/history.xlsx", params={"text": "A1"})
    rows = list(load_workbook(io.BytesIO(got.content)).active.values)
    assert rows[0] == ("at", "kind", "title", "customer_id", "detail") and rows[1][2] == "touch.delivered"
    assert login(console.url, "olga").get("/history.pdf").status_code == 404


def test_the_api_serves_cards_consents_reports_and_campaigns_by_role(console, engine):
    tokens = {name: accounts.create_token(engine, name)[1] for name in ("anna", "olga", "mark")}
    api = {name: httpx.Client(base_url=console.url, headers={"Authorization": f"Bearer {t}"})
           for name, t in tokens.items()}
    assert api["olga"].get("/api/v1/customers/P1").json()["customer"]["name"] == "Павел Петин"
    assert api["anna"].get("/api/v1/customers/A1").status_code == 200
    assert api["anna"].get("/api/v1/customers/P1").status_code == 404     # another rep's customer
    assert api["mark"].get("/api/v1/customers/A1").status_code == 403
    assert api["olga"].get("/api/v1/customers/A1/consents").json() == {"consents": []}
    report = api["olga"].get("/api/v1/reports/compliance").json()
    assert report["total"] == 0 and "counts" in report
    assert api["mark"].get("/api/v1/reports/compliance").status_code == 403
    names = [c["name"] for c in api["mark"].get("/api/v1/campaigns").json()["campaigns"]]
    assert "cat_food_thanks" in names
    assert [(r["username"], r["action"]) for r in entries(engine)] == [
        ("olga", "card"), ("anna", "card"), ("olga", "consents")]


def history(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(Touch.__table__.c.id)).all()


def test_the_plan_lists_the_campaigns_and_simulates_the_days_ahead(console, engine):
    mark = login(console.url, "mark")
    touches = lambda: len(history(engine))  # noqa: E731
    before = touches()
    listed = mark.get("/plan").text
    assert 'data-campaign="winback"' in listed and 'data-testid="simulation"' not in listed
    assert 'data-journey="isp_tv_journey"' in listed and 'data-step="three_days"' in listed
    simulated = mark.get("/plan", params={"days": 3}).text
    assert 'data-testid="simulation"' in simulated and 'data-chart="stacked"' in simulated
    token = accounts.create_token(engine, "mark")[1]
    api = httpx.Client(base_url=console.url, headers={"Authorization": f"Bearer {token}"})
    entries = {row["name"]: row for row in api.get("/api/v1/plan").json()["entries"]}
    assert entries["birthday_trip"]["priority"] == 70 and entries["birthday_trip"]["offer_group"] == "travel"
    assert api.get("/api/v1/journeys/isp_tv_journey").json()["entered"] == 0
    result = api.get("/api/v1/plan/simulate", params={"days": 2}).json()
    assert len(result["daily"]) == 2 and "campaigns" in result
    assert touches() == before                                          # the simulator wrote nothing


def test_the_access_log_filters_by_user_record_action_and_keeps_them_in_its_csv(console, engine):
    olga = login(console.url, "olga")
    olga.get(f"/people/{console.ids['A1']}")
    olga.get(f"/people/{console.ids['P1']}")
    olga.get(f"/people/{console.ids['P1']}/export")
    page = olga.get("/access-log", params={"customer": console.ids["P1"], "action": "export"}).text
    assert page.count("<td>olga (compliance)</td>") == 1
    assert f"/access-log.csv?customer={console.ids['P1']}&amp;action=export" in page
    rows = olga.get("/access-log.csv", params={"user": "olga", "action": "timeline"}).text.splitlines()
    assert len(rows) == 3 and all(",timeline," in row for row in rows[1:])
    assert olga.get("/access-log", params={"action": "peek"}).status_code == 400


def test_a_reps_today_is_the_business_days_not_the_servers(engine, tmp_path):
    """The queue holds the calls due in the configured zone's today, wherever the server's clock is."""
    from datetime import datetime, timezone

    from crm.ledger import calls
    from touchflow.server.console.view import today_in

    # a zone whose date differs from UTC's right now: UTC+14 from 10:00 UTC, UTC-11 before 11:00 UTC
    zone = "Pacific/Kiritimati" if datetime.now(timezone.utc).hour >= 10 else "Pacific/Pago_Pago"
    ids, _ = console_base.build(engine, tmp_path)
    local = today_in(zone)
    assert local != datetime.now(timezone.utc).date()
    due = {calls.create_task(engine, touch_id=None, customer_id=ids["A1"], person_id=ids["A1"], phone="+79160000001",
                             script="", campaign="zone", offer=None, due_on=day): day
           for day in (local, local + timedelta(days=1))}
    url, stop = console_base.serve(engine, Settings(default_timezone=zone))
    try:
        queue = login(url, "anna").get("/calls").text
    finally:
        stop()
    shown = {task for task in due if f'data-task="{task}"' in queue}
    assert shown == {task for task, day in due.items() if day == local}


def test_a_running_runs_page_polls_its_counts_read_from_the_history(console, engine):
    from datetime import datetime, timezone

    from crm.ledger.runs import open_run

    open_run(engine, "live-run", "winback", dry_run=False, now=datetime.now(timezone.utc), lease_seconds=60)
    mark = login(console.url, "mark")
    page = mark.get("/runs/live-run").text
    assert 'fetch("/runs/live-run.json")' in page and 'data-testid="run-status">идёт' in page
    assert mark.get("/runs/live-run.json").json() == {"status": "running", "selected": 0, "channels": {},
                                                      "not_contacted": {}}
    assert mark.get("/runs/nope").status_code == 404


def test_an_admin_adds_resets_and_disables_users_in_the_console(console, engine):
    root = login(console.url, "root")
    token = csrf(root, "/users")
    added = root.post("/users", data={"name": "nina", "role": "sales", "manager": "petrov", "password": PASSWORD,
                                      "csrf": token})
    assert added.status_code == 303 and login(console.url, "nina").get("/calls").status_code == 200
    short = root.post("/users", data={"name": "ivan", "role": "marketing", "password": "short", "csrf": token})
    assert short.status_code == 400 and "at least" in short.text
    nina = login(console.url, "nina")
    assert root.post("/users/nina/reset", data={"password": "another-long-password", "csrf": token}
                     ).status_code == 303
    assert nina.get("/calls").status_code == 303                  # her session ended with the reset
    login(console.url, "nina", "another-long-password")
    assert root.post("/users/nina/disable", data={"csrf": token}).status_code == 303
    assert root.post("/users/root/disable", data={"csrf": token}).status_code == 400
    assert {u["name"]: u["active"] for u in accounts.list_users(engine)}["nina"] is False
    assert root.post("/users/nina/delete", data={"csrf": token}).status_code == 404


def test_after_login_only_a_path_on_this_site_is_followed(console):
    client = httpx.Client(base_url=console.url)
    token = client.get("/login").cookies["touchflow_login"]
    for target, expected in (("/people", "/people"), ("//evil.example", "/people"), ("/\\evil.example", "/people"),
                             ("https://evil.example", "/people")):
        client.cookies.clear()
        client.cookies.set("touchflow_login", token)
        answer = client.post("/login", data={"username": "olga", "password": PASSWORD, "login_token": token,
                                             "next": target})
        assert answer.status_code == 303 and answer.headers["location"] == expected, target

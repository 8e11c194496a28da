"""A small base for the console tests: two reps, their customers and call tasks, one user per role, a live server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import httpx
from sqlalchemy import select

from crm import accounts
from crm.importing import import_file
from crm.ledger import calls
from crm.models import Customer
from tests.helpers import write_csv
from tests.servers import free_port, start_app
from touchflow.server import create_app
from touchflow.settings import Settings

PASSWORD = "a-long-password-1"
USERS = {"anna": ("sales", "ivanova"), "pete": ("sales", "petrov"), "olga": ("compliance", None),
         "mark": ("marketing", None), "root": ("admin", None)}
EVIL = "<script>alert(1)</script>"


@dataclass
class Console:
    url: str
    ids: dict[str, int]      # external id → customer id
    tasks: dict[str, int]    # external id → its open call task


def build(engine, tmp_path) -> tuple[dict[str, int], dict[str, int]]:
    import_file(engine, "managers", write_csv(tmp_path / "m.csv", ["code", "name", "capacity"],
                                              [["ivanova", "Анна Иванова", "50"], ["petrov", "Пётр Петров", "50"]]))
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "phone", "manager"], [
        ["A1", "Алиса Анина", "+79160000001", "ivanova"], ["P1", "Павел Петин", "+79160000002", "petrov"],
        ["X1", EVIL, "+79160000003", "ivanova"]]))
    import_file(engine, "purchases", write_csv(tmp_path / "p.csv", ["customer", "date", "product", "category",
                                                                   "quantity", "amount"],
                                               [["A1", "2026-10-01", "Интернет 100 Мбит/с", "internet", "1", "600"]]))
    with engine.connect() as conn:
        ids = dict(conn.execute(select(Customer.__table__.c.external_id, Customer.__table__.c.id)).all())
    tasks = {ext: calls.create_task(engine, touch_id=None, customer_id=ids[ext], person_id=ids[ext],
                                    phone=f"+7916000000{i}", script=f"Скрипт для {ext}", campaign="isp_tv",
                                    offer="tv", due_on=date.today())
             for i, ext in enumerate(("A1", "P1"), start=1)}
    for name, (role, rep) in USERS.items():
        accounts.add_user(engine, name, role, PASSWORD, manager_code=rep)
    return ids, tasks


def serve(engine, settings: Settings):
    """Start the app on a free port in a thread; return (base URL, a function that stops it and waits)."""
    port = free_port()
    settings = settings.model_copy(update={"public_url": settings.public_url or f"http://127.0.0.1:{port}"})
    return f"http://127.0.0.1:{port}", start_app(create_app(engine, settings), port)


def login(url: str, name: str, password: str = PASSWORD) -> httpx.Client:
    """A client logged in as ``name`` (its cookie jar holds the session)."""
    client = httpx.Client(base_url=url, headers={"accept": "text/html"})
    form = client.get("/login")
    token = form.cookies.get("touchflow_login") or client.cookies.get("touchflow_login")
    answer = client.post("/login", data={"username": name, "password": password, "login_token": token, "next": ""})
    assert answer.status_code == 303, answer.text
    return client


def csrf(client: httpx.Client, page: str = "/") -> str:
    """The session's CSRF token, as the pages carry it in their forms."""
    import re

    html = client.get(page, follow_redirects=True).text
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)

"""The Telegram bot: updates through the webhook (a running server) and getUpdates, answered through the real
python-telegram-bot client against the local Bot API stand-in; every message and answer a touch."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager
from datetime import date, timedelta
from datetime import time as clock

import httpx
import pytest
from sqlalchemy import insert, select

from channels.bot_spec import BotSpecError, load_spec, parse_spec, words
from channels.telegram_bot import handle_update
from channels.telegram_links import create_link, poll
from channels.transports.telegram import TelegramConfig, make_bot
from crm.db import write_tx
from crm.importing import import_file
from crm.ledger.audit import verify
from crm.ledger.compliance import check
from crm.ledger.history import history
from crm.ledger.moves import move
from crm.ledger.policy import Policy, QuietHours
from crm.ledger.touches import record_touch
from crm.models import CallTask, Consent, ContactPoint, Manager, Touch, utcnow
from crm.timeline import person_of, timeline
from tests.helpers import run_cli, run_json, write_csv
from tests.servers import TelegramStub, free_port, running_app
from touchflow.server import create_app
from touchflow.settings import Settings

SECRET = "bot-webhook-secret"
HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
touches = Touch.__table__
tasks = CallTask.__table__


@pytest.fixture
def customers(engine, tmp_path):
    """B1 with a rep and a phone, B2 without a rep, B3 who will opt out; chats 1001–1003 bound."""
    with engine.begin() as conn:
        conn.execute(insert(Manager.__table__), [{"code": "anna", "name": "Анна Смирнова", "active": True,
                                                  "created_at": utcnow()}])
    rows = [["B1", "Белова", "anna", "+79160000001", "1001"], ["B2", "Борисов", "", "", "1002"],
            ["B3", "Васильева", "anna", "+79160000003", "1003"]]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "manager", "phone",
                                                                     "telegram"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              [[r[0], "telegram", "marketing", "granted", "2025-01-01"] for r in rows]))
    return {r[0]: r[4] for r in rows}


@contextmanager
def serving(engine, stub, tmp_path):
    port = free_port()
    settings = Settings(public_url=f"http://127.0.0.1:{port}", telegram_webhook_secret=SECRET,
                        telegram_transport="telegram", telegram_bot_token=stub.token,
                        telegram_api_base_url=stub.url, outbox_dir=str(tmp_path / "outbox"))
    with running_app(create_app(engine, settings), port) as base:
        yield f"{base}/telegram/webhook"


@pytest.fixture
def bot(engine, customers, tmp_path):
    with TelegramStub() as stub, serving(engine, stub, tmp_path) as url:
        yield stub, url


def update(update_id: int, chat: str | int, text: str, *, message_id: int | None = None,
           reply_to: int | None = None) -> dict:
    message = {"message_id": message_id or update_id, "date": int(time.time()), "text": text,
               "chat": {"id": int(chat), "type": "private"}, "from": {"id": int(chat), "is_bot": False,
                                                                      "first_name": "Клиент"}}
    if reply_to is not None:
        message["reply_to_message"] = {"message_id": reply_to, "date": int(time.time()), "text": "…",
                                       "chat": {"id": int(chat), "type": "private"}}
    return {"update_id": update_id, "message": message}


def post(url: str, data: dict) -> dict:
    response = httpx.post(url, json=data, headers=HEADERS, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()


def rows(engine, **where) -> list:
    with engine.connect() as conn:
        return conn.execute(select(touches).where(*(touches.c[k] == v for k, v in where.items()))
                            .order_by(touches.c.id)).all()


def sent_to(stub: TelegramStub, chat: str) -> list[str]:
    return [p["text"] for p in stub.sent if str(p["chat_id"]) == chat]


# ------------------------------------------------------------------ the webhook

def test_forged_secret_tokens_are_refused_and_change_nothing(engine, bot):
    stub, url = bot
    question = update(1, 1001, "Сколько стоит доставка?")
    assert httpx.post(url, json=question).status_code == 403
    assert httpx.post(url, json=question, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"}).status_code == 403
    assert rows(engine) == [] and stub.sent == []
    assert post(url, question)["action"] == "answered"


def test_a_question_is_answered_and_both_touches_are_in_the_history_and_the_timeline(engine, bot):
    stub, url = bot
    with write_tx(engine) as conn:  # a campaign message, which Telegram took as message 77
        campaign = record_touch(conn, {"person_key": "1", "customer_id": 1, "campaign": "autumn",
                                       "purpose": "marketing", "channel": "telegram", "address": "1001",
                                       "status": "sending", "created_at": utcnow(), "updated_at": utcnow()})
    move(engine, [{"touch_id": campaign, "status": "sent", "provider_message_id": "77"}])
    outcome = post(url, update(1, 1001, "А сколько стоит доставкой до дома? Курьером можно?", reply_to=77))
    assert (outcome["action"], outcome["intent"], outcome["sent"]) == ("answered", "delivery", True)
    assert sent_to(stub, "1001") == [load_spec().faq[0].answer.strip()]  # the delivery entry, as the stand-in got it
    inbound, answer = rows(engine, direction="in") + rows(engine, campaign="bot")
    assert (inbound.direction, inbound.status, inbound.in_reply_to) == ("in", "received", campaign)
    assert (inbound.provider_message_id, inbound.customer_id, inbound.campaign) == ("1001:1", 1, "autumn")
    assert (answer.direction, answer.status, answer.purpose, answer.in_reply_to) == ("out", "sent", "service",
                                                                                     inbound.id)
    assert answer.provider_message_id == "1" and answer.claim_key == f"answer:{inbound.id}"
    # the customer replies to the bot's answer: linked to that answer, by the id Telegram gave it
    post(url, update(2, 1001, "Спасибо", reply_to=1))
    assert rows(engine, provider_message_id="1001:2")[0].in_reply_to == answer.id
    listed = [(h["direction"], h["campaign"]) for h in history(engine, customer="B1")]
    assert listed == [("out", "autumn"), ("in", "autumn"), ("out", "bot"), ("in", "bot"), ("out", "bot")]
    items = {i["detail"]["touch_id"] for i in timeline(engine, person_of(engine, 1)).items if i["kind"] == "touch"}
    assert {inbound.id, answer.id} <= items
    assert not verify(engine).problems
    # quiet hours all day: the campaign's message is inside them, the answers to the customer are not
    all_day = Policy(quiet_hours=QuietHours(clock(0, 0), clock(23, 59, 59, 999999)))
    report = check(engine, policy=all_day)
    assert [v["touch"] for v in report.violations["inside_quiet_hours"]] == [campaign]
    assert not report.violations["after_opt_out"]


def test_an_order_is_a_call_task_for_the_rep_or_a_note_without_one(engine, bot):
    stub, url = bot
    first = post(url, update(1, 1001, "Хочу заказать корм для кошки, 10 кг"))
    assert (first["action"], first["intent"]) == ("answered", "order") and first["task_id"]
    with engine.connect() as conn:
        task = conn.execute(select(tasks, Manager.__table__.c.code).join(
            Manager.__table__, Manager.__table__.c.id == tasks.c.manager_id)).one()
    inbound = rows(engine, provider_message_id="1001:1")[0]
    assert (task.code, task.due_on, task.touch_id, task.phone) == ("anna", date.today() + timedelta(days=1),
                                                                    inbound.id, "+79160000001")
    assert "корм для кошки" in task.note and task.status == "open"
    assert "Анна Смирнова" in sent_to(stub, "1001")[0] and "завтра" in sent_to(stub, "1001")[0]
    # a second order while that call is open joins it: one call, not two
    post(url, update(2, 1001, "И ещё купить лоток"))
    with engine.connect() as conn:
        notes = conn.execute(select(tasks.c.note)).scalars().all()
    assert len(notes) == 1 and "лоток" in notes[0]
    # no rep: no task, a note in the history, and the answer says so
    second = post(url, update(3, 1002, "Можно оформить заказ на доставку воды?"))
    assert (second["intent"], second.get("task_id")) == ("order", None)
    assert rows(engine, provider_message_id="1002:3")[0].detail.endswith("(a note: the customer has no rep)")
    assert sent_to(stub, "1002")[0].startswith("Борисов, спасибо за заказ! Мы записали")
    with engine.connect() as conn:
        assert conn.execute(select(tasks.c.id)).scalars().all() == [task.id]


def test_an_opted_out_or_blocked_person_is_stored_and_never_answered(engine, bot):
    stub, url = bot
    stop = post(url, update(1, 1003, "/stop"))
    assert (stop["action"], stop.get("answer_id")) == ("opted_out", None)
    with engine.connect() as conn:
        revoked = conn.execute(select(Consent.__table__.c.purpose).where(
            Consent.__table__.c.customer_id == 3, Consent.__table__.c.granted.is_(False))).scalars().all()
    assert sorted(revoked) == ["marketing", "service"]
    asked = post(url, update(2, 1003, "Как оплатить картой?"))
    assert (asked["action"], asked["reason"], asked.get("answer_id")) == ("stored", "opted_out", None)
    assert [r.body for r in rows(engine, address="1003")] == ["/stop", "Как оплатить картой?"]
    post(url, {"update_id": 3, "my_chat_member": {"chat": {"id": 1002}, "new_chat_member": {"status": "kicked"}}})
    assert post(url, update(4, 1002, "Во сколько вы работаете?"))["reason"] == "blocked"
    assert stub.sent == [] and rows(engine, campaign="bot") == []


def test_a_block_found_when_answering_fails_the_answer_and_marks_the_chat(engine, bot):
    stub, url = bot
    stub.blocked.add("1001")
    outcome = post(url, update(1, 1001, "Какие способы оплаты?"))
    assert (outcome["action"], outcome["intent"]) == ("stored", "payment")
    assert outcome["reason"].startswith("the answer was not sent: the customer blocked the bot")
    answer = rows(engine, campaign="bot")[0]
    assert (answer.status, answer.error_code) == ("failed", "403")
    with engine.connect() as conn:
        status = conn.execute(select(ContactPoint.__table__.c.status).where(
            ContactPoint.__table__.c.value == "1001")).scalar_one()
    assert status == "blocked"
    assert post(url, update(2, 1001, "Алло?"))["reason"] == "blocked"  # and the next message is not answered


def test_without_a_channel_messages_are_stored_and_not_answered(engine, customers):
    outcome = asyncio.run(handle_update(engine, None, load_spec(), update(1, 1001, "Сколько стоит доставка?")))
    assert (outcome.action, outcome.reason, outcome.answer_id) == ("stored", "no bot channel configured", None)
    assert [r.direction for r in rows(engine)] == ["in"]


def test_a_redelivered_update_is_stored_once_and_answered_once(engine, bot):
    stub, url = bot
    question = update(1, 1001, "Как вернуть товар?")
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(url, question))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.append(post(url, question))  # and Telegram's retry later
    assert sorted(r["action"] for r in results) == ["answered", "duplicate", "duplicate", "duplicate"]
    assert len(sent_to(stub, "1001")) == 1
    assert len(rows(engine, direction="in")) == 1 and len(rows(engine, campaign="bot")) == 1


def test_strangers_get_only_an_invitation_and_a_link_binds(engine, bot, customers):
    stub, url = bot
    assert post(url, update(1, 5555, "Здравствуйте, сколько стоит доставка?"))["action"] == "ignored"
    assert rows(engine) == [] and stub.sent == []
    post(url, update(2, 5555, "/start"))
    assert sent_to(stub, "5555")[0].startswith("Здравствуйте! Чтобы мы узнали вас")
    assert [(r.direction, r.customer_id) for r in rows(engine, address="5555")] == [("in", None), ("out", None)]
    link, _ = create_link(engine, "B2", "touchflow_bot")
    bound = post(url, update(3, 5555, f"/start {link.split('start=')[1]}"))
    assert (bound["action"], bound["customer"], bound["sent"]) == ("bound", "B2", True)
    assert sent_to(stub, "5555")[1].startswith("Готово")
    assert rows(engine, provider_message_id="5555:3")[0].body == "/start ‹token›"  # the token is not kept
    assert post(url, update(5, 5555, ""))["reason"] == "nothing to answer (no text)"  # a sticker, a photo
    assert post(url, update(4, 5555, "Сколько стоит доставка?"))["intent"] == "delivery"


# ------------------------------------------------------------------ getUpdates

def test_get_updates_goes_through_the_same_handling(engine, customers):
    with TelegramStub() as stub:
        stub.updates = [update(10, 1001, "Какие у вас часы работы?"), update(11, 1001, "Хочу купить корм"),
                        update(12, 1001, "Какие у вас часы работы?", message_id=10),  # redelivered
                        update(13, 1003, "/stop"), update(14, 1003, "Как оплатить?"), update(15, 7777, "кто вы?")]
        outcomes = []
        bot = make_bot(TelegramConfig(token=stub.token, base_url=stub.url))
        asyncio.run(poll(engine, bot, stop_after=6, timeout=0, on_outcome=lambda u, o: outcomes.append(o)))
    assert [(o.action, o.intent) for o in outcomes] == [
        ("answered", "hours"), ("answered", "order"), ("duplicate", None), ("opted_out", None),
        ("stored", "payment"), ("ignored", None)]
    assert len(sent_to(stub, "1001")) == 2 and sent_to(stub, "1003") == [] and sent_to(stub, "7777") == []
    with engine.connect() as conn:
        assert conn.execute(select(tasks.c.customer_id)).scalars().all() == [1]
    assert len(rows(engine, campaign="bot", status="sent")) == 2


def test_the_listen_command_handles_one_update(engine, customers, cli_env, monkeypatch):
    with TelegramStub() as stub:
        stub.updates = [update(20, 1002, "Есть скидки?")]
        for name, value in {"BOT_TOKEN": stub.token, "API_BASE_URL": stub.url}.items():
            monkeypatch.setenv(f"TOUCHFLOW_TELEGRAM_{name}", value)
        summary = run_json("telegram", "listen", "--once")
    assert summary == {"updates": 1, "bound": 0, "actions": {"answered": 1}}
    assert sent_to(stub, "1002")[0].startswith("Актуальные акции")


# ------------------------------------------------------------------ the bot file

def test_words_are_matched_by_their_dictionary_forms():
    assert words("ДОСТАВКОЙ ещё Курьерами") == ("доставка", "еще", "курьер")
    spec = load_spec()
    assert spec.match("Как оформить заказ?").id == "order_how"  # the longer phrase beats the order keyword
    assert spec.match("оформите, пожалуйста, заказ").kind == "order"
    assert spec.match("Хочу заказать доставку").kind == "order"  # a tie (доставка / заказать): the order
    assert spec.match("добрый день").kind == "fallback"


@pytest.mark.parametrize("data, message", [
    ([1], "top level: expected a mapping"),
    ({"order": {"keywords": ["купить"], "call_task_answer": "ок", "note_answer": "ок"}, "fallback": "?",
      "linked": "ok", "link_refused": "no", "invitation": "hi", "faq": [{"id": "a", "keywords": [], "answer": "x"}]},
     "faq entry 1 (a): field 'keywords': expected a list"),
    ({"order": {"keywords": ["купить"], "call_task_answer": "{{ nme }}", "note_answer": "ок"}},
     "order: field 'call_task_answer': the template does not render: 'nme' is undefined"),
    ({"order": {"keywords": ["купить"], "call_task_answer": "ок", "note_answer": "ок", "due_in_days": "завтра"}},
     "order: field 'due_in_days': expected a whole number"),
    ({"order": {"keywords": ["купить"], "call_task_answer": "ок", "note_answer": "ок"}, "fallback": "?",
      "linked": "ok", "link_refused": "no", "invitation": "hi", "faq": [{"id": "a", "keywords": ["x"], "anser": "y"}]},
     "faq entry 1: unknown field 'anser'"),
    ({"order": {"keywords": ["купить"], "call_task_answer": "ок", "note_answer": "ок"}, "linked": "ok"},
     "field 'fallback': expected a non-empty text"),
])
def test_a_broken_bot_file_names_the_file_the_entry_and_the_field(data, message):
    with pytest.raises(BotSpecError) as caught:
        parse_spec(data, "bot.yaml")
    assert str(caught.value).startswith("bot.yaml: ") and message in str(caught.value)


def test_a_broken_bot_file_stops_the_check_command_and_the_server(tmp_path, engine, monkeypatch):
    path = tmp_path / "bot.yaml"
    path.write_text("faq:\n  - id: a\n    keywords: [x\n", encoding="utf-8")
    with pytest.raises(BotSpecError, match=r"bot.yaml: line \d+: not valid YAML"):
        load_spec(path)
    monkeypatch.setenv("TOUCHFLOW_TELEGRAM_BOT_FILE", str(path))
    result = run_cli("telegram", "check")
    assert result.exit_code == 1 and "not valid YAML" in result.output
    with pytest.raises(BotSpecError):
        create_app(engine, Settings(telegram_bot_file=str(path)))


def test_the_readme_example_is_a_valid_bot_file():
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("### Telegram bot", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse_spec(yaml.safe_load(example), "README.md")
    assert [e.id for e in spec.faq] == ["delivery", "order_how"] and spec.match("Хочу купить диван").kind == "order"

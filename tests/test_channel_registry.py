"""Channels chosen by configuration, dev outboxes, secrets masked, the process-wide rate limiter."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from channels import ratelimit
from channels.base import Channel, Message
from channels.transports.calls import CallTaskChannel
from channels.errors import TransientError
from channels.transports.outbox import ConsoleChannel, FileChannel, MemoryChannel
from channels.registry import ChannelConfigError, build_channel, describe
from channels.sending import send_with_retry
from tests.helpers import run_cli, run_json
from touchflow.settings import Settings


def test_the_embedded_default_needs_no_credentials(tmp_path):
    settings = Settings(outbox_dir=str(tmp_path / "outbox"))
    for name in ("email", "sms", "voice", "telegram"):
        channel = build_channel(name, settings)
        assert isinstance(channel, FileChannel) and isinstance(channel, Channel)

    async def sink(message):
        return "task-1"

    assert isinstance(build_channel("call", settings, task_sink=sink), CallTaskChannel)
    with pytest.raises(ChannelConfigError, match="task sink"):
        build_channel("call", settings)


def test_file_outbox_writes_eml_for_email_and_json_for_the_rest(tmp_path):
    settings = Settings(outbox_dir=str(tmp_path))
    email, sms = build_channel("email", settings), build_channel("sms", settings)

    async def go():
        a = await email.send(Message(channel="email", to="a@mail.ru", subject="Тема", text="Текст", html="<p>x</p>"))
        b = await sms.send(Message(channel="sms", to="+79161234567", text="Привет"))
        return a, b

    a, b = asyncio.run(go())
    (eml,) = (tmp_path / "email").glob("*.eml")
    assert b"Subject: =?utf-8?" in eml.read_bytes() and a.provider_id.startswith("<")
    (record,) = (tmp_path / "sms").glob("*.json")
    assert json.loads(record.read_text(encoding="utf-8"))["text"] == "Привет"


def test_console_and_memory_transports():
    stream = io.StringIO()
    console = ConsoleChannel("sms", stream=stream)
    memory = MemoryChannel("email")
    memory.fail_with["bad@mail.ru"] = TransientError("planted")

    async def go():
        await console.send(Message(channel="sms", to="+7916", text="Привет"))
        await memory.send(Message(channel="email", to="ok@mail.ru", text="x"))
        with pytest.raises(TransientError):
            await memory.send(Message(channel="email", to="bad@mail.ru", text="x"))

    asyncio.run(go())
    assert "to +7916" in stream.getvalue() and [m.to for m in memory.outbox] == ["ok@mail.ru"]


def test_real_transports_need_their_settings_and_never_show_secrets():
    with pytest.raises(ChannelConfigError, match="TOUCHFLOW_TELEGRAM_BOT_TOKEN"):
        build_channel("telegram", Settings(telegram_transport="telegram"))
    with pytest.raises(ChannelConfigError, match="TWILIO_ACCOUNT_SID"):
        build_channel("sms", Settings(sms_transport="twilio"))
    with pytest.raises(ChannelConfigError, match="choose one of: smtp, console, file, memory"):
        build_channel("email", Settings(email_transport="pigeon"))
    settings = Settings(email_transport="smtp", smtp_password="p@ss-SECRET", sms_transport="twilio",
                        twilio_account_sid="AC1", twilio_auth_token="tok-SECRET", twilio_from_number="+1500",
                        telegram_transport="telegram", telegram_bot_token="123:SECRET")
    text = json.dumps(describe(settings)) + repr(settings) + repr(build_channel("email", settings)) + \
        repr(build_channel("sms", settings)) + repr(build_channel("telegram", settings))
    assert "SECRET" not in text and "***" in text


def test_channels_list_command_masks_secrets(cli_env, monkeypatch):
    monkeypatch.setenv("TOUCHFLOW_SMTP_PASSWORD", "hunter2-SECRET")
    monkeypatch.setenv("TOUCHFLOW_EMAIL_TRANSPORT", "smtp")
    from touchflow.settings import reset_settings

    reset_settings()
    rows = run_json("channels", "list")["channels"]
    assert {r["channel"] for r in rows} == {"email", "sms", "voice", "telegram", "call"}
    assert "hunter2" not in json.dumps(rows)
    assert run_cli("channels", "list").output.count("SECRET") == 0


def test_call_channel_hands_the_script_to_a_task_sink():
    created = []

    async def sink(message: Message) -> str:
        created.append(message.text)
        return f"task-{len(created)}"

    delivery = asyncio.run(CallTaskChannel(sink).send(Message(channel="call", to="+7916", text="Скрипт")))
    assert delivery.provider_id == "task-1" and created == ["Скрипт"]


def test_rate_limiter_spaces_sends_and_pauses_on_retry_after(monkeypatch):
    clock = {"now": 1000.0}
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        clock["now"] += seconds

    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(ratelimit.asyncio, "sleep", fake_sleep)
    limiter = ratelimit.RateLimiter(rate=2, burst=1)

    async def go():
        for _ in range(3):
            await limiter.acquire()
        limiter.pause(5)
        await limiter.acquire()

    asyncio.run(go())
    assert slept[:2] == [0.5, 0.5]          # 2 per second: half a second apart
    assert slept[2] == 5.0                   # then the provider's pause


def test_limiters_are_shared_per_key_in_the_process():
    assert ratelimit.limiter("sms:+1500", 1) is ratelimit.limiter("sms:+1500", 1)
    assert ratelimit.limiter("sms:+1500", 1) is not ratelimit.limiter("sms:+1501", 1)


def test_permanent_errors_are_not_retried():
    from channels.errors import AddressRejected

    memory = MemoryChannel("email")
    calls = []
    original = memory.send

    async def counting(message):
        calls.append(message.to)
        return await original(message)

    memory.send = counting
    memory.fail_with["gone@mail.ru"] = AddressRejected("550")
    with pytest.raises(AddressRejected):
        asyncio.run(send_with_retry(memory, Message(channel="email", to="gone@mail.ru"), attempts=3, base_delay=0))
    assert calls == ["gone@mail.ru"]


def test_template_commands(cli_env, engine, tmp_path):
    from tests import segbase

    segbase.build(engine, tmp_path)
    listed = {t["name"] for t in run_json("template", "list")["templates"]}
    assert "isp_tv_package" in listed
    checked = run_json("template", "check", "isp_tv_package", "--segment", "isp_internet_no_tv")
    assert checked["errors"] == 0 and checked["checked"] >= 8
    preview = run_json("template", "preview", "isp_tv_package", "--customer", "ISP1", "--channel", "call",
                       "--as-of", segbase.AS_OF)
    script = preview["parts"][0]["text"].replace("\u00a0", " ")  # money keeps its no-break space
    assert "Абонент Один" in script
    # built from the history: contracts, support calls and football streams (article 004's G); the
    # name tells no gender, so the facts are worded without one
    assert "с нами 5 лет: заключили 3 договора, первый — в феврале 2021 года" in script
    assert "в поддержку обращались 3 раза" in script and "проблемы решены" in script
    assert "купили 3 трансляции футбола по 55 ₽ — 165 ₽ в месяц" in script
    assert "или двух спортивных трансляций в месяц" in script and "до 30 апреля" in script
    assert "всего на 120 ₽" in script and "на 25%" in script and "в течение месяца" in script
    assert [int(line.split(".")[0]) for line in script.splitlines() if line[:1].isdigit()] == list(range(1, 9))
    bad = run_cli("template", "preview", "isp_tv_package", "--customer", "ISP1", "--channel", "telegram")
    assert bad.exit_code == 1 and "has no telegram part" in bad.output

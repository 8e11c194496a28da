"""Provider limits hold in every one-second window, across real processes, through the real clients.

Worker processes build their channel, meter and limiter from settings as a run's ``_send`` does,
wait for each other, then send to the stand-ins, which note when each request arrived. A window
is any second starting at an arrival (sliding, not aligned seconds). The bound is exact, so it is
asserted as is; the utilisation (the mean rate over the run's whole seconds, as a share of the
limit) is the lower bound, over runs of a few seconds.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid

import pytest

from channels.base import Message
from channels.ratelimit import LOCAL, LimiterUnavailable, RedisLimiter
from channels.registry import build_channel, meter_of
from channels.render.sms import sms_info
from channels.sending import send_all
from tests.servers import TelegramStub, TwilioStub, free_port
from touchflow.settings import Settings

REDIS_URL = os.environ.get("TOUCHFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def redis_url() -> str:
    """The test Redis; skipped when the default one is absent, a failure when TOUCHFLOW_TEST_REDIS_URL names it."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if "TOUCHFLOW_TEST_REDIS_URL" in os.environ:
            pytest.fail(f"TOUCHFLOW_TEST_REDIS_URL={REDIS_URL} is unreachable: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); set TOUCHFLOW_TEST_REDIS_URL to test the shared limiter")
    return REDIS_URL


def bot_token() -> str:
    """A bot of its own per test: limits are keyed by the bot, so parallel tests never share one."""
    return f"{uuid.uuid4().int % 10**12}:TEST-token"


def telegram_settings(stub: TelegramStub, **kwargs) -> dict:
    return {"telegram_transport": "telegram", "telegram_bot_token": stub.token, "telegram_api_base_url": stub.url,
            "rate_telegram": 30, **kwargs}


def messages(channel: str, chats: list) -> list[Message]:
    return [Message(channel=channel, to=str(chat), text=f"сообщение {i}") for i, chat in enumerate(chats)]


def worst_window(arrivals: list[tuple[float, int]], seconds: float = 1.0) -> int:
    """The most units that arrived within any ``seconds`` (a window starting at each arrival)."""
    arrivals = sorted(arrivals)
    return max(sum(units for t, units in arrivals[i:] if t < start + seconds) for i, (start, _) in enumerate(arrivals))


def utilisation(arrivals: list[tuple[float, int]], limit: int) -> float:
    """The mean rate over the run's whole seconds (from the first arrival; the partial last one left out) / limit."""
    first = min(t for t, _ in arrivals)
    seconds = int(max(t for t, _ in arrivals) - first)
    assert seconds >= 2, "too short a run to measure its rate"
    return sum(units for t, units in arrivals if t < first + seconds) / (limit * seconds)


def _sender(kind: str, settings: dict, batch: list[Message], share: int, concurrency: int, barrier, results) -> None:
    """One worker process: channel, meter and limiter as a run's ``_send`` has them; send once all are ready."""
    from channels.ratelimit import limiter_for, share_locally

    try:
        if share:
            share_locally(share)
        config = Settings(**settings)
        channel = build_channel(kind, config)

        async def go() -> list:
            await channel.open()
            barrier.wait(timeout=60)
            try:
                return await send_all(channel, batch, concurrency=concurrency, meter=meter_of(kind, channel, config),
                                      limiter=limiter_for(config.rate_limit_url), attempts=3, base_delay=0.05)
            finally:
                await channel.close()

        results.put([type(result).__name__ for result in asyncio.run(go())])
    except BaseException as exc:  # the parent reports it
        results.put(f"{type(exc).__name__}: {exc}")


def send_in_processes(kind: str, settings: dict, batches: list[list[Message]], *, share: int = 0,
                      concurrency: int = 4) -> list:
    """Each batch sent by its own (spawned) process, all starting together; each process's outcome names."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(batches)), context.Queue()
    processes = [context.Process(target=_sender, args=(kind, settings, batch, share, concurrency, barrier, results))
                 for batch in batches]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=90) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    assert all(isinstance(outcome, list) for outcome in outcomes), outcomes
    return outcomes


# ---------------------------------------------------------------- shared through Redis

def test_two_processes_stay_within_30_telegrams_in_every_second_and_one_a_second_per_chat(redis_url):
    with TelegramStub(bot_token()) as stub:
        first = [10_000 + i for i in range(59)]
        second = [20_000 + i for i in range(58)]
        first.insert(5, 777)
        second[10:10] = [777]
        second[40:40] = [777]
        outcomes = send_in_processes("telegram", telegram_settings(stub, rate_limit_url=redis_url),
                                     [messages("telegram", first), messages("telegram", second)])
    assert [set(outcome) for outcome in outcomes] == [{"Delivery"}, {"Delivery"}]
    arrivals = [(t, 1) for t, _ in stub.arrivals]
    assert len(arrivals) == 120
    assert worst_window(arrivals) <= 30                       # never over the bot's limit, both processes together
    assert utilisation(arrivals, 30) >= 0.8, utilisation(arrivals, 30)
    one_chat = sorted(t for t, chat in stub.arrivals if chat == "777")
    assert len(one_chat) == 3 and all(b - a >= 1.0 for a, b in zip(one_chat, one_chat[1:])), one_chat


def test_sms_count_in_segments_two_a_second_across_two_processes(redis_url):
    one, two = "Здравствуйте! Подходит срок ТО вашего автомобиля. Запишитесь заранее, ждём вас"[:70], "Ж" * 100
    assert (sms_info(one).segments, sms_info(two).segments, len(one)) == (1, 2, 70)
    with TwilioStub() as stub:
        settings = {"sms_transport": "twilio", "twilio_account_sid": stub.account_sid,
                    "twilio_auth_token": stub.auth_token, "twilio_api_base_url": stub.url, "rate_sms": 2,
                    "twilio_from_number": f"+1500{uuid.uuid4().int % 10**7:07d}", "rate_limit_url": redis_url}
        batch = [Message(channel="sms", to=f"+7916000{i:04d}", text=text) for i, text in enumerate([two, one])]
        outcomes = send_in_processes("sms", settings, [batch, batch])  # both begin with a two-segment SMS
    assert [set(outcome) for outcome in outcomes] == [{"Delivery"}, {"Delivery"}]
    arrivals = [(t, sms_info(fields["Body"]).segments) for t, _, fields in stub.arrivals]
    assert sum(units for _, units in arrivals) == 6
    assert worst_window(arrivals) <= 2, sorted(arrivals)      # counted in segments: a two-segment SMS costs two


def test_a_retry_after_to_one_process_pauses_the_other(redis_url):
    with TelegramStub(bot_token()) as stub:
        stub.delay = 0.1            # each process sends about ten a second: below the limit, so only a pause stops it
        stub.retry_after["555"] = 1
        first = [10_000 + i for i in range(9)]
        first.insert(3, 555)
        second = [20_000 + i for i in range(15)]
        outcomes = send_in_processes("telegram", telegram_settings(stub, rate_limit_url=redis_url),
                                     [messages("telegram", first), messages("telegram", second)], concurrency=1)
    assert [set(outcome) for outcome in outcomes] == [{"Delivery"}, {"Delivery"}]
    refused = min(t for t, chat in stub.arrivals if chat == "555")
    others = [t for t, chat in stub.arrivals if chat.startswith("2")]
    assert any(refused - 0.5 < t < refused for t in others)  # the other process was sending when the 429 came
    assert not [t - refused for t in others if refused + 0.3 < t < refused + 0.95]  # and it waited out the second
    assert any(t > refused + 1.0 for t in others)


def test_an_unreachable_or_wrong_limiter_stops_the_channel_and_sends_nothing():
    with TelegramStub(bot_token()) as stub:
        settings = Settings(**telegram_settings(stub))
        channel = build_channel("telegram", settings)
        for url in (f"redis://:hunter2@127.0.0.1:{free_port()}/0", "http://127.0.0.1/0"):
            results = asyncio.run(send_all(channel, messages("telegram", [1, 2, 3]),
                                           meter=meter_of("telegram", channel, settings), limiter=RedisLimiter(url)))
            assert [type(result) for result in results] == [LimiterUnavailable] * 3
            assert "TOUCHFLOW_RATE_LIMIT_URL" in str(results[0]) and results[0].channel == "telegram"
            assert "hunter2" not in str(results[0])
        asyncio.run(channel.close())
    assert stub.arrivals == []


def test_a_run_whose_limiter_is_down_stops_and_its_touches_fail_unsent(engine, tmp_path):
    from datetime import datetime, timezone  # here, not at the top: worker processes import this module

    from sqlalchemy import select

    from crm.importing import import_file
    from crm.models import Touch
    from crm.persons import refresh_persons
    from flows.engine import run_campaign
    from flows.spec import CampaignSpec
    from tests.helpers import write_csv
    from touchflow.errors import RunStopped

    rows = [[f"K{i}", f"Клиент {i}", f"+7916200{i:04d}"] for i in range(6)]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "phone"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              [[r[0], "sms", "marketing", "granted", "2025-01-01 10:00"] for r in rows]))
    refresh_persons(engine)
    spec = CampaignSpec(name="limits", rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                        offer="limits-1", template="winback", channels=["sms"], policy={"quiet_hours": "off"})
    with TwilioStub() as stub:
        settings = Settings(outbox_dir=str(tmp_path / "outbox"), sms_transport="twilio",
                            twilio_account_sid=stub.account_sid, twilio_auth_token=stub.auth_token,
                            twilio_from_number="+15005550006", twilio_api_base_url=stub.url,
                            rate_limit_url=f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(RunStopped, match="rate limiter"):
            run_campaign(engine, spec, now=datetime.now(timezone.utc), settings=settings)
    assert stub.arrivals == []
    with engine.connect() as conn:
        statuses = conn.execute(select(Touch.__table__.c.status, Touch.__table__.c.error_code)).all()
    assert statuses and set(statuses) == {("failed", "rate_limiter_unavailable")}


# ---------------------------------------------------------------- in this process (no shared limiter)

def test_one_process_without_a_shared_limiter_has_no_first_second_burst():
    with TelegramStub(bot_token()) as stub:
        settings = Settings(**telegram_settings(stub))
        channel = build_channel("telegram", settings)

        async def go() -> list:
            try:
                return await send_all(channel, messages("telegram", range(10_000, 10_090)),
                                      meter=meter_of("telegram", channel, settings), limiter=LOCAL)
            finally:
                await channel.close()

        results = asyncio.run(go())
    assert {type(result).__name__ for result in results} == {"Delivery"}
    arrivals = [(t, 1) for t, _ in stub.arrivals]
    assert worst_window(arrivals) <= 30                       # the first second included: nothing starts "full"
    assert utilisation(arrivals, 30) >= 0.8, utilisation(arrivals, 30)


def test_a_local_pool_without_a_shared_limiter_splits_the_limit():
    with TelegramStub(bot_token()) as stub:
        batches = [messages("telegram", range(start, start + 45)) for start in (10_000, 20_000)]
        outcomes = send_in_processes("telegram", telegram_settings(stub), batches, share=2)
    assert [set(outcome) for outcome in outcomes] == [{"Delivery"}, {"Delivery"}]
    arrivals = [(t, 1) for t, _ in stub.arrivals]
    assert worst_window(arrivals) <= 30                       # 15 a second each: the pool stays under the bot's limit
    assert utilisation(arrivals, 30) >= 0.8, utilisation(arrivals, 30)

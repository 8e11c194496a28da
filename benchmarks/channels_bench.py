"""SMS (Twilio) and Telegram channel throughput vs a bare httpx loop, to the same local stand-ins, same concurrency.

    python benchmarks/channels_bench.py [--messages 5000] [--concurrency 4] [--repeat 3]
                                        [--channels sms,telegram] [--aiohttp] [--profile sms|telegram]

Two stand-ins run in a second process (a small asyncio HTTP/1.1 server with keep-alive, so the
stand-in is not what sets the pace): the Twilio REST API (``POST
/2010-04-01/Accounts/{sid}/Messages.json`` answers 201 with a message resource, ``"sid"`` and
``"status": "queued"``) and the Telegram Bot API (``POST /bot{token}/getMe`` and ``sendMessage``
answer ``{"ok": true, "result": ...}``).

For each channel, the channel run sends N messages through ``channels.sending.send_all(channel,
messages, concurrency=C)`` with the real transport (``TwilioSmsChannel`` with ``api_base_url``,
``TelegramChannel`` with ``base_url``, ``max_in_flight`` 32 as the registry sets it) and no rate
limits (no meter); the bare run posts the same requests (same form fields, basic auth for Twilio)
with one ``httpx.AsyncClient`` and C workers, reading each JSON answer. ``--aiohttp`` also times a
bare ``aiohttp.ClientSession`` loop (the transport the channels use underneath): the ratio to it is
the channel layer's own overhead. Reported: messages/s of each (best of ``--repeat``, runs
alternated: the machine's noise is large), the ratio channel/bare, and the CPU milliseconds this
process spent per message in the best run of each (every thread counted: a steadier figure when
something else shares the two cores). ``--profile CHANNEL`` runs only that channel layer once
under cProfile and prints the top functions by cumulative and own time (to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels.base import Message  # noqa: E402
from channels.sending import send_all  # noqa: E402
from channels.transports.telegram import TelegramChannel, TelegramConfig  # noqa: E402
from channels.transports.twilio import TwilioConfig, TwilioSmsChannel  # noqa: E402

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "secret-token"
BOT_TOKEN = "123456:BENCH-token"
FROM_NUMBER = "+15005550006"
TEXT = "Визитки заканчиваются: закажите новые до пятницы, скидка 10 % по коду ВИЗИТ10."

# The stand-in: run with ``python -c`` in its own process; prints its port once it listens.
STAND_IN = r'''
import asyncio, json, sys, time
from urllib.parse import parse_qs

ACCOUNT_SID, BOT_TOKEN = sys.argv[1], sys.argv[2]
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json".encode()
SEND = f"/bot{BOT_TOKEN}/sendMessage".encode()
GET_ME = f"/bot{BOT_TOKEN}/getMe".encode()
BOT = {"id": int(BOT_TOKEN.split(":")[0]), "is_bot": True, "first_name": "Touchflow", "username": "touchflow_bot",
       "can_join_groups": False, "can_read_all_group_messages": False, "supports_inline_queries": False}
counter = [0]


def answer(status, body):
    data = json.dumps(body).encode()
    reason = {200: b"OK", 201: b"Created", 404: b"Not Found"}[status]
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n" % (status, reason, len(data))) + data


def form(body, content_type):
    if b"json" in content_type:
        return json.loads(body or b"{}")
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


def respond(path, body, content_type):
    counter[0] += 1
    n = counter[0]
    path = path.split(b"?", 1)[0]
    if path == MESSAGES:
        fields = form(body, content_type)
        return answer(201, {"sid": f"SM{n:032d}", "status": "queued", "to": fields.get("To"),
                            "from": fields.get("From"), "body": fields.get("Body"), "account_sid": ACCOUNT_SID,
                            "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01",
                            "date_created": "Mon, 23 Nov 2026 09:00:00 +0000",
                            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/SM{n:032d}.json"})
    if path == SEND:
        fields = form(body, content_type)
        chat = int(fields.get("chat_id", 0))
        return answer(200, {"ok": True, "result": {
            "message_id": n, "date": int(time.time()), "text": fields.get("text", ""),
            "chat": {"id": chat, "type": "private", "first_name": "Клиент"}, "from": BOT}})
    if path == GET_ME:
        return answer(200, {"ok": True, "result": BOT})
    return answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].split(b"\r\n")
            length, content_type = 0, b""
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"content-type":
                    content_type = value.strip().lower()
            if len(self.buffer) < end + 4 + length:
                break
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            out.append(respond(head[0].split(b" ")[1], body, content_type))
        if out:
            self.transport.write(b"".join(out))


async def main():
    server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
'''


def start_stand_in() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", STAND_IN, ACCOUNT_SID, BOT_TOKEN], stdout=subprocess.PIPE,
                               text=True)
    port = int(process.stdout.readline())
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the stand-in did not start")


def messages(kind: str, n: int) -> list[Message]:
    if kind == "sms":
        return [Message(channel="sms", to=f"+7916{i:07d}", text=TEXT, reference=f"bench:{i}") for i in range(n)]
    return [Message(channel="telegram", to=str(100000 + i), text=TEXT, reference=f"bench:{i}") for i in range(n)]


def make_channel(kind: str, url: str, concurrency: int):
    in_flight = max(32, concurrency)  # as the registry sets it: TOUCHFLOW_MAX_IN_FLIGHT, 32 by default
    if kind == "sms":
        return TwilioSmsChannel(TwilioConfig(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER,
                                             api_base_url=url, max_in_flight=in_flight))
    return TelegramChannel(TelegramConfig(token=BOT_TOKEN, base_url=url, max_in_flight=in_flight))


async def channel_run(kind: str, url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Seconds and CPU seconds (this process, every thread) to send ``n`` messages through the channel layer."""
    channel = make_channel(kind, url, concurrency)
    batch = messages(kind, n)
    await channel.open()  # Telegram's getMe: not part of the sends
    started, cpu = time.perf_counter(), time.process_time()
    results = await send_all(channel, batch, concurrency=concurrency)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await channel.close()
    failed = [r for r in results if isinstance(r, Exception)]
    assert not failed, f"{len(failed)} of {n} failed, first: {failed[0]!r}"
    return elapsed, cpu


async def bare_run(kind: str, url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Seconds and CPU seconds to post the same ``n`` requests with a bare ``httpx.AsyncClient`` loop."""
    batch = messages(kind, n)
    queue: asyncio.Queue[Message] = asyncio.Queue()
    for message in batch:
        queue.put_nowait(message)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if kind == "sms":
        target = f"{url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        auth = (ACCOUNT_SID, AUTH_TOKEN)

        def fields(message: Message) -> dict:
            return {"To": message.to, "From": FROM_NUMBER, "Body": message.text}

        def check(body: dict) -> str:
            return body["sid"]
    else:
        target, auth = f"{url}/bot{BOT_TOKEN}/sendMessage", None

        def fields(message: Message) -> dict:
            return {"chat_id": message.to, "text": message.text}

        def check(body: dict) -> str:
            assert body["ok"]
            return str(body["result"]["message_id"])

    async with httpx.AsyncClient(limits=limits, auth=auth, timeout=30) as client:
        async def worker() -> None:
            while not queue.empty():
                message = queue.get_nowait()
                response = await client.post(target, data=fields(message))
                response.raise_for_status()
                check(response.json())

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, time.process_time() - cpu


async def bare_aiohttp_run(kind: str, url: str, n: int, concurrency: int) -> tuple[float, float]:
    """The same requests with a bare ``aiohttp.ClientSession`` loop (the transport the channels use underneath)."""
    import aiohttp

    queue: asyncio.Queue[Message] = asyncio.Queue()
    for message in messages(kind, n):
        queue.put_nowait(message)
    if kind == "sms":
        target = f"{url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        headers = {"Authorization": "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()}

        def fields(message: Message) -> dict:
            return {"To": message.to, "From": FROM_NUMBER, "Body": message.text}
    else:
        target, headers = f"{url}/bot{BOT_TOKEN}/sendMessage", {}

        def fields(message: Message) -> dict:
            return {"chat_id": message.to, "text": message.text}

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), headers=headers) as session:
        async def worker() -> None:
            while not queue.empty():
                message = queue.get_nowait()
                async with session.post(target, data=fields(message)) as response:
                    response.raise_for_status()
                    json.loads(await response.read())

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, time.process_time() - cpu


def profile(kind: str, url: str, n: int, concurrency: int) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(channel_run(kind, url, n, concurrency))
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (send_all's concurrency, the "
                                                                     "bare loop's workers and connections)")
    parser.add_argument("--repeat", type=int, default=3, help="alternate the runs this many times; best of each")
    parser.add_argument("--channels", default="sms,telegram", help="comma-separated: sms, telegram")
    parser.add_argument("--aiohttp", action="store_true",
                        help="also time a bare aiohttp loop (the channels' transport underneath) and the ratio to it")
    parser.add_argument("--profile", choices=("sms", "telegram"),
                        help="run only this channel layer once under cProfile (report to stderr)")
    args = parser.parse_args()
    stand_in, url = start_stand_in()
    try:
        if args.profile:
            profile(args.profile, url, args.messages, args.concurrency)
            return
        report: dict = {"messages": args.messages, "concurrency": args.concurrency, "repeat": args.repeat}
        for kind in [k.strip() for k in args.channels.split(",") if k.strip()]:
            channel = bare = bare_aiohttp = (float("inf"), float("inf"))
            for _ in range(args.repeat):
                bare = min(bare, asyncio.run(bare_run(kind, url, args.messages, args.concurrency)))
                channel = min(channel, asyncio.run(channel_run(kind, url, args.messages, args.concurrency)))
                if args.aiohttp:
                    bare_aiohttp = min(bare_aiohttp,
                                       asyncio.run(bare_aiohttp_run(kind, url, args.messages, args.concurrency)))
            channel_rate, bare_rate = args.messages / channel[0], args.messages / bare[0]
            report[kind] = {"channel_per_second": round(channel_rate), "bare_per_second": round(bare_rate),
                            "ratio": round(channel_rate / bare_rate, 3),
                            "channel_cpu_ms_per_message": round(channel[1] * 1000 / args.messages, 3),
                            "bare_cpu_ms_per_message": round(bare[1] * 1000 / args.messages, 3)}
            if args.aiohttp:
                aiohttp_rate = args.messages / bare_aiohttp[0]
                report[kind].update({"bare_aiohttp_per_second": round(aiohttp_rate),
                                     "ratio_to_aiohttp": round(channel_rate / aiohttp_rate, 3),
                                     "bare_aiohttp_cpu_ms_per_message": round(bare_aiohttp[1] * 1000 / args.messages,
                                                                              3)})
    finally:
        stand_in.kill()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

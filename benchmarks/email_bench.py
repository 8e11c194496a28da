"""Email channel throughput vs a bare aiosmtplib loop, to the same loopback SMTP sink, same connections.

    python benchmarks/email_bench.py [--messages 20000] [--connections 4] [--sink smtp-sink|aiosmtpd]

The channel run renders each message from a template (compiled once), builds the MIME message and
sends it through ``SmtpEmailChannel`` (a pool of ``--connections``) with ``send_all``; a second
channel run does the same with rendering and MIME building in two more processes
(``channels.render.pool``), a chunk ahead of the sends. The bare run
sends the same number of pre-built messages with ``aiosmtplib.SMTP.sendmail`` over the same number
of connections. The sink is postfix's C ``smtp-sink`` (Debian package ``postfix``) when available:
a Python sink would eat a core of this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels.base import Message  # noqa: E402
from channels.render.context import sample_context  # noqa: E402
from channels.transports.smtp import SmtpConfig, SmtpEmailChannel  # noqa: E402
from channels.transports.mime import build_email  # noqa: E402
from channels.render import meta, render  # noqa: E402
from channels.sending import send_all  # noqa: E402

TEMPLATE = "replenishment_reminder"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sink(kind: str, port: int) -> subprocess.Popen:
    if kind == "smtp-sink":
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        process = subprocess.Popen([binary, "-u", "nobody", "-c", f"127.0.0.1:{port}", "256"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        code = ("import asyncio,sys\nfrom aiosmtpd.controller import Controller\n"
                "class H:\n async def handle_DATA(self,s,se,e): return '250 OK'\n"
                f"c=Controller(H(),hostname='127.0.0.1',port={port});c.start()\n"
                "import time\nwhile True: time.sleep(3600)\n")
        process = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"the {kind} sink did not start on port {port}")


def contexts(n: int) -> list[dict]:
    offer = meta(TEMPLATE)["offer"]
    base = sample_context(offer, as_of=date(2026, 11, 23))
    result = []
    for i in range(n):
        ctx = dict(base)
        ctx["customer"] = {**base["customer"], "greeting_name": f"Клиент {i}", "name": f"Клиентов Клиент {i}"}
        ctx["unsubscribe_url"] = f"http://127.0.0.1:8000/unsubscribe/token{i}"
        result.append(ctx)
    return result


async def pooled_channel_run(port: int, items: list[dict], connections: int) -> float:
    """The channel layer with rendering in a second process, overlapped with sending."""
    from channels.render.pool import RenderPool

    channel = SmtpEmailChannel(SmtpConfig(host="127.0.0.1", port=port, from_address="shop@example.com",
                                          pool_size=connections))
    chunk = 2000
    loop = asyncio.get_running_loop()
    def skeletons(start: int) -> list[tuple[dict, Message]]:
        return [(ctx, Message(channel="email", to=f"c{start + i}@example.com",
                              unsubscribe_url=ctx["unsubscribe_url"], reference=f"bench:{start + i}"))
                for i, ctx in enumerate(items[start:start + chunk])]

    def submit(start: int) -> list:
        # half a chunk to each of the two render processes
        parts = skeletons(start)
        half = (len(parts) + 1) // 2
        return [pool.submit_emails(TEMPLATE, piece, "shop@example.com") for piece in (parts[:half], parts[half:])
                if piece]

    with RenderPool(workers=2) as pool:
        for warm in [pool.submit(TEMPLATE, "email", items[:1]) for _ in range(2)]:
            warm.result()  # start the workers before timing
        started = time.perf_counter()
        pending = submit(0)
        sent = 0
        for start in range(0, len(items), chunk):
            batch = [m for future in pending for m in await loop.run_in_executor(None, future.result)]
            if start + chunk < len(items):
                pending = submit(start + chunk)
            results = await send_all(channel, batch, concurrency=connections)
            sent += sum(1 for r in results if not isinstance(r, Exception))
        elapsed = time.perf_counter() - started
    await channel.close()
    assert sent == len(items), f"only {sent} of {len(items)} sent"
    return elapsed


async def channel_run(port: int, items: list[dict], connections: int) -> float:
    channel = SmtpEmailChannel(SmtpConfig(host="127.0.0.1", port=port, from_address="shop@example.com",
                                          pool_size=connections))

    def message(i: int, ctx: dict) -> Message:
        rendered = render(TEMPLATE, "email", ctx)
        return Message(channel="email", to=f"c{i}@example.com", subject=rendered.subject, text=rendered.text,
                       html=rendered.html, unsubscribe_url=ctx["unsubscribe_url"], reference=f"bench:{i}")

    started = time.perf_counter()
    sent = 0
    chunk = 2000  # bounded in-flight work, as a flow batch would be
    for start in range(0, len(items), chunk):
        batch = [message(start + i, ctx) for i, ctx in enumerate(items[start:start + chunk])]
        results = await send_all(channel, batch, concurrency=connections)
        sent += sum(1 for r in results if not isinstance(r, Exception))
    elapsed = time.perf_counter() - started
    await channel.close()
    assert sent == len(items), f"only {sent} of {len(items)} sent"
    return elapsed


async def bare_run(port: int, n: int, connections: int) -> float:
    rendered = render(TEMPLATE, "email", contexts(1)[0])
    payloads = [build_email(Message(channel="email", to=f"c{i}@example.com", subject=rendered.subject,
                                    text=rendered.text, html=rendered.html), "shop@example.com")[0]
                for i in range(min(n, 1000))]  # reused in turn: memory stays flat for large n
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        while not queue.empty():
            i = queue.get_nowait()
            await client.sendmail("shop@example.com", [f"c{i}@example.com"], payloads[i % len(payloads)])
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="alternate the runs this many times; best of each")
    parser.add_argument("--sink", choices=("smtp-sink", "aiosmtpd"),
                        default="smtp-sink" if shutil.which("smtp-sink") or os.path.exists("/usr/sbin/smtp-sink")
                        else "aiosmtpd")
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(args.sink, port)
    try:
        items = contexts(args.messages)
        channel_seconds = pooled_seconds = bare_seconds = float("inf")
        for _ in range(args.repeat):  # alternate, keep the best of each: the machine's noise is large
            bare_seconds = min(bare_seconds, asyncio.run(bare_run(port, args.messages, args.connections)))
            channel_seconds = min(channel_seconds, asyncio.run(channel_run(port, items, args.connections)))
            pooled_seconds = min(pooled_seconds, asyncio.run(pooled_channel_run(port, items, args.connections)))
    finally:
        sink.kill()
    channel_rate, bare_rate = args.messages / channel_seconds, args.messages / bare_seconds
    pooled_rate = args.messages / pooled_seconds
    print(json.dumps({"sink": args.sink, "messages": args.messages, "connections": args.connections,
                      "repeat": args.repeat,
                      "channel_per_second": round(channel_rate), "bare_per_second": round(bare_rate),
                      "ratio": round(channel_rate / bare_rate, 3),
                      "channel_render_process_per_second": round(pooled_rate),
                      "ratio_render_process": round(pooled_rate / bare_rate, 3)}, indent=2))


if __name__ == "__main__":
    main()

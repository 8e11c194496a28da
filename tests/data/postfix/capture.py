"""How ``hard.eml``, ``delayed.eml`` and ``expired.eml`` were made: real reports written by postfix 3.7.11 (Debian).

Not a test (it needs root and Debian's ``postfix``): run it as root from the worktree with
``.venv/bin/python tests/data/postfix/capture.py OUT_DIR`` to write them again. A private postfix
instance (its own configuration, queue and port 2526; nothing of the system's postfix is touched)
relays to an aiosmtpd on port 2527 that refuses ``nobody@example.org`` with 550 5.1.1 and
``full@mail.ru`` with 452 4.2.2, and keeps what else it gets: the reports postfix sends back to
each message's VERP return address (touches 101 and 102, key ``KEY``). The hard report comes at
once; the delay warning after ``delay_warning_time`` (1 s); the expired one (``Action: failed``,
4.2.2) once the queue lifetime is cut to 2 s and postfix reloaded.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

from aiosmtpd.controller import Controller

from channels.base import Message
from channels.inbound.bounces import verp_address
from channels.transports.smtp import SmtpConfig, SmtpEmailChannel

KEY = b"touchflow test fixture key"
BASE = Path("/tmp/tfpf")
MAIN_CF = """compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.shop.example
mydomain = shop.example
myorigin = $mydomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:2527
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {base}/maillog
maillog_file_prefixes = /tmp
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 1s
maximal_queue_lifetime = 1d
bounce_queue_lifetime = 1d
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
"""
SERVICES = ["127.0.0.1:2526 inet n - n - - smtpd", "pickup unix n - n 60 1 pickup", "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr", "rewrite unix - - n - - trivial-rewrite", "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce", "trace unix - - n - 0 bounce", "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush", "proxymap unix - - n - - proxymap", "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp", "showq unix n - n - - showq", "error unix - - n - - error",
            "retry unix - - n - - error", "discard unix - - n - - discard", "local unix - n n - - local",
            "anvil unix - - n - 1 anvil", "scache unix - - n - 1 scache", "postlog unix-dgram n - n - 1 postlogd"]


class Relay:
    """The far relay: refuses two recipients, keeps every other message (the reports) in order."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address == "nobody@example.org":
            return "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
        if address == "full@mail.ru":
            return "452 4.2.2 <full@mail.ru>: Mailbox full, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.kept.append((envelope.rcpt_tos[0], envelope.original_content))
        return "250 OK kept"


def postfix(*args: str) -> None:
    subprocess.run(["postfix", "-c", str(BASE / "etc"), *args], check=True)


async def send() -> None:
    channel = SmtpEmailChannel(SmtpConfig(host="127.0.0.1", port=2526, from_address="shop@shop.example", timeout=10))
    for touch, to in ((101, "nobody@example.org"), (102, "full@mail.ru")):
        await channel.send(Message(channel="email", to=to, subject="Скидка 5 % на визитки", text="Здравствуйте!",
                                   html="<p>Здравствуйте!</p>", from_name="Визитка", reference=f"touch:{touch}",
                                   unsubscribe_url="https://shop.example/unsubscribe/t0k3n",
                                   envelope_from=verp_address(touch, KEY, "bounces", "shop.example")))
    await channel.close()


def wait_for(relay: Relay, count: int, seconds: float = 30) -> None:
    until = time.monotonic() + seconds
    while len(relay.kept) < count and time.monotonic() < until:
        time.sleep(0.2)
    if len(relay.kept) < count:
        raise SystemExit(f"postfix sent {len(relay.kept)} reports, not {count}: see {BASE}/maillog")


def main(out: Path) -> None:
    shutil.rmtree(BASE, ignore_errors=True)
    for folder in ("etc", "spool", "data"):
        (BASE / folder).mkdir(parents=True)
    shutil.chown(BASE / "data", "postfix", "postfix")
    (BASE / "etc" / "main.cf").write_text(MAIN_CF.format(base=BASE))
    (BASE / "etc" / "master.cf").write_text("\n".join(SERVICES) + "\n")
    relay = Relay()
    controller = Controller(relay, hostname="127.0.0.1", port=2527)
    controller.start()
    postfix("start")
    try:
        asyncio.run(send())
        wait_for(relay, 2)
        subprocess.run(["postconf", "-c", str(BASE / "etc"), "-e", "maximal_queue_lifetime=2s",
                        "bounce_queue_lifetime=2s"], check=True)
        postfix("reload")
        wait_for(relay, 3)
    finally:
        postfix("stop")
        controller.stop()
    out.mkdir(parents=True, exist_ok=True)
    for name, (_, data) in zip(("hard", "delayed", "expired"), relay.kept):
        (out / f"{name}.eml").write_bytes(data)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tests/data/postfix"))

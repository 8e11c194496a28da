"""One bad message or one dead provider never breaks a run, and never loses a record.

Real faults, real protocols: an SMTP server that accepts connections and never greets, a Twilio
endpoint where nothing listens, an outbox on a full disk (a tiny tmpfs, or a file-size limit in a
child process), addresses with non-ASCII mailboxes through a relay without SMTPUTF8.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import signal
import subprocess
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.base import Message
from channels.sending import send_all
from channels.transports.outbox import FileChannel
from crm.importing import import_file
from crm.models import ContactPoint, Touch
from crm.persons import refresh_persons
from flows.engine import run_campaign
from flows.spec import CampaignSpec
from tests.helpers import write_csv
from tests.servers import SilentServer, SmtpServer, TwilioStub, free_port
from touchflow.errors import RunStopped
from touchflow.settings import Settings

touches = Touch.__table__
N = 30


def build(engine, tmp_path: Path, n: int = N, emails: dict[int, str] | None = None) -> None:
    """n customers K000..: an email (``emails`` overrides some) and a phone, both with marketing consent."""
    emails = emails or {}
    rows = [[f"K{i:03d}", f"Клиент {i}", emails.get(i, f"k{i}@mail.ru"), f"+7916100{i:04d}"] for i in range(n)]
    consents = [[f"K{i:03d}", channel, "marketing", "granted", "2025-01-01 10:00"]
                for i in range(n) for channel in ("email", "sms")]
    import_file(engine, "customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email", "phone"], rows))
    import_file(engine, "consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))
    refresh_persons(engine)


def spec(channel: str, name: str = "faults") -> CampaignSpec:
    return CampaignSpec(name=name, rule={"field": "name", "contains": "Клиент"}, purpose="marketing",
                        offer=f"{name}-1", template="winback", channels=[channel], policy={"quiet_hours": "off"},
                        offer_values={"discount_percent": 5})


def settings(tmp_path: Path, **kwargs) -> Settings:
    return Settings(**({"outbox_dir": str(tmp_path / "outbox"), "send_attempts": 1} | kwargs))


def run(engine, channel: str, tmp_path: Path, **kwargs) -> dict:
    return run_campaign(engine, spec(channel), now=datetime.now(timezone.utc), settings=settings(tmp_path, **kwargs))


def history(engine, run_id: str) -> list:
    with engine.connect() as conn:
        return conn.execute(select(touches).where(touches.c.run_id == run_id).order_by(touches.c.id)).all()


def test_an_smtp_server_that_never_greets_costs_a_few_timeouts_and_every_touch_is_recorded(engine, tmp_path):
    build(engine, tmp_path)
    with SilentServer() as silent:
        summary = run(engine, "email", tmp_path, email_transport="smtp", smtp_port=silent.port, smtp_timeout=0.5)
        accepted = silent.accepted
    rows = history(engine, summary["run_id"])
    assert len(rows) == N and {row.status for row in rows} == {"failed"}
    codes = Counter(row.error_code for row in rows)
    # the breaker opens after 5 failures in a row; at most the pool's other 3 connections were in flight
    assert codes["connection_failed"] == accepted and 5 <= accepted <= 8, codes
    assert codes["channel_down"] == N - accepted
    tried = next(row for row in rows if row.error_code == "connection_failed")
    assert "Timed out waiting for server ready message" in tried.error_message
    with SmtpServer() as server:                           # failed released the locks: the next run contacts all
        again = run(engine, "email", tmp_path, email_transport="smtp", smtp_port=server.port, smtp_timeout=5)
        assert len(server.messages) == N
    assert again["channels"] == {"email": {"sent": N}}


def test_an_unreachable_twilio_fails_the_sms_touches_fast_and_the_next_run_sends_them(engine, tmp_path):
    build(engine, tmp_path)
    twilio = dict(sms_transport="twilio", twilio_account_sid="AC" + "0" * 32, twilio_auth_token="secret-token",
                  twilio_from_number="+15005550006", rate_sms=0)
    summary = run(engine, "sms", tmp_path, twilio_api_base_url=f"http://127.0.0.1:{free_port()}", **twilio)
    rows = history(engine, summary["run_id"])
    assert len(rows) == N and {row.status for row in rows} == {"failed"}
    codes = Counter(row.error_code for row in rows)
    assert 5 <= codes["connection_failed"] <= 8 and codes["channel_down"] == N - codes["connection_failed"], codes
    assert "cannot reach Twilio" in next(r.error_message for r in rows if r.error_code == "connection_failed")
    with TwilioStub() as stub:
        again = run(engine, "sms", tmp_path, twilio_api_base_url=stub.url, **twilio)
        assert len(stub.created) == N
    assert again["channels"] == {"sms": {"sent": N}}


def test_a_utf8_mailbox_through_a_relay_without_smtputf8_fails_alone_and_is_not_bounced(engine, tmp_path):
    build(engine, tmp_path, 12, emails={3: "иван@почта.рф", 7: "olga@почта.рф"})
    with SmtpServer() as server:                           # aiosmtpd without SMTPUTF8
        summary = run(engine, "email", tmp_path, email_transport="smtp", smtp_port=server.port, smtp_timeout=5)
        delivered = sorted(rcpt for e in server.messages for rcpt in e.rcpt_tos)
    rows = {row.address: row for row in history(engine, summary["run_id"])}
    assert Counter(row.status for row in rows.values()) == {"sent": 11, "failed": 1}
    refused = rows["иван@почта.рф"]
    assert refused.status == "failed" and refused.error_code == "smtputf8_unsupported"
    assert "does not support SMTPUTF8" in refused.error_message
    assert rows["olga@xn--80a1acny.xn--p1ai"].status == "sent" and "olga@xn--80a1acny.xn--p1ai" in delivered
    with engine.connect() as conn:
        status = conn.execute(select(ContactPoint.__table__.c.status).where(
            ContactPoint.__table__.c.value == "иван@почта.рф")).scalar_one()
    assert status != "bounced"                             # the address is fine: only this relay cannot carry it


def test_a_message_the_file_outbox_cannot_build_is_rejected_alone(tmp_path):
    async def go(channel, messages):
        return await send_all(channel, messages, concurrency=1)

    email = FileChannel("email", tmp_path, "shop@example.com")
    results = asyncio.run(go(email, [Message(channel="email", to="a@mail.ru", text="x", headers={"X-Кампания": "1"}),
                                     Message(channel="email", to="иван@почта.рф", text="x"),
                                     Message(channel="email", to="b@mail.ru", text="x")]))
    assert [type(r).__name__ for r in results] == ["MessageRejected", "Delivery", "Delivery"]
    assert results[0].code == "unbuildable" and "cannot build the email message" in str(results[0])
    assert "To: иван@почта.рф".encode() in Path(results[1].detail).read_bytes()   # RFC 6532, as a relay would get it
    sms = FileChannel("sms", tmp_path)
    (rejected,) = asyncio.run(go(sms, [Message(channel="sms", to="+7916", text="x", metadata={"at": object()})]))
    assert type(rejected).__name__ == "MessageRejected" and len(list((tmp_path / "email").iterdir())) == 2


# ---------------------------------------------------------------- a full disk under the file outbox

def _mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` on ``path``; False when this process may not mount."""
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB filesystem (skipped where mounting is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not _mount_tmpfs(mount, "64k"):
        pytest.skip("mounting a tmpfs needs root (the file-size-limit variant covers the outbox without it)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _fill(directory: str, sizes: list[int]) -> list[tuple[str, str, str | None]]:
    """Send one email per size (its text that long) to a file outbox; each result as (kind, message, path)."""
    channel = FileChannel("email", Path(directory), "shop@example.com")
    messages = [Message(channel="email", to=f"c{i}@mail.ru", subject=f"№{i}", text=f"{i}:" + "ю" * size)
                for i, size in enumerate(sizes)]
    results = asyncio.run(send_all(channel, messages, concurrency=1))
    return [(type(r).__name__, str(r), getattr(r, "detail", None)) for r in results]


def _fill_under_a_file_size_limit(directory: str, sizes: list[int], limit: int) -> list:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return _fill(directory, sizes)


@pytest.mark.parametrize("disk", ["tmpfs", "file_size_limit"])
def test_a_full_disk_stops_the_outbox_without_partial_files(disk, tmp_path, request):
    if disk == "tmpfs":
        outbox, sizes = request.getfixturevalue("tiny_disk"), [3000] * 20     # ~8 KiB each: a few fit in 64 KiB
        results = _fill(str(outbox), sizes)
    else:                                    # a child process whose files may not grow past 40 KB (EFBIG)
        outbox, sizes = tmp_path / "outbox", [2000 * k for k in range(1, 21)]
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = pool.submit(_fill_under_a_file_size_limit, str(outbox), sizes, 40_000).result()
    kinds = [kind for kind, _, _ in results]
    written = kinds.count("Delivery")
    assert 1 <= written < len(kinds) and kinds == ["Delivery"] * written + ["ChannelFatal"] * (len(kinds) - written)
    stop = results[written][1]
    assert "disk is full" in stop and str((outbox / "email").resolve()) in stop
    files = sorted((outbox / "email").iterdir())
    assert [p.suffix for p in files] == [".eml"] * written  # no temporary or truncated file left behind
    for index, (_, _, path) in enumerate(results[:written]):
        parsed = message_from_bytes(Path(path).read_bytes(), policy=policy.default)
        assert parsed.get_content().rstrip("\n") == f"{index}:" + "ю" * sizes[index]


def test_a_full_disk_mid_campaign_stops_the_run_and_every_touch_is_recorded(engine, tmp_path, tiny_disk):
    build(engine, tmp_path)
    with pytest.raises(RunStopped, match="disk is full") as stopped:
        run(engine, "email", tmp_path, email_transport="file", outbox_dir=str(tiny_disk))
    assert str((tiny_disk / "email").resolve()) in str(stopped.value)
    with engine.connect() as conn:
        rows = conn.execute(select(touches).order_by(touches.c.id)).all()
    statuses = Counter(row.status for row in rows)
    assert set(statuses) == {"sent", "failed"} and statuses["sent"] + statuses["failed"] == N, statuses
    files = sorted((tiny_disk / "email").iterdir())
    assert len(files) == statuses["sent"] and all(p.suffix == ".eml" for p in files)
    sent_ids = {row.provider_message_id for row in rows if row.status == "sent"}
    assert {message_from_bytes(p.read_bytes(), policy=policy.default)["Message-ID"] for p in files} == sent_ids
    assert all("disk is full" in row.error_message for row in rows if row.status == "failed")
    roomy = tmp_path / "roomy"                             # room again: the next run sends exactly the failed
    again = run(engine, "email", tmp_path, email_transport="file", outbox_dir=str(roomy))
    assert again["channels"] == {"email": {"sent": statuses["failed"]}}
    assert len(list((roomy / "email").iterdir())) == statuses["failed"]


def test_a_full_disk_in_the_first_chunk_leaves_no_touch_claimed(engine, tmp_path):
    """The chunks after the fatal one were never handed over: released at once, and the next run sends them."""
    build(engine, tmp_path, 60)
    disk = tmp_path / "small"
    disk.mkdir()
    if not _mount_tmpfs(disk, "16k"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        with pytest.raises(RunStopped):
            run(engine, "email", tmp_path, email_transport="file", outbox_dir=str(disk))
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    with engine.connect() as conn:
        rows = conn.execute(select(touches.c.status, touches.c.reason)).all()
    statuses = Counter(status for status, _ in rows)
    assert set(statuses) == {"sent", "failed", "skipped"} and sum(statuses.values()) == 60, statuses
    assert {reason for status, reason in rows if status == "skipped"} == {"run_stopped"}
    again = run(engine, "email", tmp_path, email_transport="file", outbox_dir=str(tmp_path / "roomy"))
    assert again["channels"] == {"email": {"sent": 60 - statuses["sent"]}}

"""Dev and test transports: console, file outbox (.eml for email, JSON for the rest), memory.

They implement the same interface as the real ones, so flows and tests exercise the same code;
tests assert on ``MemoryChannel.outbox``, never on a mocked provider.

The file outbox writes each file whole or not at all (a temporary file in the same folder, then a
rename). A message that cannot be built is that message's failure (``MessageRejected``); a disk
that cannot take the file is the channel's (``ChannelFatal``: the run stops, nothing is lost).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import tempfile
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from channels.base import Delivery, Message
from channels.errors import ChannelFatal, MessageRejected
from channels.transports.mime import build_email, with_return_path

DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # no room, over quota, over the file-size limit


class _Outbox:
    transport = "outbox"

    def __init__(self, name: str, from_address: str = "touchflow@localhost") -> None:
        self.name = name
        self.from_address = from_address

    async def open(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release."""

    def _record(self, message: Message) -> dict:
        data = asdict(message)
        data["sent_at"] = datetime.now(timezone.utc).isoformat()
        return data


class MemoryChannel(_Outbox):
    """Keeps every message in ``outbox`` (tests); ``fail_with`` makes the next sends raise."""

    transport = "memory"

    def __init__(self, name: str, from_address: str = "touchflow@localhost") -> None:
        super().__init__(name, from_address)
        self.outbox: list[Message] = []
        self.fail_with: dict[str, Exception] = {}

    async def send(self, message: Message) -> Delivery:
        """Append the message (or raise the error planted for its address)."""
        if message.to in self.fail_with:
            raise self.fail_with[message.to]
        self.outbox.append(message)
        return Delivery(provider_id=f"mem-{uuid.uuid4().hex[:12]}")


class ConsoleChannel(_Outbox):
    """Prints each message to a stream (stdout by default)."""

    transport = "console"

    def __init__(self, name: str, from_address: str = "touchflow@localhost", stream: TextIO | None = None) -> None:
        super().__init__(name, from_address)
        self.stream = stream or sys.stdout

    async def send(self, message: Message) -> Delivery:
        """Write the message as text."""
        head = f"--- {self.name} to {message.to}" + (f": {message.subject}" if message.subject else "")
        self.stream.write(f"{head}\n{message.text}\n")
        self.stream.flush()
        return Delivery(provider_id=f"console-{uuid.uuid4().hex[:12]}")


class FileChannel(_Outbox):
    """Writes each message to ``directory``: an .eml file for email, a .json file for other channels."""

    transport = "file"

    def __init__(self, name: str, directory: Path, from_address: str = "touchflow@localhost") -> None:
        super().__init__(name, from_address)
        self.directory = Path(directory) / name

    async def open(self) -> None:
        """Create the outbox directory."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._write_error(exc, self.directory) from None

    async def send(self, message: Message) -> Delivery:
        """Write the file; its name is the provider id."""
        await self.open()
        stem = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{re.sub(r'[^A-Za-z0-9]+', '_', message.to)[:40]}"
        try:
            if self.name == "email":
                data, provider_id = build_email(message, self.from_address)
                data = with_return_path(data, message.envelope_from)  # the file has no envelope: its sender here
            else:
                data = json.dumps(self._record(message), ensure_ascii=False, indent=2).encode("utf-8")
                provider_id = stem
        except Exception as exc:  # noqa: BLE001 - whatever it is, nothing was written
            raise MessageRejected(f"cannot build the {self.name} message to {message.to!r}: "
                                  f"{type(exc).__name__}: {exc}", code="unbuildable", channel=self.name) from exc
        path = self.directory / f"{stem}.{'eml' if self.name == 'email' else 'json'}"
        self._write(path, data)
        return Delivery(provider_id=provider_id, detail=str(path))

    def _write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, then a rename."""
        temporary = None
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{path.stem}.", suffix=".tmp")
            with open(fd, "wb") as fh:
                fh.write(data)
            os.replace(temporary, path)
        except OSError as exc:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
            raise self._write_error(exc, path) from None

    def _write_error(self, exc: OSError, path: Path) -> ChannelFatal:
        """A file the outbox cannot write stops the channel: the next messages would fail the same way."""
        where = self.directory.resolve()
        if exc.errno in DISK_FULL:
            what = (f"the disk is full: cannot write {path.name} in {where} ({exc.strerror}); free space there "
                    "(or point TOUCHFLOW_OUTBOX_DIR elsewhere) and run again")
        else:
            what = (f"cannot write {path} ({exc.strerror}); check that {where} exists and is writable "
                    "(TOUCHFLOW_OUTBOX_DIR)")
        return ChannelFatal(f"the {self.name} outbox stops: {what}", code=errno.errorcode.get(exc.errno, "oserror"),
                            provider_message=str(exc), channel=self.name)

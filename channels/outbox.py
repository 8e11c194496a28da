"""Dev and test transports: console, file outbox (.eml for email, JSON for the rest), memory.

They implement the same interface as the real ones, so flows and tests exercise the same code;
tests assert on ``MemoryChannel.outbox``, never on a mocked provider.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from channels.base import Delivery, Message
from channels.mime import build_email


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
        self.directory.mkdir(parents=True, exist_ok=True)

    async def send(self, message: Message) -> Delivery:
        """Write the file; its name is the provider id."""
        await self.open()
        stem = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{re.sub(r'[^A-Za-z0-9]+', '_', message.to)[:40]}"
        if self.name == "email":
            data, message_id = build_email(message, self.from_address)
            path = self.directory / f"{stem}.eml"
            path.write_bytes(data)
            return Delivery(provider_id=message_id, detail=str(path))
        path = self.directory / f"{stem}.json"
        path.write_text(json.dumps(self._record(message), ensure_ascii=False, indent=2), encoding="utf-8")
        return Delivery(provider_id=path.stem, detail=str(path))

"""Terminal output shared by the commands: errors, JSON, tables and progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(emoji=False)  # ":email:" in a count is text, not a pictogram
err_console = Console(stderr=True, emoji=False)


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value) if value % 1 else int(value)
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(data: Any) -> str:
    """Serialise command output as JSON (dates ISO, decimals as numbers, Cyrillic kept)."""
    return json.dumps(data, default=_default, ensure_ascii=False, indent=2)


def print_json(data: Any) -> None:
    """Write ``data`` as one JSON document to stdout."""
    sys.stdout.write(dumps(data) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(description: str, total: int | None, *, unit: str = "bytes", quiet: bool = False) -> Iterator:
    """Yield ``update(completed, total)``; draws a rich progress bar on stderr unless ``quiet``."""
    if quiet or not err_console.is_terminal:
        yield lambda completed, total=None: None
        return
    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), amount, TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def update(completed: int, new_total: int | None = None) -> None:
            progress.update(task, completed=completed, total=new_total or total)

        yield update
        progress.update(task, completed=progress.tasks[0].total or 0)

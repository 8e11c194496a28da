"""What the command modules share: the JSON option, the database, dates, segments, and the error handler.

Commands raise ``touchflow.errors`` exceptions (or let the lower layers' ones through); the
root group (``TouchflowGroup``) prints ``error: message`` and exits with the error's code, in one
place. A full disk under the database is such an error too (exit 6), never a traceback.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Any, Optional

import typer
from rich.text import Text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from typer.core import TyperGroup

from crm.db import make_engine, require_schema
from touchflow.console import err_console
from touchflow.errors import RunStopped, TouchflowError, UsageError
from touchflow.settings import get_settings

JsonOption = typer.Option(False, "--json", help="Print the result as one JSON object.")
AsOfOption = typer.Option(None, "--as-of", help="Evaluate as of this date (default today), e.g. 2026-11-23.")
ALIASES = {"customer": "customers"}  # older names that keep working


class TouchflowGroup(TyperGroup):
    """The root command group: one handler for every error a user can meet, and the command aliases."""

    def get_command(self, ctx: Any, cmd_name: str):
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TouchflowError as exc:
            _exit(exc)
        except OperationalError as exc:
            full = storage_full(exc)
            if full is None:
                raise
            _exit(full)


def _exit(exc: TouchflowError) -> None:
    err_console.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def storage_full(exc: OperationalError) -> TouchflowError | None:
    """The error a full disk under the database gives, said plainly (None for other database errors)."""
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    if "database or disk is full" in text or "no space left on device" in text or "disk full" in text:
        where = get_settings().database_url
        return RunStopped(f"the database ({where}) is full: its disk has no space left. Nothing more was written; "
                          "free space and run the command again (a run's touches left 'sending' are settled as "
                          "unknown by the next run)")
    return None


def open_database(check: bool = True) -> Engine:
    """The configured database; unless ``check`` is off, refuse (with advice) one whose schema is not current."""
    engine = make_engine(get_settings().database_url)
    if check:
        require_schema(engine)
    return engine


def log_access(engine: Engine, action: str, external_id: str, command: str, detail: str | None = None) -> None:
    """Write a view, export or erasure done at the command line to the access log, before the data is read.

    The login name of the operating-system user stands for the user; the role is ``cli`` (whoever can
    run the command holds the database URL).
    """
    import getpass

    from crm.ledger.access import record_by_external_id

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    record_by_external_id(engine, external_id, action=action, username=user, role="cli", client="cli",
                          method="CLI", route=f"touchflow {command}", detail=detail)


def as_of(value: Optional[str]) -> date:
    """A ``--as-of`` / ``--since`` date (default today)."""
    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{value!r} is not a date; write it as 2026-11-23") from None


def day_bound(value: Optional[str], end: bool) -> datetime | None:
    """The first (or last) instant of a --since / --until day, in UTC; None when not given."""
    if value is None:
        return None
    return datetime.combine(as_of(value), time.max if end else time.min, tzinfo=timezone.utc)


def segment_rule(name: str, library: dict | None = None):
    """A named segment's rule (and the library it was resolved in)."""
    from segments import load_library, resolve

    library = library if library is not None else load_library()
    return resolve(name, library), library

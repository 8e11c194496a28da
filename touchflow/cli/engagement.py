"""``touchflow campaign engagement NAME``: sent, delivered, failed, opens and clicks of a campaign, per channel."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, day_bound, open_database
from touchflow.console import console, print_json
from touchflow.errors import NotFound

COLUMNS = ("sent", "delivered", "failed", "unknown", "unique_opens", "unique_clicks", "open_rate", "click_rate",
           "click_to_open")


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if isinstance(value, float) else str(value)


def engagement_command(
    name: str = typer.Argument(..., help="The campaign's name (as in its spec)."),
    since: Optional[str] = typer.Option(None, "--since", help="Touches from this date (2026-11-01)."),
    until: Optional[str] = typer.Option(None, "--until", help="Touches up to this date."),
    as_json: bool = JsonOption,
) -> None:
    """Per channel: sent, delivered, failed (by error code), unique opens and clicks, open / click / click-to-open rates.

    Opens and clicks are counted for email only, people only (scanners and prefetches are left
    out), one per touch; a click counts as an open. Rates are over the messages sent.
    """
    from crm.ledger.engagement import engagement_summary

    summary = engagement_summary(open_database(), campaign=name, since=day_bound(since, False),
                                 until=day_bound(until, True))
    channels = summary["campaigns"].get(name)
    if channels is None:
        raise NotFound(f"campaign {name!r} has sent nothing{' in that period' if since or until else ''}: check the "
                       "name with `touchflow campaign runs`")
    if as_json:
        print_json({"campaign": name, "since": summary["since"], "until": summary["until"], "channels": channels})
        return
    print_engagement(name, channels)


def print_engagement(name: str, channels: dict) -> None:
    """The engagement table of a campaign (also a part of ``campaign report``), then failures by code."""
    table = Table(title=f"{name}: engagement")
    table.add_column("channel")
    for column in COLUMNS:
        table.add_column(column.replace("_", " "), justify="right")
    for channel, line in channels.items():
        table.add_row(channel, *(_cell(line.get(c)) for c in COLUMNS))
    console.print(table)
    for channel, line in channels.items():
        if line["failures"]:
            console.print(f"{channel} failures: " + ", ".join(f"{code} {n}" for code, n in line["failures"].items()),
                          highlight=False)

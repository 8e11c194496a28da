"""``touchflow plan``: the communication plan — what is scheduled (``show``) and what the next days would do (``simulate``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, open_database
from touchflow.console import console, err_console, print_json, progress_bar
from touchflow.errors import UsageError
from touchflow.settings import campaigns_dir, get_settings

app = typer.Typer(help="The communication plan: every scheduled campaign, reminder and journey, and a simulator of "
                       "the days ahead.", no_args_is_help=True)

StartOption = typer.Option(None, "--start", help="Where the period starts, e.g. 2026-12-01 or 2026-12-01T09:00 "
                                                 "(default: now), in the default time zone unless given.")


def _start(value: Optional[str]) -> datetime:
    zone = ZoneInfo(get_settings().default_timezone)
    if value is None:
        return datetime.now(zone)
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--start {value!r} is not a date or a date and time; write 2026-12-01 or "
                         "2026-12-01T09:00") from None
    return start if start.tzinfo else start.replace(tzinfo=zone)


def _plan():
    from flows.plan import load_plan

    plan = load_plan(campaigns_dir())
    for path, problem in plan.problems:
        err_console.print(f"[yellow]left out of the plan[/]: {problem}", highlight=False)
    return plan


@app.command("show")
def show(weeks: int = typer.Option(4, "--weeks", min=1, max=52, help="The period to count runs over."),
         start: Optional[str] = StartOption, as_json: bool = JsonOption) -> None:
    """Every campaign, reminder and journey: schedule, segment, channels, offer group, priority, expected volume."""
    from flows.plan import overview

    since = _start(start)
    rows = overview(open_database(), _plan(), start=since, weeks=weeks)
    if as_json:
        print_json({"start": since.isoformat(), "weeks": weeks, "entries": rows})
        return
    table = Table(title=f"the plan, {weeks} weeks from {since:%Y-%m-%d %H:%M %Z}")
    for column in ("priority", "name", "kind", "schedule", "segment", "channels", "offer / group", "runs",
                   "selected", "audience now"):
        table.add_column(column, justify="right" if column in ("priority", "runs", "selected", "audience now")
                         else "left")
    for row in rows:
        when = f"{row['cron']} {row['timezone']}" if row["cron"] else "not scheduled"
        offer = row["offer"] + (f" / {row['offer_group']}" if row["offer_group"] else "")
        table.add_row(str(row["priority"]), row["name"], f"{row['kind']} ({row['purpose']})", when, row["segment"],
                      ", ".join(row["channels"]), offer, str(row["runs"]), str(row["selected"]),
                      str(row["audience_now"]))
    console.print(table)
    console.print("selected: the segment counted on each day it runs (before consent, caps, gaps and priorities; "
                  "`touchflow plan simulate` applies them)", highlight=False)


@app.command("simulate")
def simulate_command(days: int = typer.Option(30, "--days", min=1, max=366, help="Days to project."),
                     start: Optional[str] = StartOption, as_json: bool = JsonOption) -> None:
    """Project the next days on the current base with the real decision code; sends nothing, writes nothing."""
    from flows.simulate import simulate

    since = _start(start)
    plan = _plan()
    with progress_bar("simulating", days, unit="days", quiet=as_json) as update:
        result = simulate(open_database(), plan, start=since, days=days, settings=get_settings(), progress=update)
    if as_json:
        print_json(result)
        return
    _print_days(result)
    _print_campaigns(result)
    _print_reps(result)
    for row in result["providers"]:
        note = " [red]more than a working day[/]" if row["over_a_working_day"] else ""
        rate = f"{row['rate_per_second']:g}/s" if row["rate_per_second"] else "no limit"
        console.print(f"{row['channel']}: busiest day {row['peak_day']} messages, {row['hours_at_peak']} h at "
                      f"{rate}{note}", highlight=False)
    console.print(f"not simulated: {', '.join(result['not_simulated'])}", highlight=False)


def _print_days(result: dict[str, Any]) -> None:
    channels = sorted({c for day in result["daily"] for c in day["channels"]})
    table = Table(title=f"{result['days']} days from {result['start'][:16]}")
    table.add_column("day")
    for channel in channels:
        table.add_column(channel, justify="right")
    table.add_column("held back", justify="right")
    for day in result["daily"]:
        held = sum(day["held_back"].values())
        table.add_row(day["date"], *[str(day["channels"].get(c, 0)) for c in channels], str(held))
    console.print(table)


def _print_campaigns(result: dict[str, Any]) -> None:
    table = Table(title="campaigns")
    for column in ("campaign", "runs", "contacted", "held back (why)"):
        table.add_column(column, justify="right" if column in ("runs", "contacted") else "left")
    for name, row in result["campaigns"].items():
        why = ", ".join(f"{reason} {n}" for reason, n in sorted(row["held_back"].items(), key=lambda kv: -kv[1]))
        table.add_row(name, str(row["runs"]), str(row["contacted"]), why or "-")
    console.print(table)
    for conflict in result["conflicts"]:
        console.print(f"conflict: {conflict['campaign']} gave way to {conflict['winner']} for {conflict['people']} "
                      f"people ({conflict['reason']})", highlight=False)


def _print_reps(result: dict[str, Any]) -> None:
    for rep in result["reps"]:
        state = f"[red]overloaded on {rep['days_over_capacity']} days[/]" if rep["overloaded"] else "within capacity"
        console.print(f"rep {rep['rep']}: peak {rep['peak_load']} calls a day against {rep['capacity']}, "
                      f"{rep['waiting_at_end']} waiting at the end — {state}", highlight=False)


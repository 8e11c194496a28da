"""``touchflow journey``: journeys — list them, run one tick, see how many people are at each step and why they left."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, open_database
from touchflow.console import console, print_json, progress_bar
from touchflow.errors import UsageError
from touchflow.settings import campaigns_dir

app = typer.Typer(help="Journeys: steps per person (send, wait, branch) — list, run a tick, status.",
                  no_args_is_help=True)


def _journey(name: str):
    """The journey spec called ``name`` (or a spec file's path) in the project's campaigns."""
    from pathlib import Path

    from flows.spec import check_spec
    from flows.plan import load_plan

    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        spec = check_spec(name)
    else:
        plan = load_plan(campaigns_dir())
        entry = next((e for e in plan.entries if e.spec.name == name), None)
        if entry is None:
            journeys = [e.spec.name for e in plan.entries if e.spec.kind == "journey"]
            raise UsageError(f"no journey {name!r} in {campaigns_dir()}; journeys: {', '.join(journeys) or 'none'}")
        spec = check_spec(entry.path)
    if spec.kind != "journey":
        raise UsageError(f"{spec.name} is a {spec.kind}, not a journey: run it with `touchflow campaign run`")
    return spec


@app.command("list")
def journey_list(as_json: bool = JsonOption) -> None:
    """The project's journeys with their steps and schedules."""
    from flows.plan import load_plan

    rows = [{"name": e.spec.name, "schedule": e.spec.schedule.cron if e.spec.schedule else None,
             "steps": [f"{s.id}:{s.kind}" for s in e.spec.steps], "segment": e.spec.segment or "inline rule"}
            for e in load_plan(campaigns_dir()).entries if e.spec.kind == "journey"]
    if as_json:
        print_json(rows)
        return
    table = Table(title="journeys")
    for column in ("name", "schedule", "segment", "steps"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["schedule"] or "not scheduled", row["segment"], " → ".join(row["steps"]))
    console.print(table)


@app.command("run")
def journey_run(name: str = typer.Argument(..., help="The journey's name (or its spec file)."),
                as_json: bool = JsonOption) -> None:
    """One tick: enrol the segment's new people, then run every step that is due (through the contact policy)."""
    from flows.journeys import run_journey

    spec = _journey(name)
    with progress_bar(f"journey {spec.name}", None, unit="people", quiet=as_json) as update:
        result = run_journey(open_database(), spec, progress=lambda done: update(done))
    if as_json:
        print_json(result)
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items())) or "nothing was due"
    console.print(f"journey {spec.name} at {result['at'][:16]}: {counts}", highlight=False)
    _print_status(result["status"])


@app.command("status")
def journey_status(name: str = typer.Argument(..., help="The journey's name (or its spec file)."),
                   as_json: bool = JsonOption) -> None:
    """How many people are at each step (and due now), done, in the control group, and why people left."""
    from crm.ledger.journeys import status

    spec = _journey(name)
    result = status(open_database(), spec.name)
    result["steps"] = [step.id for step in spec.steps]
    if as_json:
        print_json(result)
        return
    _print_status(result, [step.id for step in spec.steps])


def _print_status(result: dict, order: Optional[list[str]] = None) -> None:
    table = Table(title=f"{result['journey']}: {result['entered']} entered")
    table.add_column("step")
    table.add_column("people", justify="right")
    table.add_column("due now", justify="right")
    for step in order or list(result["at_step"]):
        row = result["at_step"].get(step, {"people": 0, "due": 0})
        table.add_row(step, str(row["people"]), str(row["due"]))
    console.print(table)
    left = ", ".join(f"{reason} {n}" for reason, n in sorted(result["left_because"].items(), key=lambda kv: -kv[1]))
    console.print(f"done {result['done']}; control group {result['holdout']}; left {result['left']}"
                  + (f" ({left})" if left else ""), highlight=False)

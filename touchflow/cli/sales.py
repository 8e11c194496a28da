"""``touchflow tasks`` and ``proposal``: the sales reps' call tasks and the documents they send."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, open_database
from touchflow.cli.common import as_of as as_of_date
from touchflow.console import console, print_json
from touchflow.settings import get_settings

tasks_app = typer.Typer(help="Sales reps' call tasks: list, export the call schedule, record outcomes.",
                        no_args_is_help=True)
proposal_app = typer.Typer(help="Commercial proposals and contracts (.docx) from templates.", no_args_is_help=True)


@tasks_app.command("list")
def tasks_list(manager: Optional[str] = typer.Option(None, "--manager", help="A rep's code."),
               due: Optional[str] = typer.Option(None, "--due", help="today, or a date: tasks due by then."),
               status: str = typer.Option("open", "--status", help="open, done or all."),
               as_json: bool = JsonOption) -> None:
    """List call tasks (earliest due first) with the customer, phone, rep and window."""
    from datetime import date

    from crm.ledger.calls import list_tasks

    by = None if due is None else date.today() if due == "today" else as_of_date(due)
    rows = list_tasks(open_database(), manager=manager, due=by, status=status)
    if as_json:
        print_json({"tasks": rows, "count": len(rows)})
        return
    table = Table(title=f"{len(rows)} call tasks")
    for column in ("id", "due", "window", "customer", "phone", "manager", "campaign", "status"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["id"]), str(row["due_on"]), f"{row['window_start']}–{row['window_end']}",
                      f"{row['customer_name']} ({row['customer']})", row["phone"] or "", row["manager"] or "—",
                      row["campaign"] or "", row["outcome"] or row["status"])
    console.print(table)


@tasks_app.command("export")
def tasks_export(manager: str = typer.Option(..., "--manager", help="A rep's code."),
                 out: Path = typer.Option(..., "--out", help="CSV file (the administrator's call schedule)."),
                 as_json: bool = JsonOption) -> None:
    """Export a rep's open call tasks with their scripts as a CSV call schedule."""
    from crm.ledger.calls import export_schedule

    count = export_schedule(open_database(), manager, out)
    if as_json:
        print_json({"manager": manager, "tasks": count, "path": str(out)})
    else:
        console.print(f"{count} tasks for {manager} written to {out}", highlight=False)


@tasks_app.command("complete")
def tasks_complete(task_id: int = typer.Argument(..., help="The task id."),
                   outcome: str = typer.Option(..., "--outcome",
                                               help="reached, no_answer, callback, declined, opt_out or wrong_number."),
                   callback_on: Optional[str] = typer.Option(None, "--callback-on",
                                                             help="For callback: the agreed date."),
                   note: Optional[str] = typer.Option(None, "--note", help="What was said."),
                   opt_out: bool = typer.Option(False, "--opt-out", help="With declined: they asked not to be "
                                                                         "contacted (revokes marketing consent)."),
                   as_json: bool = JsonOption) -> None:
    """Record a call's outcome: a touch in the history; callback schedules the next call."""
    from crm.ledger.calls import complete

    done = complete(open_database(), task_id, outcome, callback_on=as_of_date(callback_on) if callback_on else None,
                    note=note, opt_out=opt_out)
    result = {"task": done.task_id, "outcome": done.outcome, "touch": done.touch_id, "next_task": done.next_task_id}
    if as_json:
        print_json(result)
    else:
        console.print(f"task {done.task_id}: {done.outcome}" + (f"; next call is task {done.next_task_id}"
                                                                 if done.next_task_id else ""), highlight=False)


@proposal_app.command("generate")
def proposal_generate(
    template: str = typer.Option("proposal", "--template", help="templates/documents/<NAME>.docx"),
    customer: str = typer.Option(..., "--customer", help="The customer's external id."),
    items: Optional[Path] = typer.Option(None, "--items", help="Lines: CSV or YAML (product, quantity, "
                                                                "unit_price, discount_percent); default: "
                                                                "repeat the last purchase."),
    out: Path = typer.Option(Path("documents-out"), "--out", help="Folder for the files."),
    pdf: bool = typer.Option(False, "--pdf", help="Also convert to PDF with LibreOffice (when installed)."),
    as_json: bool = JsonOption,
) -> None:
    """Write a proposal or contract for a customer; the document is a touch in the history."""
    from documents.proposals import generate

    done = generate(open_database(), template, customer, items_file=items, out_dir=out, pdf=pdf,
                    company=get_settings().company_name)
    result = {"path": str(done.path), "sha256": done.sha256, "touch": done.touch_id,
              "pdf": str(done.pdf) if done.pdf else None}
    if as_json:
        print_json(result)
    else:
        console.print(f"wrote {done.path}" + (f" and {done.pdf}" if done.pdf else ""), highlight=False)

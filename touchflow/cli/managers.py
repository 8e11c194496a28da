"""``touchflow managers``: the sales reps — import them, list their load against capacity, deactivate one.

Exit status of ``import``: 0 every row imported, 3 some rows rejected (kept with their reasons),
1 the file could not be imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, open_database
from touchflow.cli.common import as_of as as_of_date
from touchflow.console import console, print_json
from touchflow.errors import RowsRejected
from touchflow.settings import get_settings

app = typer.Typer(help="Sales reps: import (code, name, position, phone, email, capacity, active), list their "
                       "load, deactivate one and move their work.", no_args_is_help=True)


@app.command("import")
def managers_import(
    file: Path = typer.Argument(..., help="CSV (UTF-8 / cp1251, comma or semicolon) or XLSX file."),
    rejects: Optional[Path] = typer.Option(None, "--rejects", help="Where rejected rows go (default: "
                                                                   "FILE.rejects.csv)."),
    default_region: Optional[str] = typer.Option(None, "--default-region",
                                                 help="Region for phones without a country code (default RU)."),
    column_map: Optional[str] = typer.Option(None, "--map", help='Map other headers: "ФИО=name,Лимит=capacity".'),
    as_json: bool = JsonOption,
) -> None:
    """Upsert reps by code; a column left out keeps the stored value. Exit 3 when rows were rejected."""
    from crm.importing import ImportOptions, import_file
    from crm.importing.columns import parse_map

    settings = get_settings()
    options = ImportOptions(default_region=(default_region or settings.default_region).upper(),
                            default_timezone=settings.default_timezone, column_map=parse_map(column_map))
    summary = import_file(open_database(), "managers", file, options=options, rejects_path=rejects)
    if as_json:
        print_json(summary.to_dict())
    else:
        console.print(f"reps from {file}: {summary.rows} rows, {summary.created} new, {summary.updated} updated, "
                      f"{summary.unchanged} unchanged, {summary.rejected} rejected", highlight=False)
        if summary.rejected:
            console.print(f"rejected rows with their reasons are in {summary.rejects_path}; fix them there and "
                          "import that file again", highlight=False)
    if summary.rejected:
        raise typer.Exit(RowsRejected.exit_code)


@app.command("list")
def managers_list(day: Optional[str] = typer.Option(None, "--day", help="The day whose load to show (default "
                                                                          "today), e.g. 2026-11-23."),
                  as_json: bool = JsonOption) -> None:
    """Every rep: active or not, open tasks, calls on their list that day against capacity, customers."""
    from crm.ledger.calls import list_reps

    reps = list_reps(open_database(), as_of_date(day))
    if as_json:
        print_json({"managers": reps, "count": len(reps), "need_names": sum(r["needs_name"] for r in reps)})
        return
    table = Table(title=f"{len(reps)} reps")
    for column in ("code", "name", "position", "active", "open tasks", "load / capacity", "customers"):
        table.add_column(column)
    for rep in reps:
        name = "[red]needs a name[/]" if rep["needs_name"] else rep["name"]
        load = f"{rep['load']} / {rep['capacity']}"
        table.add_row(rep["code"], name, rep["position"] or "", "yes" if rep["active"] else "no",
                      str(rep["open_tasks"]), f"[red]{load}[/]" if rep["at_capacity"] else load, str(rep["customers"]))
    console.print(table)
    unnamed = [rep["code"] for rep in reps if rep["needs_name"]]
    if unnamed:
        console.print(f"{len(unnamed)} reps need a name (messages and documents cannot show a code): "
                      f"{', '.join(unnamed)}; import a file with code and name columns: "
                      "`touchflow managers import FILE`", highlight=False, soft_wrap=True)


@app.command("deactivate")
def managers_deactivate(code: str = typer.Argument(..., help="The rep's code."),
                        reassign_to: Optional[str] = typer.Option(None, "--reassign-to",
                                                                  help="Give all their open tasks and customers to "
                                                                       "this rep (default: share them among the "
                                                                       "active reps by load and capacity)."),
                        as_json: bool = JsonOption) -> None:
    """Deactivate a rep; their open call tasks and customers move to other reps, each move recorded."""
    from crm.ledger.calls import deactivate

    result = deactivate(open_database(), code, reassign_to=reassign_to)
    if as_json:
        print_json(result)
        return
    moved = "; ".join(f"{what} to " + ", ".join(f"{rep} {n}" for rep, n in sorted(result[what].items()))
                      for what in ("tasks", "customers") if result[what])
    console.print(f"{code} deactivated" + (f"; {moved}" if moved else "; nothing to move"), highlight=False)

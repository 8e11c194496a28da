"""``touchflow import``: customers, purchases, events and consents from the CSV / XLSX files CRMs write.

Exit status: 0 every row imported, 3 some rows rejected (kept with their reasons), 1 the file
could not be imported (unreadable, unknown or missing columns).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from touchflow.cli.common import JsonOption, open_database
from touchflow.console import console, print_json, progress_bar
from touchflow.errors import RowsRejected
from touchflow.settings import get_settings

app = typer.Typer(help="Import customers, purchases, events and consents from CSV or XLSX.", no_args_is_help=True)

FILE = typer.Argument(..., help="CSV (UTF-8 / cp1251, comma or semicolon) or XLSX file.")
REJECTS = typer.Option(None, "--rejects", help="Where rejected rows go (default: FILE.rejects.csv).")
REGION = typer.Option(None, "--default-region", help="Region for phones without a country code (default RU).")
MAP = typer.Option(None, "--map", help='Map other headers: "Tel=phone,Client Code=external_id".')
BATCH = typer.Option(None, "--batch-size", help="Rows written per transaction (default 20000).")
KINDS = {
    "customers": "Upsert customers by external_id with their email, phone, Telegram chat and attr.* attributes.",
    "purchases": "Add purchase lines (customer, date, product, category, quantity, amount, currency).",
    "events": "Add service events and visits (customer, date, kind such as haircut or car_service).",
    "consents": "Append consent grants and revocations (customer, channel, purpose, status, at, source, wording).",
}


def run_import(kind: str, file: Path, rejects: Optional[Path], default_region: Optional[str],
               column_map: Optional[str], batch_size: Optional[int], as_json: bool) -> None:
    """Import one file, refresh what depends on it (statistics, seals) and report."""
    from crm.importing import ImportOptions, import_file
    from crm.importing.columns import parse_map

    settings = get_settings()
    options = ImportOptions(default_region=(default_region or settings.default_region).upper(),
                            default_timezone=settings.default_timezone, currency=settings.currency,
                            batch_size=batch_size or settings.import_batch_size, column_map=parse_map(column_map))
    engine = open_database()
    with progress_bar(f"import {kind}", None, quiet=as_json) as update:
        summary = import_file(engine, kind, file, options=options, rejects_path=rejects, progress=update)
    result = summary.to_dict()
    if kind == "consents" and summary.created:
        from crm.ledger.audit import seal

        seal(engine, tables=("consents",))
    if kind != "consents" and summary.touched_customers != set():
        from segments.stats import refresh

        started = time.perf_counter()
        refresh(engine, summary.touched_customers)
        result["stats_refresh_seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        print_json(result)
    else:
        _print(kind, file, summary)
    if summary.rejected:
        raise typer.Exit(RowsRejected.exit_code)


def _print(kind: str, file: Path, summary) -> None:
    console.print(
        f"{kind} from {file}: {summary.rows} rows, [green]{summary.accepted} accepted[/] "
        f"({summary.created} new, {summary.updated} updated, {summary.unchanged} unchanged), "
        f"[{'red' if summary.rejected else 'green'}]{summary.rejected} rejected[/] "
        f"in {summary.seconds:.1f}s ({summary.rows_per_second:,.0f} rows/s)", highlight=False)
    if summary.rejected:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.rejection_reasons.items()))
        console.print(f"rejected rows with their reasons are in {summary.rejects_path} ({reasons}); "
                      "fix them there and import that file again", highlight=False)


def _command(kind: str):
    def command(file: Path = FILE, rejects: Optional[Path] = REJECTS, default_region: Optional[str] = REGION,
                column_map: Optional[str] = MAP, batch_size: Optional[int] = BATCH,
                as_json: bool = JsonOption) -> None:
        run_import(kind, file, rejects, default_region, column_map, batch_size, as_json)
    command.__doc__ = KINDS[kind] + "\n\nExit status: 0 all rows imported, 3 some rows rejected, 1 the file could " \
                                    "not be imported."
    command.__name__ = f"import_{kind}"
    return command


for _kind in KINDS:
    app.command(_kind)(_command(_kind))

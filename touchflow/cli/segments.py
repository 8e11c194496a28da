"""``touchflow segment``, ``touchflow metrics`` and ``touchflow audience``: who, measured, and exported."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from segments import load_library
from touchflow.cli.common import AsOfOption, JsonOption, open_database, segment_rule
from touchflow.cli.common import as_of as as_of_date
from touchflow.console import console, print_json
from touchflow.errors import UsageError

app = typer.Typer(help="Named segments: list, show the rule and its SQL, preview, refresh statistics.",
                  no_args_is_help=True)
audience = typer.Typer(help="Export a segment as an advertising audience.", no_args_is_help=True)


@app.command("list")
def segment_list(as_json: bool = JsonOption) -> None:
    """List the named segments (shipped and from TOUCHFLOW_SEGMENTS_PATH)."""
    library = load_library()
    items = [{"name": s.name, "description": s.description, "source": s.source} for s in library.values()]
    if as_json:
        print_json({"segments": items})
        return
    table = Table(title=f"{len(items)} segments")
    for column in ("name", "description", "source"):
        table.add_column(column)
    for item in items:
        table.add_row(item["name"], item["description"], Path(item["source"]).name)
    console.print(table)


@app.command("show")
def segment_show(name: str = typer.Argument(..., help="Segment name."), as_of: Optional[str] = AsOfOption,
                 as_json: bool = JsonOption) -> None:
    """Show a segment's rule and the SQL it compiles to (values stay bound parameters)."""
    import yaml

    from segments import compiled_sql

    rule, library = segment_rule(name)
    segment = library[name]
    raw = yaml.safe_load(Path(segment.source).read_text(encoding="utf-8"))["segments"][name]["rule"]
    sql = compiled_sql(open_database(), rule, as_of=as_of_date(as_of), library=library)
    if as_json:
        print_json({"name": name, "description": segment.description, "source": segment.source, "rule": raw,
                    "sql": sql})
        return
    console.print(f"[bold]{name}[/]: {segment.description}\n[dim]{segment.source}[/]", highlight=False)
    console.print(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), highlight=False)
    console.print(sql, highlight=False, soft_wrap=True)


@app.command("preview")
def segment_preview(name: str = typer.Argument(..., help="Segment name."),
                    limit: int = typer.Option(10, "--limit", min=0, help="How many customers to show."),
                    as_of: Optional[str] = AsOfOption, as_json: bool = JsonOption) -> None:
    """Count a segment and show a sample with the attributes, statistics and due needs that matched."""
    from segments import preview, why

    rule, library = segment_rule(name)
    result = preview(open_database(), rule, limit=limit, as_of=as_of_date(as_of), library=library)
    if as_json:
        print_json({"name": name, **result})
        return
    console.print(f"[bold]{name}[/]: {result['count']:,} customers as of {result['as_of']}", highlight=False)
    table = Table()
    for column in ("customer", "name", "region", "manager", "why"):
        table.add_column(column)
    for item in result["sample"]:
        table.add_row(item["external_id"], item["name"], item["region"] or "", item["manager"] or "",
                      "; ".join(why(item)))
    console.print(table)


@app.command("refresh")
def segment_refresh(as_json: bool = JsonOption) -> None:
    """Recompute purchase statistics, RFM scores and predicted needs for every customer."""
    from segments.stats import refresh

    started = time.perf_counter()
    counts = refresh(open_database())
    counts["seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        print_json(counts)
    else:
        console.print(f"refreshed: {counts['customers_with_purchases']:,} customers with purchases, "
                      f"{counts['replenishment']:,} replenishment and {counts['service']:,} service predictions "
                      f"in {counts['seconds']}s", highlight=False)


def metrics(
    segment: Optional[str] = typer.Option(None, "--segment", help="Only customers of this segment."),
    by: Optional[str] = typer.Option(None, "--by",
                                     help="Slice by region, manager, customer, category, product or month."),
    since: Optional[str] = typer.Option(None, "--since", help="Purchases from this date (e.g. campaign start)."),
    until: Optional[str] = typer.Option(None, "--until", help="Purchases up to this date (default today)."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Campaign budget: adds acquisition rate and cost "
                                                                  "per lead (the budget prorated across slices)."),
    as_json: bool = JsonOption,
) -> None:
    """Average check, frequency, AIPT, ALD, CLV, recency, wallet size and share, acquisition and cost per lead."""
    from segments.metrics import compute

    rule, library = segment_rule(segment) if segment else (None, None)
    result = compute(open_database(), rule=rule, library=library, by=by,
                     since=as_of_date(since) if since else None, until=as_of_date(until), budget=budget)
    result["segment"] = segment
    if as_json:
        print_json(result)
        return
    rows = result["rows"]
    columns = [c for c in ("slice", "customers", "buyers", "purchases", "revenue", "average_check",
                           "purchase_frequency", "aipt", "aipt_days", "purchase_gap_days", "ald_days", "clv",
                           "recency_days", "size_of_wallet", "share_of_wallet", "acquisition_rate", "budget_share",
                           "cost_per_lead") if rows and c in rows[0]]
    title = f"metrics{' of ' + segment if segment else ''}{' by ' + by if by else ''}"
    table = Table(title=title)

    def cell(value: object) -> str:
        return "—" if value is None else f"{value:,}" if isinstance(value, (int, float)) else str(value)

    if rows and "customers" in rows[0]:  # few slices, many metrics: one column per slice
        table.add_column("metric")
        for row in rows:
            table.add_column(str(row["slice"]), justify="right")
        for column in columns[1:]:
            table.add_row(column, *(cell(row[column]) for row in rows))
    else:
        for column in columns:
            table.add_column(column, justify="left" if column == "slice" else "right")
        for row in rows:
            table.add_row(*(cell(row[c]) for c in columns))
    console.print(table)


@audience.command("export")
def audience_export(
    segment: str = typer.Argument(..., help="Segment name."),
    out: Path = typer.Option(..., "--out", help="CSV file to write (type, identifier)."),
    hash_name: Optional[str] = typer.Option(None, "--hash", help="Hash identifiers: sha256."),
    as_of: Optional[str] = AsOfOption,
    as_json: bool = JsonOption,
) -> None:
    """Export a segment's emails and phones (marketing consent only) as an ad-platform audience."""
    from segments.audience import export

    rule, library = segment_rule(segment)
    if hash_name not in (None, "sha256"):
        raise UsageError(f"--hash {hash_name!r} is not supported; use --hash sha256")
    summary = export(open_database(), rule, out, library=library, as_of=as_of_date(as_of), hash_name=hash_name)
    if as_json:
        print_json(summary.to_dict())
    else:
        console.print(f"wrote {summary.emails} emails and {summary.phones} phones"
                      f"{' (SHA-256)' if summary.hashed else ''} to {summary.path}", highlight=False)

"""The ``touchflow`` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from sqlalchemy.engine import Engine

from crm.db import SchemaError, current_revision, head_revision, make_engine, require_schema, upgrade
from touchflow import __version__
from touchflow.console import console, fail, print_json, progress_bar
from touchflow.settings import get_settings

app = typer.Typer(help="touchflow: omnichannel outreach with one contact per person and a full history.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich")
db_app = typer.Typer(help="Create and upgrade the database schema.", no_args_is_help=True)
import_app = typer.Typer(help="Import customers, purchases, events and consents from CSV or XLSX.",
                         no_args_is_help=True)
customers_app = typer.Typer(help="Look at customer records.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(customers_app, name="customers")
segment_app = typer.Typer(help="Named segments: list, show the rule and its SQL, preview, refresh statistics.",
                          no_args_is_help=True)
audience_app = typer.Typer(help="Export a segment as an advertising audience.", no_args_is_help=True)
app.add_typer(segment_app, name="segment")
app.add_typer(audience_app, name="audience")

JsonOption = typer.Option(False, "--json", help="Print the result as one JSON object.")


def _version(value: bool) -> None:
    if value:
        console.print(f"touchflow {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """touchflow: omnichannel outreach with one contact per person and a full history."""


def open_database(check: bool = True) -> Engine:
    """Open TOUCHFLOW_DATABASE_URL; unless ``check`` is off, exit with advice if the schema is not current."""
    engine = make_engine(get_settings().database_url)
    if check:
        try:
            require_schema(engine)
        except SchemaError as exc:
            fail(str(exc))
    return engine


@db_app.command("upgrade")
def db_upgrade(as_json: bool = JsonOption) -> None:
    """Create the schema or migrate it to this touchflow's version; data is kept."""
    engine = open_database(check=False)
    try:
        before, after = upgrade(engine)
    except Exception as exc:
        fail(f"migration failed on {engine.url.render_as_string(hide_password=True)}: {exc}")
    result = {"database": engine.url.render_as_string(hide_password=True), "before": before, "after": after}
    if as_json:
        print_json(result)
    elif before == after:
        console.print(f"schema already current ({after}) in {result['database']}")
    else:
        console.print(f"schema upgraded {before or 'empty'} → {after} in {result['database']}")


@db_app.command("current")
def db_current(as_json: bool = JsonOption) -> None:
    """Show the schema revision of the database and the one this touchflow needs."""
    engine = open_database(check=False)
    try:
        current = current_revision(engine)
    except Exception as exc:
        fail(f"cannot open {engine.url.render_as_string(hide_password=True)}: {exc}")
    head = head_revision()
    result = {"database": engine.url.render_as_string(hide_password=True), "current": current, "head": head,
              "up_to_date": current == head}
    if as_json:
        print_json(result)
    else:
        state = "up to date" if current == head else "run `touchflow db upgrade`"
        console.print(f"{result['database']}: {current or 'no schema'} (needs {head}) — {state}")


def _import(kind: str, file: Path, rejects: Optional[Path], default_region: Optional[str], column_map: Optional[str],
            batch_size: Optional[int], as_json: bool) -> None:
    from crm.columns import ColumnError, parse_map
    from crm.importing import ImportFailed, ImportOptions, import_file

    settings = get_settings()
    try:
        mapping = parse_map(column_map)
    except ColumnError as exc:
        fail(str(exc))
    options = ImportOptions(default_region=(default_region or settings.default_region).upper(),
                            default_timezone=settings.default_timezone, currency=settings.currency,
                            batch_size=batch_size or settings.import_batch_size, column_map=mapping)
    engine = open_database()
    try:
        with progress_bar(f"import {kind}", None, quiet=as_json) as update:
            summary = import_file(engine, kind, file, options=options, rejects_path=rejects, progress=update)
    except ImportFailed as exc:
        fail(str(exc))
    result = summary.to_dict()
    if kind != "consents" and summary.touched_customers != set():
        from segments.stats import refresh

        started = time.perf_counter()
        refresh(engine, summary.touched_customers)
        result["stats_refresh_seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        print_json(result)
    else:
        console.print(
            f"{kind} from {file}: {summary.rows} rows, [green]{summary.accepted} accepted[/] "
            f"({summary.created} new, {summary.updated} updated, {summary.unchanged} unchanged), "
            f"[{'red' if summary.rejected else 'green'}]{summary.rejected} rejected[/] "
            f"in {summary.seconds:.1f}s ({summary.rows_per_second:,.0f} rows/s)", highlight=False)
        if summary.rejected:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.rejection_reasons.items()))
            console.print(f"rejected rows with their reasons are in {summary.rejects_path} ({reasons}); "
                          "fix them there and import that file again", highlight=False)
    if summary.rejected:
        raise typer.Exit(3)


_FILE = typer.Argument(..., help="CSV (UTF-8 / cp1251, comma or semicolon) or XLSX file.")
_REJECTS = typer.Option(None, "--rejects", help="Where rejected rows go (default: FILE.rejects.csv).")
_REGION = typer.Option(None, "--default-region", help="Region for phones without a country code (default RU).")
_MAP = typer.Option(None, "--map", help='Map other headers: "Tel=phone,Client Code=external_id".')
_BATCH = typer.Option(None, "--batch-size", help="Rows written per transaction (default 10000).")


@import_app.command("customers")
def import_customers(file: Path = _FILE, rejects: Optional[Path] = _REJECTS, default_region: Optional[str] = _REGION,
                     column_map: Optional[str] = _MAP, batch_size: Optional[int] = _BATCH,
                     as_json: bool = JsonOption) -> None:
    """Upsert customers by external_id with their email, phone, Telegram chat and attr.* attributes.

    Exit status: 0 all rows imported, 3 some rows rejected, 1 the file could not be imported.
    """
    _import("customers", file, rejects, default_region, column_map, batch_size, as_json)


@import_app.command("purchases")
def import_purchases(file: Path = _FILE, rejects: Optional[Path] = _REJECTS, default_region: Optional[str] = _REGION,
                     column_map: Optional[str] = _MAP, batch_size: Optional[int] = _BATCH,
                     as_json: bool = JsonOption) -> None:
    """Add purchase lines (customer, date, product, category, quantity, amount, currency).

    Exit status: 0 all rows imported, 3 some rows rejected, 1 the file could not be imported.
    """
    _import("purchases", file, rejects, default_region, column_map, batch_size, as_json)


@import_app.command("events")
def import_events(file: Path = _FILE, rejects: Optional[Path] = _REJECTS, default_region: Optional[str] = _REGION,
                  column_map: Optional[str] = _MAP, batch_size: Optional[int] = _BATCH,
                  as_json: bool = JsonOption) -> None:
    """Add service events and visits (customer, date, kind such as haircut or car_service).

    Exit status: 0 all rows imported, 3 some rows rejected, 1 the file could not be imported.
    """
    _import("events", file, rejects, default_region, column_map, batch_size, as_json)


@import_app.command("consents")
def import_consents(file: Path = _FILE, rejects: Optional[Path] = _REJECTS, default_region: Optional[str] = _REGION,
                    column_map: Optional[str] = _MAP, batch_size: Optional[int] = _BATCH,
                    as_json: bool = JsonOption) -> None:
    """Append consent grants and revocations (customer, channel, purpose, status, at, source, wording).

    Exit status: 0 all rows imported, 3 some rows rejected, 1 the file could not be imported.
    """
    _import("consents", file, rejects, default_region, column_map, batch_size, as_json)


@customers_app.command("duplicates")
def customers_duplicates(as_json: bool = JsonOption) -> None:
    """List groups of customer records that share a normalised phone or email (one person)."""
    from crm.persons import duplicate_groups

    groups = duplicate_groups(open_database())
    if as_json:
        print_json({"groups": [g.to_dict() for g in groups], "count": len(groups)})
        return
    if not groups:
        console.print("no customer records share a phone or email")
        return
    table = Table(title=f"{len(groups)} people with several customer records")
    table.add_column("records")
    table.add_column("names")
    table.add_column("shared addresses")
    for group in groups:
        table.add_row(", ".join(group.external_ids), ", ".join(group.names), ", ".join(group.shared))
    console.print(table)


@customers_app.command("show")
def customers_show(external_id: str = typer.Argument(..., help="The customer's external id."),
                   as_json: bool = JsonOption) -> None:
    """Show one customer card: fields, attributes, contact points, consents, purchases, visits, touches."""
    from crm.cards import customer_card

    card = customer_card(open_database(), external_id)
    if card is None:
        fail(f"no customer with external id {external_id!r}; list duplicates or import customers first")
    if as_json:
        print_json(card)
        return
    from crm.cards import render_card

    render_card(console, card)


@app.command("stats")
def stats(as_json: bool = JsonOption) -> None:
    """Count what the database holds (customers, contact points, consents, purchases, events, touches)."""
    from crm.cards import base_stats

    data = base_stats(open_database())
    if as_json:
        print_json(data)
        return
    table = Table(title="touchflow base")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in data.items():
        table.add_row(key, f"{value:,}")
    console.print(table)


@app.command("demo")
def demo(
    customers: int = typer.Option(300, "--customers", min=60, help="How many customers to generate."),
    directory: Path = typer.Option(Path("touchflow-demo"), "--dir", help="Where the demo base and files go."),
    seed: int = typer.Option(7, "--seed", help="Random seed (same seed, same base)."),
    as_json: bool = JsonOption,
) -> None:
    """Build (or rebuild) a demo base exercising every scenario in MISSION.md, through the real importer."""
    from touchflow.demo import run_demo

    result = run_demo(directory, customers=customers, seed=seed, quiet=as_json)
    if as_json:
        print_json(result)


def _library():
    from segments import SegmentError, load_library

    try:
        return load_library()
    except SegmentError as exc:
        fail(str(exc))


def _as_of(value: Optional[str]):
    from datetime import date

    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--as-of {value!r} is not a date; write it as 2026-11-23")


_AS_OF = typer.Option(None, "--as-of", help="Evaluate as of this date (default today), e.g. 2026-11-23.")


def _rule(name: str, library):
    from segments import SegmentError, resolve

    try:
        return resolve(name, library)
    except SegmentError as exc:
        fail(str(exc))


@segment_app.command("list")
def segment_list(as_json: bool = JsonOption) -> None:
    """List the named segments (shipped and from TOUCHFLOW_SEGMENTS_PATH)."""
    library = _library()
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


@segment_app.command("show")
def segment_show(name: str = typer.Argument(..., help="Segment name."), as_of: Optional[str] = _AS_OF,
                 as_json: bool = JsonOption) -> None:
    """Show a segment's rule and the SQL it compiles to (values stay bound parameters)."""
    import yaml

    from segments import compiled_sql

    library = _library()
    rule = _rule(name, library)
    segment = library[name]
    raw = yaml.safe_load(Path(segment.source).read_text(encoding="utf-8"))["segments"][name]["rule"]
    sql = compiled_sql(open_database(), rule, as_of=_as_of(as_of), library=library)
    if as_json:
        print_json({"name": name, "description": segment.description, "source": segment.source, "rule": raw,
                    "sql": sql})
        return
    console.print(f"[bold]{name}[/]: {segment.description}\n[dim]{segment.source}[/]", highlight=False)
    console.print(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), highlight=False)
    console.print(sql, highlight=False, soft_wrap=True)


@segment_app.command("preview")
def segment_preview(name: str = typer.Argument(..., help="Segment name."),
                    limit: int = typer.Option(10, "--limit", min=0, help="How many customers to show."),
                    as_of: Optional[str] = _AS_OF, as_json: bool = JsonOption) -> None:
    """Count a segment and show a sample with the attributes, statistics and due needs that matched."""
    from segments import preview

    library = _library()
    result = preview(open_database(), _rule(name, library), limit=limit, as_of=_as_of(as_of), library=library)
    if as_json:
        print_json({"name": name, **result})
        return
    console.print(f"[bold]{name}[/]: {result['count']:,} customers as of {result['as_of']}", highlight=False)
    table = Table()
    for column in ("customer", "name", "region", "manager", "why"):
        table.add_column(column)
    for item in result["sample"]:
        why = []
        if "attributes" in item:
            why.append(", ".join(f"{k}={v}" for k, v in item["attributes"].items()))
        for need in item.get("due", []):
            why.append(f"{need['basis']} {need['key']}: due {need['due_on']} (last {need['last_on']}, "
                       + (f"{need['avg_daily_use']:.2f}/day" if need["avg_daily_use"] else
                          f"every {need['interval_days']} days, {need['interval_source']}") + ")")
        if "rfm" in item:
            why.append(f"RFM {item['rfm']['r']}{item['rfm']['f']}{item['rfm']['m']} {item['rfm']['group']}")
        elif "stats" in item:
            why.append(f"last purchase {item['stats']['last_purchase_on']}, {item['stats']['purchase_count']} "
                       f"purchases, AIPT {item['stats']['aipt_days']}")
        if item.get("birthday"):
            why.append(f"birthday {item['birthday']}")
        table.add_row(item["external_id"], item["name"], item["region"] or "", item["manager"] or "", "; ".join(why))
    console.print(table)


@segment_app.command("refresh")
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


@app.command("metrics")
def metrics(
    segment: Optional[str] = typer.Option(None, "--segment", help="Only customers of this segment."),
    by: Optional[str] = typer.Option(None, "--by", help="Slice by region, manager, category or month."),
    since: Optional[str] = typer.Option(None, "--since", help="Purchases from this date (e.g. campaign start)."),
    until: Optional[str] = typer.Option(None, "--until", help="Purchases up to this date (default today)."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Campaign budget: adds acquisition rate and CPA."),
    as_json: bool = JsonOption,
) -> None:
    """Average check, frequency, AIPT, ALD, CLV, recency, wallet size and share, acquisition and CPA."""
    from segments import SegmentError
    from segments.metrics import compute

    library = _library() if segment else None
    rule = _rule(segment, library) if segment else None
    try:
        result = compute(open_database(), rule=rule, library=library, by=by,
                         since=_as_of(since) if since else None, until=_as_of(until), budget=budget)
    except SegmentError as exc:
        fail(str(exc))
    result["segment"] = segment
    if as_json:
        print_json(result)
        return
    rows = result["rows"]
    columns = [c for c in ("slice", "customers", "buyers", "purchases", "revenue", "average_check",
                           "purchase_frequency", "aipt_days", "ald_days", "clv", "recency_days", "size_of_wallet",
                           "share_of_wallet", "acquisition_rate", "cost_per_acquisition") if rows and c in rows[0]]
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


@audience_app.command("export")
def audience_export(
    segment: str = typer.Argument(..., help="Segment name."),
    out: Path = typer.Option(..., "--out", help="CSV file to write (type, identifier)."),
    hash_name: Optional[str] = typer.Option(None, "--hash", help="Hash identifiers: sha256."),
    as_of: Optional[str] = _AS_OF,
    as_json: bool = JsonOption,
) -> None:
    """Export a segment's emails and phones (marketing consent only) as an ad-platform audience."""
    from segments.audience import export

    library = _library()
    rule = _rule(segment, library)
    if hash_name not in (None, "sha256"):
        fail(f"--hash {hash_name!r} is not supported; use --hash sha256")
    summary = export(open_database(), rule, out, library=library, as_of=_as_of(as_of), hash_name=hash_name)
    if as_json:
        print_json(summary.to_dict())
    else:
        console.print(f"wrote {summary.emails} emails and {summary.phones} phones"
                      f"{' (SHA-256)' if summary.hashed else ''} to {summary.path}", highlight=False)

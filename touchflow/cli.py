"""The ``touchflow`` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from sqlalchemy.engine import Engine

from crm.db import (
    SchemaError,
    current_revision,
    head_revision,
    make_engine,
    require_schema,
    upgrade,
)
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
app.add_typer(customers_app, name="customer", help="The same as customers (export, erase, show …).")
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
    if kind == "consents" and summary.created:
        from crm.audit import seal

        seal(engine)
    if kind == "customers" and summary.touched_customers != set():
        from crm.persons import refresh_persons

        result["people"] = refresh_persons(engine)
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
_BATCH = typer.Option(None, "--batch-size", help="Rows written per transaction (default 20000).")


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
    base_only: bool = typer.Option(False, "--base-only", help="Build the base; run no campaigns."),
    as_json: bool = JsonOption,
) -> None:
    """Build a demo base for every scenario in MISSION.md and run its campaigns end to end.

    The base goes in through the real importer (dirty rows included); then the campaigns run on the
    embedded default: SQLite, a local SMTP server writing received mail to DIR/outbox/email, file
    outboxes for SMS, voice and Telegram, call tasks for the three reps.
    """
    from touchflow.demo import run_demo

    result = run_demo(directory, customers=customers, seed=seed, quiet=as_json, campaigns=not base_only)
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


def _day_bound(value: Optional[str], end: bool):
    """The first (or last) instant of a --since / --until day, in UTC; None when not given."""
    from datetime import datetime, time, timezone

    if value is None:
        return None
    return datetime.combine(_as_of(value), time.max if end else time.min, tzinfo=timezone.utc)


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


template_app = typer.Typer(help="Message templates: list, check every part, preview for a customer.",
                           no_args_is_help=True)
channels_app = typer.Typer(help="Channels and their transports: list, send a test message.", no_args_is_help=True)
telegram_app = typer.Typer(help="Bind Telegram chats to customers (deep links) and run the bot.",
                           no_args_is_help=True)
app.add_typer(template_app, name="template")
app.add_typer(channels_app, name="channels")
app.add_typer(telegram_app, name="telegram")


def _render_for(name: str, channel: str, context: dict):
    from channels.render import render

    settings = get_settings()
    return render(name, channel, context, sms_max_segments=settings.sms_max_segments,
                  sms_over_limit=settings.sms_over_limit)


@template_app.command("list")
def template_list(as_json: bool = JsonOption) -> None:
    """List message templates, their channels and descriptions."""
    from channels.render import channels_of, meta, template_names, templates_dir

    items = [{"name": n, "channels": channels_of(n), "description": meta(n).get("description", "")}
             for n in template_names()]
    if as_json:
        print_json({"templates": items, "directory": str(templates_dir())})
        return
    table = Table(title=f"templates in {templates_dir()}")
    for column in ("name", "channels", "description"):
        table.add_column(column)
    for item in items:
        table.add_row(item["name"], ", ".join(item["channels"]), item["description"])
    console.print(table)


@template_app.command("check")
def template_check(name: str = typer.Argument(..., help="Template folder name."),
                   customers: int = typer.Option(5, "--customers", min=0, help="Sample customers from the base."),
                   segment: Optional[str] = typer.Option(None, "--segment",
                                                         help="Take the sample from this segment (default: the "
                                                              "template's meta.yaml segment, else anyone)."),
                   as_json: bool = JsonOption) -> None:
    """Render every part against sample customers (and a made-up one) and report each error."""
    from channels.context import contexts_for, sample_context
    from channels.render import TemplateError, channels_of, meta

    try:
        channels = channels_of(name)
    except TemplateError as exc:
        fail(str(exc))
    offer = meta(name).get("offer", {})
    contexts = {"SAMPLE": sample_context(offer)}
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        require_schema(engine)
        from sqlalchemy import select

        from crm.models import Customer

        segment = segment or meta(name).get("segment")
        if segment:
            from segments import customer_ids

            library = _library()
            ids = next(customer_ids(engine, _rule(segment, library), library=library, page_size=customers), [])
        else:
            with engine.connect() as conn:
                ids = list(conn.execute(select(Customer.__table__.c.id).order_by(Customer.__table__.c.id)
                                        .limit(customers)).scalars())
        for context in contexts_for(engine, ids, offer=offer, company=settings.company_name).values():
            contexts[context["customer"]["external_id"]] = context
    except SchemaError:
        pass  # no base: the made-up customer alone
    results = []
    for label, context in contexts.items():
        for channel in channels:
            try:
                rendered = _render_for(name, channel, context)
                results.append({"customer": label, "channel": channel, "ok": True, "warnings": rendered.warnings,
                                "sms_segments": rendered.sms.segments if rendered.sms else None})
            except TemplateError as exc:
                results.append({"customer": label, "channel": channel, "ok": False, "error": str(exc)})
    errors = [r for r in results if not r["ok"]]
    if as_json:
        print_json({"template": name, "checked": len(results), "errors": len(errors), "results": results})
    else:
        for result in results:
            mark = "[green]ok[/]" if result["ok"] else f"[red]{result['error']}[/]"
            extra = f" ({result['sms_segments']} SMS segments)" if result.get("sms_segments") else ""
            console.print(f"{result['customer']:>10} {result['channel']:<9} {mark}{extra}", highlight=False)
        console.print(f"{len(results)} renderings, {len(errors)} errors")
    if errors:
        raise typer.Exit(1)


@template_app.command("preview")
def template_preview(name: str = typer.Argument(..., help="Template folder name."),
                     customer: str = typer.Option(..., "--customer", help="The customer's external id."),
                     channel: Optional[str] = typer.Option(None, "--channel", help="Only this channel."),
                     as_json: bool = JsonOption) -> None:
    """Print what one customer would receive from a template, per channel."""
    from dataclasses import asdict

    from sqlalchemy import select

    from channels.context import contexts_for
    from channels.render import TemplateError, channels_of, meta
    from crm.models import Customer

    engine = open_database()
    with engine.connect() as conn:
        customer_id = conn.execute(select(Customer.__table__.c.id)
                                   .where(Customer.__table__.c.external_id == customer)).scalar()
    if customer_id is None:
        fail(f"no customer with external id {customer!r}")
    try:
        channels = [channel] if channel else channels_of(name)
        context = contexts_for(engine, [customer_id], offer=meta(name).get("offer", {}),
                               company=get_settings().company_name)[customer_id]
        rendered = [_render_for(name, c, context) for c in channels]
    except TemplateError as exc:
        fail(str(exc))
    if as_json:
        print_json({"template": name, "customer": customer, "parts": [asdict(r) for r in rendered]})
        return
    for r in rendered:
        console.rule(f"{r.channel}" + (f" — {r.subject}" if r.subject else ""))
        console.print(r.text, highlight=False, markup=False)
        if r.sms:
            console.print(f"[dim]{r.sms.encoding}, {r.sms.length} characters, {r.sms.segments} segment(s)[/]")


@channels_app.command("list")
def channels_list(as_json: bool = JsonOption) -> None:
    """Show each channel's transport, rate limit and target (secrets masked)."""
    from channels.registry import ChannelConfigError, describe

    try:
        rows = describe()
    except ChannelConfigError as exc:
        fail(str(exc))
    if as_json:
        print_json({"channels": rows})
        return
    table = Table(title="channels")
    for column in ("channel", "transport", "rate_per_second", "target"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["channel"], row["transport"], str(row["rate_per_second"] or "—"), row["target"])
    console.print(table)


@channels_app.command("test")
def channels_test(channel: str = typer.Argument(..., help="email, sms, voice, telegram or call."),
                  to: str = typer.Option(..., "--to", help="Address: email, +7… phone or Telegram chat id."),
                  text: str = typer.Option("touchflow: тестовое сообщение", "--text", help="What to send."),
                  as_json: bool = JsonOption) -> None:
    """Send one test message through a channel's configured transport and show the provider's answer."""
    import asyncio

    from channels.base import Message
    from channels.errors import ChannelError
    from channels.registry import ChannelConfigError, build_channel

    try:
        target = build_channel(channel)
    except ChannelConfigError as exc:
        fail(str(exc))

    async def go():
        await target.open()
        try:
            return await target.send(Message(channel=channel, to=to, text=text, subject="touchflow test",
                                             html=f"<p>{text}</p>" if channel in ("email", "telegram") else None))
        finally:
            await target.close()

    try:
        delivery = asyncio.run(go())
    except ChannelError as exc:
        result = {"ok": False, "error": type(exc).__name__, "message": str(exc), "code": exc.code}
        if as_json:
            print_json(result)
        raise typer.Exit(fail(f"{type(exc).__name__}: {exc} (code {exc.code})") or 1)
    result = {"ok": True, "provider_id": delivery.provider_id, "status": delivery.status, "detail": delivery.detail}
    if as_json:
        print_json(result)
    else:
        console.print(f"sent: {delivery.provider_id} ({delivery.status}) {delivery.detail or ''}", highlight=False)


@telegram_app.command("link")
def telegram_link(customer: str = typer.Argument(..., help="The customer's external id."),
                  as_json: bool = JsonOption) -> None:
    """Make a one-time deep link that binds the customer's Telegram chat when they press Start."""
    from channels.telegram_links import LinkError, create_link

    try:
        link, expires = create_link(open_database(), customer, get_settings().telegram_bot_username)
    except LinkError as exc:
        fail(str(exc))
    if as_json:
        print_json({"customer": customer, "link": link, "expires_at": expires})
    else:
        console.print(f"{link}\n(one use, valid until {expires:%Y-%m-%d})", highlight=False)


@telegram_app.command("listen")
def telegram_listen(once: bool = typer.Option(False, "--once", help="Handle one batch of updates and stop."),
                    timeout: int = typer.Option(30, "--timeout", help="Long-poll timeout in seconds.")) -> None:
    """Run the bot in polling mode: ``/start <token>`` binds the chat to the customer."""
    import asyncio

    from channels.telegram import TelegramConfig, make_bot
    from channels.telegram_links import poll
    from touchflow.secrets import secret

    settings = get_settings()
    token = secret(settings.telegram_bot_token, "TOUCHFLOW_TELEGRAM_BOT_TOKEN")
    if not token:
        fail("set TOUCHFLOW_TELEGRAM_BOT_TOKEN (or TOUCHFLOW_TELEGRAM_BOT_TOKEN_BLOCK) to run the bot")
    engine = open_database()
    bot = make_bot(TelegramConfig(token=token, bot_username=settings.telegram_bot_username,
                                  base_url=settings.telegram_api_base_url))
    console.print(f"listening as @{settings.telegram_bot_username}; Ctrl+C to stop", highlight=False)
    try:
        bound = asyncio.run(poll(engine, bot, stop_after=1 if once else None, timeout=0 if once else timeout,
                                 on_binding=lambda b: console.print(f"bound chat {b.chat_id} to "
                                                                    f"{b.customer_external_id}")))
    except KeyboardInterrupt:
        return
    console.print(f"{bound} chat(s) bound")


campaign_app = typer.Typer(help="Campaign specs: check, list, run (Prefect flow or directly).", no_args_is_help=True)
reminders_app = typer.Typer(help="The daily reminders flow (every spec of kind reminder).", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
app.add_typer(reminders_app, name="reminders")


def _spec(path: Path):
    from flows.spec import SpecError, load_spec

    try:
        spec = load_spec(path)
    except SpecError as exc:
        fail(str(exc))
    from segments import SegmentError, load_library, resolve

    try:
        library = load_library()
        resolve(spec.rule if spec.rule is not None else spec.segment, library)
    except SegmentError as exc:
        fail(f"{path}: {exc}")
    from channels.render import TemplateError, channels_of

    try:
        missing = [c for c in spec.channels if c not in channels_of(spec.template)]
    except TemplateError as exc:
        fail(f"{path}: template: {exc}")
    if missing:
        fail(f"{path}: channels: template {spec.template!r} has no part for {', '.join(missing)}")
    return spec


def _print_summary(summary: dict) -> None:
    title = f"{summary['campaign']}{' (dry run)' if summary['dry_run'] else ''}: {summary['selected']} selected"
    table = Table(title=title)
    table.add_column("channel")
    outcomes = sorted({o for counts in summary["channels"].values() for o in counts})
    for outcome in outcomes:
        table.add_column(outcome, justify="right")
    for channel, counts in sorted(summary["channels"].items()):
        table.add_row(channel, *(str(counts.get(o, 0)) for o in outcomes))
    if summary["channels"]:
        console.print(table)
    if summary["not_contacted"]:
        console.print("not contacted: " + ", ".join(f"{k} {v}" for k, v in summary["not_contacted"].items()),
                      highlight=False)
    for key, value in summary.get("other", {}).items():
        if key != "selected":
            console.print(f"{key}: {value}", highlight=False)
    for sample in summary.get("samples", []):
        console.rule(f"sample: {sample['channel']} to {sample['address']}")
        if sample.get("subject"):
            console.print(f"Subject: {sample['subject']}", highlight=False, markup=False)
        console.print(sample["text"], highlight=False, markup=False)


@campaign_app.command("check")
def campaign_check(file: Path = typer.Argument(..., help="Campaign spec (YAML)."), as_json: bool = JsonOption) -> None:
    """Check a spec: fields, segment, template parts for every channel."""
    spec = _spec(file)
    if as_json:
        print_json({"ok": True, "spec": spec.model_dump()})
    else:
        console.print(f"{file}: ok ({spec.name}, {spec.purpose}, {', '.join(spec.channels)})", highlight=False)


@campaign_app.command("list")
def campaign_list(directory: Path = typer.Argument(Path("campaigns"), help="Folder of specs."),
                  as_json: bool = JsonOption) -> None:
    """List the campaign specs of a folder."""
    from flows.spec import SpecError, campaign_files, load_spec

    items = []
    for path in campaign_files(directory):
        try:
            spec = load_spec(path)
            items.append({"file": str(path), "name": spec.name, "kind": spec.kind, "purpose": spec.purpose,
                          "channels": spec.channels, "schedule": spec.schedule.cron if spec.schedule else None})
        except SpecError as exc:
            items.append({"file": str(path), "error": str(exc)})
    if as_json:
        print_json({"campaigns": items})
        return
    table = Table(title=f"campaigns in {directory}")
    for column in ("name", "kind", "purpose", "channels", "schedule"):
        table.add_column(column)
    for item in items:
        if "error" in item:
            table.add_row(Path(item["file"]).name, "[red]error[/]", item["error"], "", "")
        else:
            table.add_row(item["name"], item["kind"], item["purpose"], ", ".join(item["channels"]),
                          item["schedule"] or "—")
    console.print(table)


@campaign_app.command("run")
def campaign_run(
    file: Path = typer.Argument(..., help="Campaign spec (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and render for everyone; send and claim nothing."),
    as_of: Optional[str] = _AS_OF,
    direct: bool = typer.Option(False, "--direct", help="Run without Prefect (same engine, no flow run)."),
    batch_size: int = typer.Option(5000, "--batch-size", min=100, help="Customers per batch (one task each)."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="Processes sharing the batches (the flow's task runner, or --direct's pool)."),
    as_json: bool = JsonOption,
) -> None:
    """Run a campaign: select, decide, claim, render, send and record (a local Prefect flow by default)."""
    _spec(file)
    engine = open_database()
    if direct:
        from datetime import datetime

        from flows.engine import run_campaign
        from flows.spec import load_spec

        summary = run_campaign(engine, load_spec(file), dry_run=dry_run, as_of=_as_of(as_of) if as_of else None,
                               now=datetime.now().astimezone(), page_size=batch_size, workers=workers)
    else:
        from flows.campaign import campaign_flow

        summary = campaign_flow(str(file), dry_run=dry_run, as_of=as_of, batch_size=batch_size, workers=workers)
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary)


@reminders_app.command("run")
def reminders_run(directory: Path = typer.Argument(Path("campaigns"), help="Folder of specs."),
                  as_of: Optional[str] = _AS_OF, as_json: bool = JsonOption) -> None:
    """Run every reminder spec (replenishment, visits, birthdays) through the same policy."""
    open_database()
    from flows.campaign import reminders_flow

    summaries = reminders_flow(str(directory), as_of=as_of)
    if as_json:
        print_json({"runs": summaries})
    else:
        for summary in summaries:
            _print_summary(summary)


@app.command("history")
def history_command(
    customer: Optional[str] = typer.Option(None, "--customer", help="A customer's external id (the whole person)."),
    campaign: Optional[str] = typer.Option(None, "--campaign", help="A campaign name."),
    channel: Optional[str] = typer.Option(None, "--channel", help="email, sms, voice, telegram or call."),
    status: Optional[str] = typer.Option(None, "--status", help="claimed, sent, failed, unknown, deferred, skipped…"),
    purpose: Optional[str] = typer.Option(None, "--purpose", help="marketing or service."),
    manager: Optional[str] = typer.Option(None, "--manager", help="A rep's code (call touches)."),
    since: Optional[str] = typer.Option(None, "--since", help="From this date."),
    until: Optional[str] = typer.Option(None, "--until", help="Up to this date."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many rows."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    as_json: bool = JsonOption,
) -> None:
    """Every touch and every decision not to touch, with the consent relied upon and the reason."""
    from crm.history import history

    rows = history(open_database(), customer=customer, campaign=campaign, channel=channel, status=status,
                   purpose=purpose, manager=manager, since=_day_bound(since, False), until=_day_bound(until, True),
                   limit=limit)
    if as_json or fmt == "json":
        print_json({"rows": rows, "count": len(rows)})
        return
    columns = ("id", "created_at", "customer", "campaign", "channel", "address", "status", "reason", "offer",
               "consent_source", "consent_at", "error_code", "detail")
    if fmt == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        return
    if fmt != "table":
        fail(f"--format {fmt!r}: choose table, csv or json")
    table = Table(title=f"{len(rows)} history rows")
    for column in ("created_at", "customer", "campaign", "channel", "status", "reason", "consent_source", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(f"{row['created_at']:%Y-%m-%d %H:%M}", row["customer"] or "", row["campaign"] or "",
                      row["channel"] or "", row["status"], row["reason"] or "", row["consent_source"] or "",
                      (row["detail"] or "")[:60])
    console.print(table)
if __name__ == "__main__":
    app()


tasks_app = typer.Typer(help="Sales reps' call tasks: list, export the call schedule, record outcomes.",
                        no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def tasks_list(manager: Optional[str] = typer.Option(None, "--manager", help="A rep's code."),
               due: Optional[str] = typer.Option(None, "--due", help="today, or a date: tasks due by then."),
               status: str = typer.Option("open", "--status", help="open, done or all."),
               as_json: bool = JsonOption) -> None:
    """List call tasks (earliest due first) with the customer, phone, rep and window."""
    from datetime import date

    from flows.tasks import list_tasks

    by = None if due is None else date.today() if due == "today" else _as_of(due)
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
    from flows.tasks import export_schedule

    count = export_schedule(open_database(), manager, out)
    if as_json:
        print_json({"manager": manager, "tasks": count, "path": str(out)})
    else:
        console.print(f"{count} tasks for {manager} written to {out}", highlight=False)


@tasks_app.command("complete")
def tasks_complete(task_id: int = typer.Argument(..., help="The task id."),
                   outcome: str = typer.Option(..., "--outcome",
                                               help="reached, no_answer, callback, declined or wrong_number."),
                   callback_on: Optional[str] = typer.Option(None, "--callback-on",
                                                             help="For callback: the agreed date."),
                   note: Optional[str] = typer.Option(None, "--note", help="What was said."),
                   opt_out: bool = typer.Option(False, "--opt-out", help="With declined: they asked not to be "
                                                                         "contacted (revokes marketing consent)."),
                   as_json: bool = JsonOption) -> None:
    """Record a call's outcome: a touch in the history; callback schedules the next call."""
    from flows.tasks import TaskError, complete

    try:
        done = complete(open_database(), task_id, outcome, callback_on=_as_of(callback_on) if callback_on else None,
                        note=note, opt_out=opt_out)
    except TaskError as exc:
        fail(str(exc))
    result = {"task": done.task_id, "outcome": done.outcome, "touch": done.touch_id, "next_task": done.next_task_id}
    if as_json:
        print_json(result)
    else:
        console.print(f"task {done.task_id}: {done.outcome}" + (f"; next call is task {done.next_task_id}"
                                                                 if done.next_task_id else ""), highlight=False)



proposal_app = typer.Typer(help="Commercial proposals and contracts (.docx) from templates.", no_args_is_help=True)
app.add_typer(proposal_app, name="proposal")


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
    from documents.proposals import DocumentError, generate

    try:
        done = generate(open_database(), template, customer, items_file=items, out_dir=out, pdf=pdf,
                        company=get_settings().company_name)
    except DocumentError as exc:
        fail(str(exc))
    result = {"path": str(done.path), "sha256": done.sha256, "touch": done.touch_id,
              "pdf": str(done.pdf) if done.pdf else None}
    if as_json:
        print_json(result)
    else:
        console.print(f"wrote {done.path}" + (f" and {done.pdf}" if done.pdf else ""), highlight=False)



@app.command("serve")
def serve(host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
          port: int = typer.Option(8000, "--port", help="Port.")) -> None:
    """Serve one-click unsubscribe, Twilio status callbacks and inbound STOP, and the Telegram webhook."""
    import uvicorn

    from touchflow.server import create_app

    uvicorn.run(create_app(open_database(), get_settings()), host=host, port=port, log_level="info")



compliance_app = typer.Typer(help="Compliance: check the contact history against the rules.", no_args_is_help=True)
app.add_typer(compliance_app, name="compliance")


@compliance_app.command("report")
def compliance_report(
    since: Optional[str] = typer.Option(None, "--since", help="From this date."),
    until: Optional[str] = typer.Option(None, "--until", help="Up to this date."),
    cap_max: int = typer.Option(3, "--cap-max", help="Marketing contacts allowed per window."),
    cap_days: int = typer.Option(7, "--cap-days", help="The window, in days."),
    cooldown_days: int = typer.Option(30, "--cooldown-days", help="The same offer not again within these days."),
    as_json: bool = JsonOption,
) -> None:
    """Count violations: no consent, after an opt-out, quiet hours, over the cap, offer twice, several open calls.

    Exit status 0 when there are none, 4 when there are some.
    """
    from crm.compliance import check
    from crm.policy import Policy

    report = check(open_database(), since=_day_bound(since, False), until=_day_bound(until, True),
                   policy=Policy(cap_max=cap_max, cap_days=cap_days, offer_cooldown_days=cooldown_days,
                                 default_timezone=get_settings().default_timezone)).to_dict()
    if as_json:
        print_json(report)
    else:
        table = Table(title=f"compliance: {report['checked_touches']} contacts checked")
        table.add_column("rule")
        table.add_column("violations", justify="right")
        for kind, count in report["counts"].items():
            table.add_row(kind, f"[red]{count}[/]" if count else "0")
        console.print(table)
    if report["total"]:
        raise typer.Exit(4)


@customers_app.command("export")
def customer_export(external_id: str = typer.Argument(..., help="The customer's external id."),
                    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON here instead of stdout.")
                    ) -> None:
    """Everything held about a customer (a subject access request), as JSON."""
    from crm.privacy import PrivacyError, export
    from touchflow.console import dumps

    try:
        data = export(open_database(), external_id)
    except PrivacyError as exc:
        fail(str(exc))
    if out:
        out.write_text(dumps(data), encoding="utf-8")
        console.print(f"written to {out}", highlight=False)
    else:
        print_json(data)


@customers_app.command("erase")
def customer_erase(external_id: str = typer.Argument(..., help="The customer's external id."),
                   reason: str = typer.Option("erasure request", "--reason", help="Kept with the suppression."),
                   yes: bool = typer.Option(False, "--yes", help="Do it without asking."),
                   as_json: bool = JsonOption) -> None:
    """Remove a customer's personal data; keep a salted hash of their addresses so they are never contacted again."""
    from crm.privacy import PrivacyError, erase

    if not yes and not typer.confirm(f"Erase the personal data of {external_id}? This cannot be undone"):
        raise typer.Exit(1)
    try:
        result = erase(open_database(), external_id, reason)
    except PrivacyError as exc:
        fail(str(exc))
    if as_json:
        print_json(result)
    else:
        console.print(f"erased {external_id}: {result['contact_points']} addresses suppressed, "
                      f"{result['touches']} history rows stripped of personal data", highlight=False)



@compliance_app.command("verify")
def compliance_verify(seal_after: bool = typer.Option(True, "--seal/--no-seal",
                                                      help="Seal the current history when it verifies."),
                      as_json: bool = JsonOption) -> None:
    """Recompute the history's hash chains and compare with every seal: find edited or deleted rows.

    Exit status 0 when intact, 5 when something changed.
    """
    from crm.audit import seal, verify

    engine = open_database()
    problems = verify(engine)
    sealed = seal(engine) if seal_after and not problems else {}
    if as_json:
        print_json({"intact": not problems, "problems": problems, "sealed": sealed})
    elif problems:
        for problem in problems:
            console.print(f"[red]{problem}[/]", highlight=False)
    else:
        console.print("history intact" + (f"; sealed {sealed}" if sealed else ""), highlight=False)
    if problems:
        raise typer.Exit(5)


if __name__ == "__main__":
    app()

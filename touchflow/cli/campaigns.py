"""``touchflow campaign``, ``reminders`` and ``history``: run specs, see runs, read what happened."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from flows.spec import check_spec
from touchflow.cli.common import AsOfOption, JsonOption, day_bound, open_database
from touchflow.cli.common import as_of as as_of_date
from touchflow.console import console, print_json, progress_bar
from touchflow.errors import RunStopped, UsageError
from touchflow.settings import campaigns_dir

app = typer.Typer(help="Campaign specs: check, list, run (Prefect flow or directly), recent runs.",
                  no_args_is_help=True)
reminders = typer.Typer(help="The reminders flow (every spec of kind reminder).", no_args_is_help=True)


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


@app.command("check")
def campaign_check(file: Path = typer.Argument(..., help="Campaign spec (YAML)."), as_json: bool = JsonOption) -> None:
    """Check a spec: fields, segment, template parts for every channel."""
    spec = check_spec(file)
    if as_json:
        print_json({"ok": True, "spec": spec.model_dump()})
    else:
        channels = ("auto: " if spec.channel_choice == "auto" else "") + ", ".join(spec.channels)
        console.print(f"{file}: ok ({spec.name}, {spec.purpose}, {channels})", highlight=False)


@app.command("list")
def campaign_list(directory: Optional[Path] = typer.Argument(None, help="Folder of specs (default: the project's "
                                                                      "campaigns/, else the shipped ones)."),
                  as_json: bool = JsonOption) -> None:
    """List the campaign specs of a folder."""
    from flows.spec import SpecError, campaign_files, load_spec

    directory = directory or campaigns_dir()
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


@app.command("run")
def campaign_run(
    file: Path = typer.Argument(..., help="Campaign spec (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and render for everyone; send and claim nothing."),
    as_of: Optional[str] = AsOfOption,
    direct: bool = typer.Option(False, "--direct", help="Run without Prefect (same engine, no flow run)."),
    batch_size: int = typer.Option(5000, "--batch-size", min=100, help="Customers per batch (one task each)."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="Processes sharing the batches (the flow's task runner, or --direct's pool)."),
    dask: Optional[str] = typer.Option(None, "--dask", metavar="ADDRESS",
                                       help="Run the batches on the workers of this Dask scheduler "
                                            "(tcp://host:8786); each reads its own settings and secrets."),
    as_json: bool = JsonOption,
) -> None:
    """Run a campaign: select, decide, claim, render, send and record (a local Prefect flow by default)."""
    if dask and (direct or workers > 1):
        raise UsageError(f"--dask {dask} runs the batches through the Prefect flow on the cluster's workers: leave out "
                         f"{'--direct' if direct else f'--workers {workers}'}")
    from flows.run import listening

    spec = check_spec(file)
    engine = open_database()
    with progress_bar(f"campaign {spec.name}", None, unit="customers", quiet=as_json) as update, \
            listening(lambda done, total: update(done, total)):
        if direct:
            from flows.engine import run_campaign
            from flows.reporting import outcome
            from flows.run import local_now

            summary = run_campaign(engine, spec, dry_run=dry_run, as_of=as_of_date(as_of) if as_of else None,
                                   now=local_now(spec), page_size=batch_size, workers=workers)
            failure = outcome(summary)
        else:
            from flows.campaign import campaign_flow

            state = campaign_flow(str(file), dry_run=dry_run, as_of=as_of, batch_size=batch_size, workers=workers,
                                  dask_address=dask, return_state=True)
            summary, failure = state.result(raise_on_failure=False), state.message if state.is_failed() else None
            if isinstance(summary, BaseException):
                raise summary
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary)
    if failure:
        raise RunStopped(f"the run ended Failed: {failure}")


@reminders.command("run")
def reminders_run(directory: Optional[Path] = typer.Argument(None, help="Folder of specs (default: the project's)."),
                  as_of: Optional[str] = AsOfOption, as_json: bool = JsonOption) -> None:
    """Run every reminder spec (replenishment, visits, birthdays) through the same policy."""
    open_database()
    from flows.campaign import reminders_flow

    summaries = reminders_flow(str(directory or campaigns_dir()), as_of=as_of)
    if as_json:
        print_json({"runs": summaries})
    else:
        for summary in summaries:
            _print_summary(summary)


def history_command(
    customer: Optional[str] = typer.Option(None, "--customer", help="A customer's external id (the whole person)."),
    campaign: Optional[str] = typer.Option(None, "--campaign", help="A campaign name."),
    channel: Optional[str] = typer.Option(None, "--channel", help="email, sms, voice, telegram or call."),
    status: Optional[str] = typer.Option(None, "--status", help="claimed, sent, failed, unknown, deferred, skipped…"),
    purpose: Optional[str] = typer.Option(None, "--purpose", help="marketing or service."),
    manager: Optional[str] = typer.Option(None, "--manager", help="A rep's code (call touches)."),
    since: Optional[str] = typer.Option(None, "--since", help="From this date."),
    until: Optional[str] = typer.Option(None, "--until", help="Up to this date."),
    direction: Optional[str] = typer.Option(None, "--direction", help="in (replies) or out (what was sent)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many rows."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    as_json: bool = JsonOption,
) -> None:
    """Every touch and every decision not to touch, with the consent relied upon and the reason; replies too."""
    from crm.ledger.history import history

    if direction not in (None, "in", "out"):
        raise UsageError(f"--direction {direction!r}: choose in (replies) or out (what was sent)")
    rows = history(open_database(), customer=customer, campaign=campaign, channel=channel, status=status,
                   purpose=purpose, manager=manager, since=day_bound(since, False), until=day_bound(until, True),
                   direction=direction, limit=limit)
    if as_json or fmt == "json":
        print_json({"rows": rows, "count": len(rows)})
        return
    columns = ("id", "created_at", "customer", "campaign", "channel", "address", "status", "reason", "offer",
               "consent_source", "consent_at", "error_code", "detail", "direction", "in_reply_to", "reply")
    if fmt == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        return
    if fmt != "table":
        raise UsageError(f"--format {fmt!r}: choose table, csv or json")
    table = Table(title=f"{len(rows)} history rows")
    for column in ("created_at", "dir", "customer", "campaign", "channel", "status", "reason", "consent_source",
                   "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(f"{row['created_at']:%Y-%m-%d %H:%M}", _direction(row), row["customer"] or "",
                      row["campaign"] or "", row["channel"] or "", row["status"], row["reason"] or "",
                      row["consent_source"] or "", _preview(row))
    console.print(table)


def _direction(row: dict) -> str:
    """``out``, or ``in`` with the touch the reply answers (``in → 12``)."""
    if row["direction"] != "in":
        return "out"
    return f"in → {row['in_reply_to']}" if row["in_reply_to"] else "in"


def _preview(row: dict) -> str:
    """The detail; for a reply, what the person wrote (on one line)."""
    text = row["reply"] if row["direction"] == "in" and row["reply"] else row["detail"] or ""
    return " ".join(text.split())[:60]


@app.command("runs")
def campaign_runs(campaign: Optional[str] = typer.Option(None, "--campaign", help="Only this campaign's runs."),
                  limit: int = typer.Option(20, "--limit", min=1, help="The newest this many runs."),
                  as_json: bool = JsonOption) -> None:
    """Recent runs: status (running, finished, failed, interrupted), who holds a running run's lease, counts."""
    from crm.ledger.runs import recent

    rows = recent(open_database(), campaign=campaign, limit=limit)
    if as_json:
        print_json({"runs": rows})
        return
    table = Table(title="campaign runs, newest first")
    for column in ("run", "campaign", "status", "started", "finished", "lease / owner", "selected"):
        table.add_column(column)
    for row in rows:
        lease = f"{row['lease_until']:%H:%M:%S} {row['owner'] or ''}" if row["lease_until"] else row["owner"] or ""
        table.add_row(row["id"][:12], row["campaign"], row["status"], f"{row['started_at']:%Y-%m-%d %H:%M}",
                      f"{row['finished_at']:%H:%M:%S}" if row["finished_at"] else "", lease,
                      str((row["summary"] or {}).get("selected", "")))
    console.print(table)


@app.command("report")
def campaign_report(
    name: str = typer.Argument(..., help="The campaign's name (a spec in the project's campaigns/)."),
    as_of: Optional[str] = AsOfOption,
    min_group: int = typer.Option(30, "--min-group", min=2,
                                  help="People needed in each of contacted and holdout before an uplift is given."),
    as_json: bool = JsonOption,
) -> None:
    """Did it work? Attributed purchases and revenue per channel, spend, cost per lead, uplift over the holdout."""
    from flows.results import campaign_report as compute
    from touchflow.settings import get_settings

    result = compute(open_database(), name, campaigns_dir(), as_of=as_of_date(as_of) if as_of else None,
                     zone=get_settings().default_timezone, min_group=min_group)
    if as_json:
        print_json(result)
    else:
        _print_report(result)


def _cell(value: object) -> str:
    return "—" if value is None else f"{value:,}" if isinstance(value, (int, float)) else str(value)


def _with_ci(value: float, interval: list[float], spec: str) -> str:
    return f"{value:{spec}} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def _print_report(result: dict) -> None:
    total, rule = result["total"], result["attribution"]
    console.print(f"[bold]{result['campaign']}[/]: {rule['rule']}, window {rule['window_days']} days; "
                  f"{total['people_contacted']} people contacted, {total['leads']} bought "
                  f"({_cell(total['conversion'])}), {total['purchases']} purchases, revenue {_cell(total['revenue'])}",
                  highlight=False)
    budget = f" of budget {_cell(result['budget'])}" if result["budget"] is not None else ""
    console.print(f"spend {_cell(total['spend'])}{budget}, cost per lead {_cell(total['cost_per_lead'])}, "
                  f"return on spend {_cell(total['return_on_spend'])}"
                  + (f" ({total['touches_without_cost']} touches have no cost)" if total["touches_without_cost"]
                     else ""), highlight=False)
    table = Table(title="per channel (CPL: cost per lead, ROS: return on spend)")
    columns = ("touches", "contacted", "purchases", "leads", "revenue", "spend", "cost_per_lead", "return_on_spend")
    table.add_column("channel")
    for column in columns:
        table.add_column({"cost_per_lead": "CPL", "return_on_spend": "ROS"}.get(column, column), justify="right")
    for channel, row in result["channels"].items():
        table.add_row(channel, *(_cell(row[c]) for c in columns))
    console.print(table)
    holdout = result["holdout"]
    console.print(f"contacted vs holdout: purchases within {holdout['window_days']} days of the run's day "
                  f"({holdout['runs_still_open']} runs still in their window left out)", highlight=False)
    for row in holdout["slices"]:
        c, h, up = row["contacted"], row["holdout"], row["uplift"]
        line = (f"  {row['slice']}: contacted {c['converted']}/{c['people']} ({_cell(c['conversion'])}), "
                f"holdout {h['converted']}/{h['people']} ({_cell(h['conversion'])}); ")
        line += row.get("note", "") if up is None else (
            f"conversion uplift {_with_ci(up['conversion'], up['conversion_ci'], '+.4f')}, revenue per person "
            f"{_with_ci(up['revenue_per_person'], up['revenue_per_person_ci'], '+,.2f')}")
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(holdout["method"], highlight=False)
    if result["engagement"]:
        from touchflow.cli.engagement import print_engagement

        print_engagement(result["campaign"], result["engagement"])

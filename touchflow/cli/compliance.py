"""``touchflow compliance``: the history checked against the contact rules, and against its seals."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, day_bound, open_database
from touchflow.console import console, print_json
from touchflow.errors import PolicyViolations, TamperDetected, UsageError
from touchflow.settings import get_settings

app = typer.Typer(help="Compliance: check the contact history against the rules and its seals.",
                  no_args_is_help=True)


@app.command("report")
def compliance_report(
    since: Optional[str] = typer.Option(None, "--since", help="From this date."),
    until: Optional[str] = typer.Option(None, "--until", help="Up to this date."),
    cap_max: int = typer.Option(3, "--cap-max", help="Marketing contacts allowed per window."),
    cap_days: int = typer.Option(7, "--cap-days", help="The window, in days."),
    cooldown_days: int = typer.Option(30, "--cooldown-days", help="The same offer not again within these days."),
    min_gap_hours: Optional[float] = typer.Option(None, "--min-gap-hours", help="Hours between two marketing "
                                                  "contacts to one person (default: the configured min_gap_hours)."),
    as_json: bool = JsonOption,
) -> None:
    """Count violations: no consent, after an opt-out, quiet hours, over the cap, within the gap, offer twice,
    several open calls.

    Exit status 0 when there are none, 4 when there are some.
    """
    from crm.ledger.compliance import check
    from crm.ledger.policy import Policy

    report = check(open_database(), since=day_bound(since, False), until=day_bound(until, True),
                   policy=Policy(cap_max=cap_max, cap_days=cap_days, offer_cooldown_days=cooldown_days,
                                 default_timezone=get_settings().default_timezone,
                                 min_gap_hours=get_settings().min_gap_hours if min_gap_hours is None
                                 else min_gap_hours)).to_dict()
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
        raise typer.Exit(PolicyViolations.exit_code)


@app.command("verify")
def compliance_verify(seal_after: bool = typer.Option(False, "--seal/--no-seal",
                                                      help="When the history verifies, seal the rows written since "
                                                           "the newest seal."),
                      anchor: Optional[Path] = typer.Option(None, "--anchor", help="A file kept outside the "
                                                            "database: checked when it exists, then (re)written with "
                                                            "the newest seals."),
                      as_json: bool = JsonOption) -> None:
    """Check the history: chains, keyed seals, every touch against its events; find edited or deleted rows.

    Seals nothing unless --seal. Exit status 0 when intact, 5 when something changed.
    """
    from crm.ledger.audit import seal, verify, write_anchor

    engine = open_database()
    report = verify(engine, anchor=anchor)
    sealed = seal(engine) if seal_after and report.intact else {}
    anchored = None
    if anchor is not None and report.intact:  # a history with problems never becomes the anchor
        try:
            write_anchor(engine, anchor)
        except OSError as exc:
            raise UsageError(f"cannot write the anchor {anchor}: {exc}; check that the folder exists and is "
                             "writable") from None
        anchored = str(anchor)
    if as_json:
        print_json(report.to_dict() | {"sealed": sealed, "anchor": anchored})
    else:
        for problem in report.problems:
            console.print(f"[red]{problem}[/]", highlight=False)
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        tail = {name: rows for name, rows in report.unsealed.items() if rows}
        if tail and not sealed:
            console.print("rows after the newest seal, which no seal vouches for yet: "
                          + ", ".join(f"{name} {rows}" for name, rows in tail.items())
                          + ("; --seal seals them" if report.intact else ""), highlight=False)
        if report.intact:
            console.print("history intact" + (f"; sealed {sealed}" if sealed else "")
                          + (f"; anchor written to {anchored}" if anchored else ""), highlight=False)
    if not report.intact:
        raise typer.Exit(TamperDetected.exit_code)

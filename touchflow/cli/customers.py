"""``touchflow customers``: the records of the base (one group; ``customer`` is the same group).

Duplicates (records that are one person), a customer's card, the subject access export and erasure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, log_access, open_database
from touchflow.console import console, print_json
from touchflow.errors import NotFound

app = typer.Typer(help="Customer records: duplicates, a card, subject access export, erasure.", no_args_is_help=True)


@app.command("duplicates")
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


@app.command("show")
def customers_show(external_id: str = typer.Argument(..., help="The customer's external id."),
                   as_json: bool = JsonOption) -> None:
    """Show one customer card: fields, attributes, contact points, consents, purchases, visits, touches."""
    from crm.cards import customer_card

    engine = open_database()
    log_access(engine, "card", external_id, "customer show")
    card = customer_card(engine, external_id)
    if card is None:
        raise NotFound(f"no customer with external id {external_id!r}; list duplicates or import customers first")
    if as_json:
        print_json(card)
        return
    from crm.cards import render_card

    render_card(console, card)


@app.command("export")
def customer_export(external_id: str = typer.Argument(..., help="The customer's external id."),
                    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON here instead of stdout.")
                    ) -> None:
    """Everything held about a customer (a subject access request), as JSON."""
    from crm.privacy import export
    from touchflow.console import dumps

    engine = open_database()
    log_access(engine, "export", external_id, "customer export")
    data = export(engine, external_id)
    if out:
        out.write_text(dumps(data), encoding="utf-8")
        console.print(f"written to {out}", highlight=False)
    else:
        print_json(data)


@app.command("erase")
def customer_erase(external_id: str = typer.Argument(..., help="The customer's external id."),
                   reason: str = typer.Option("erasure request", "--reason", help="Kept with the suppression."),
                   yes: bool = typer.Option(False, "--yes", help="Do it without asking."),
                   as_json: bool = JsonOption) -> None:
    """Remove a customer's personal data; keep a salted hash of their addresses so they are never contacted again."""
    from crm.privacy import erase

    if not yes and not typer.confirm(f"Erase the personal data of {external_id}? This cannot be undone"):
        raise typer.Exit(1)
    engine = open_database()
    log_access(engine, "erasure", external_id, "customer erase", detail=reason)
    result = erase(engine, external_id, reason)
    if as_json:
        print_json(result)
    else:
        console.print(f"erased {external_id}: {result['contact_points']} addresses suppressed, "
                      f"{result['touches']} history rows stripped of personal data", highlight=False)

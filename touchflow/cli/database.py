"""``touchflow db``: create and upgrade the schema; ``touchflow stats``: what the base holds."""

from __future__ import annotations

import typer
from rich.table import Table

from crm.db import current_revision, head_revision, upgrade
from touchflow.cli.common import JsonOption, open_database
from touchflow.console import console, print_json
from touchflow.errors import ConfigError

app = typer.Typer(help="Create and upgrade the database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(as_json: bool = JsonOption) -> None:
    """Create the schema or migrate it to this touchflow's version; data is kept."""
    engine = open_database(check=False)
    where = engine.url.render_as_string(hide_password=True)
    try:
        before, after = upgrade(engine)
    except Exception as exc:  # a migration's own error: say where it failed
        raise ConfigError(f"migration failed on {where}: {exc}") from exc
    result = {"database": where, "before": before, "after": after}
    if as_json:
        print_json(result)
    elif before == after:
        console.print(f"schema already current ({after}) in {where}")
    else:
        console.print(f"schema upgraded {before or 'empty'} → {after} in {where}")


@app.command("current")
def db_current(as_json: bool = JsonOption) -> None:
    """Show the schema revision of the database and the one this touchflow needs."""
    engine = open_database(check=False)
    where = engine.url.render_as_string(hide_password=True)
    try:
        current = current_revision(engine)
    except Exception as exc:  # unreachable server, unreadable file
        raise ConfigError(f"cannot open {where}: {exc}. Check TOUCHFLOW_DATABASE_URL.") from exc
    head = head_revision()
    result = {"database": where, "current": current, "head": head, "up_to_date": current == head}
    if as_json:
        print_json(result)
    else:
        state = "up to date" if current == head else "run `touchflow db upgrade`"
        console.print(f"{where}: {current or 'no schema'} (needs {head}) — {state}")


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

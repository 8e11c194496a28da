"""The ``touchflow`` command line: one module per command group, registered here and nowhere else.

    database.py    db upgrade | current, stats          importing.py  import customers | purchases | …
    customers.py   customers duplicates | show | …      segments.py   segment …, metrics, audience export
    messages.py    template …, channels …, telegram …   campaigns.py  campaign …, reminders run, history
    sales.py       tasks …, proposal generate           compliance.py compliance report | verify
    managers.py    managers import | list | deactivate  project.py    init, config show, deployments write, …
    users.py       user add | list | disable | reset | token create | token revoke
    plan.py        plan show | simulate                  journey.py    journey list | run | status
    inbound.py     inbound poll-imap
    engagement.py  campaign engagement (opens, clicks, delivery per channel)
    bounces.py     bounces ingest | address

Errors are raised, not printed: ``common.TouchflowGroup`` turns every ``touchflow.errors`` error
into ``error: …`` and its exit code.
"""

from __future__ import annotations

import typer

from touchflow import __version__
from touchflow.cli import (
    bounces,
    campaigns,
    compliance,
    customers,
    database,
    engagement,
    importing,
    inbound,
    journey,
    managers,
    messages,
    plan,
    project,
    sales,
    segments,
    users,
)
from touchflow.cli.common import TouchflowGroup
from touchflow.console import console

app = typer.Typer(cls=TouchflowGroup, help="touchflow: omnichannel outreach with one contact per person and a full "
                  "history.", no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich")

GROUPS = {
    "db": database.app, "import": importing.app, "customers": customers.app, "segment": segments.app,
    "audience": segments.audience, "template": messages.templates_app, "channels": messages.channels_app,
    "telegram": messages.telegram_app, "campaign": campaigns.app, "reminders": campaigns.reminders,
    "tasks": sales.tasks_app, "proposal": sales.proposal_app, "compliance": compliance.app,
    "config": project.config_app, "deployments": project.deployments_app,
    "managers": managers.app, "user": users.app, "plan": plan.app, "journey": journey.app,
    "inbound": inbound.app,
    "bounces": bounces.app,
}
COMMANDS = {
    "init": project.init, "demo": project.demo, "serve": project.serve, "stats": database.stats,
    "metrics": segments.metrics, "history": campaigns.history_command,
}
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
campaigns.app.command("engagement")(engagement.engagement_command)


def _version(value: bool) -> None:
    if value:
        console.print(f"touchflow {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """touchflow: omnichannel outreach with one contact per person and a full history."""

"""``touchflow init``, ``config show``, ``deployments write``, ``serve`` and ``demo``: a project and its server."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from touchflow.cli.common import JsonOption, open_database
from touchflow.console import console, print_json
from touchflow.errors import UsageError
from touchflow.settings import SECRETS, Settings, get_settings, project_dir, sources

config_app = typer.Typer(help="The configuration in effect and where each value comes from.", no_args_is_help=True)
deployments_app = typer.Typer(help="The project's Prefect deployments (prefect.yaml).", no_args_is_help=True)


def init(directory: Path = typer.Argument(..., help="Folder of the new project (created if missing)."),
         company: str = typer.Option("touchflow", "--company", help="Sender name in messages."),
         as_json: bool = JsonOption) -> None:
    """Create a project to keep in git: touchflow.toml, campaigns/, templates/, segments/, prefect.yaml."""
    from touchflow.scaffold import init_project

    written = init_project(directory, company=company)
    if as_json:
        print_json({"project": str(directory.resolve()), "files": [str(p) for p in written]})
        return
    console.print(f"created a touchflow project in {directory.resolve()} ({len(written)} files). Next:\n"
                  f"  cd {directory} && touchflow db upgrade && touchflow config show", highlight=False)


@config_app.command("show")
def config_show(as_json: bool = JsonOption) -> None:
    """Every setting in effect (secrets masked) and where it came from: environment, touchflow.toml or default."""
    settings, origin = get_settings(), sources()
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name in SECRETS or (name in ("database_url", "rate_limit_url") and "@" in str(value)):
            value = _masked(name, value, origin[name])
        rows.append({"setting": name, "value": value, "source": origin[name], "description": field.description or ""})
    project = project_dir()
    if as_json:
        print_json({"project": str(project) if project else None, "settings": rows})
        return
    table = Table(title=f"touchflow settings (project: {project or 'none: no touchflow.toml here or above'})")
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["setting"], "" if row["value"] is None else str(row["value"]), row["source"])
    console.print(table)


def _masked(name: str, value: object, origin: str) -> str | None:
    if name in ("database_url", "rate_limit_url"):
        from flows.run import without_url_password

        return without_url_password(str(value))
    return "***" if value or "Prefect Secret block" in origin else None


@deployments_app.command("write")
def deployments_write(directory: Optional[Path] = typer.Argument(None, help="The project (default: this one)."),
                      pool: str = typer.Option("touchflow-process", "--pool", help="The Prefect work pool."),
                      as_json: bool = JsonOption) -> None:
    """Write prefect.yaml: a deployment per campaign / reminder spec, each on its own schedule."""
    from flows.deployments import deployments, write

    project = directory or project_dir()
    if project is None:
        raise UsageError("no touchflow.toml here or above: give the project folder, or create one with "
                         "`touchflow init DIR`")
    path = write(project, pool)
    names = [d["name"] for d in deployments(project, pool)["deployments"]]
    if as_json:
        print_json({"path": str(path), "deployments": names})
    else:
        console.print(f"wrote {path}: {len(names)} deployments ({', '.join(names)})", highlight=False)


def serve(host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
          port: int = typer.Option(8000, "--port", help="Port.")) -> None:
    """Serve one-click unsubscribe, Twilio status callbacks and inbound STOP, and the Telegram webhook."""
    import uvicorn

    from touchflow.server import create_app

    uvicorn.run(create_app(open_database(), get_settings()), host=host, port=port, log_level="info")


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

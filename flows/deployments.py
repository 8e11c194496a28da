"""A project's ``prefect.yaml``: one Prefect deployment per campaign, reminder or journey spec, on its own schedule.

Deployments name the flow by module (``flows.campaign:campaign_flow``), so they run wherever
touchflow is installed, not from the deploying machine's checkout. The worker finds the project
from its own configuration (the pull step changes to ``$TOUCHFLOW_PROJECT_DIR``), spec paths are
relative to the project, the project's non-secret settings travel as the work pool's job
variables, and secrets come from the worker machine (environment or Prefect Secret blocks).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from flows.spec import campaign_files, load_spec
from touchflow.settings import CONFIG_FILE, SECRETS

POOL = "touchflow-process"
ENTRYPOINT = "flows.campaign:campaign_flow"
JOURNEY_ENTRYPOINT = "flows.journey:journey_flow"
PREFECT_VERSION = "3.8.8"


def job_env(project: Path) -> dict[str, str]:
    """The project's non-secret settings as ``TOUCHFLOW_*`` variables, as written in its file (paths stay relative).

    ``database_url`` stays with the worker (its project's file or environment): where the data
    lives, and with which password, is the worker machine's configuration.
    """
    path = project / CONFIG_FILE
    if not path.is_file():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return {f"TOUCHFLOW_{key.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in sorted(flat.items()) if key not in SECRETS and key != "database_url"}


def deployments(project: Path, pool: str = POOL, name: str | None = None) -> dict[str, Any]:
    """The ``prefect.yaml`` of a project, as data: a deployment per spec of ``campaigns/``."""
    entries = []
    for path in campaign_files(project / "campaigns"):
        spec = load_spec(path)
        entry: dict[str, Any] = {
            "name": spec.name, "description": spec.description or f"{spec.kind} {spec.name}",
            "entrypoint": JOURNEY_ENTRYPOINT if spec.kind == "journey" else ENTRYPOINT,
            "parameters": {"spec_path": path.relative_to(project).as_posix()},
            "work_pool": {"name": pool, "work_queue_name": "default", "job_variables": {"env": job_env(project)}},
            "tags": [spec.kind, spec.purpose]}
        if spec.schedule:
            entry["schedules"] = [{"cron": spec.schedule.cron, "timezone": spec.schedule.timezone}]
        entries.append(entry)
    return {"name": name or project.resolve().name, "prefect-version": PREFECT_VERSION, "build": None, "push": None,
            "pull": [{"prefect.deployments.steps.set_working_directory": {
                "directory": "{{ $TOUCHFLOW_PROJECT_DIR }}"}}],
            "deployments": entries}


HEADER = """\
# Prefect deployments of this touchflow project (written by `touchflow deployments write`; rerun it after
# adding or changing a campaign). One deployment per spec of campaigns/, on the spec's own schedule.
#   prefect work-pool create {pool} --type process
#   prefect deploy --all
# On each worker machine: a checkout of this project, its secrets in the environment, then
#   TOUCHFLOW_PROJECT_DIR=/path/to/project prefect worker start --pool {pool}
"""


def write(project: Path, pool: str = POOL, name: str | None = None) -> Path:
    """Write the project's ``prefect.yaml``; return its path."""
    path = project / "prefect.yaml"
    text = HEADER.format(pool=pool) + yaml.safe_dump(deployments(project, pool, name), allow_unicode=True,
                                                     sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path

"""The Prefect flow of a journey: one tick (enrol, then move everyone due), its steps as tasks.

A deployment per journey spec runs it on the spec's schedule (e.g. hourly); the work is
``flows.journeys`` (people are moved in leased groups, never one task per person).
"""

from __future__ import annotations

from typing import Any

from flows.prefect_env import configure

configure()

from prefect import flow  # noqa: E402

from flows.workers import reap_temporary_prefect_server  # noqa: E402


@flow(name="journey", persist_result=False, log_prints=False)
def journey_flow(spec_path: str) -> dict[str, Any]:
    """Run one tick of the journey in ``spec_path``; returns what it did and where everyone is."""
    from crm.db import make_engine, require_schema
    from flows.journeys import run_journey
    from flows.spec import load_spec
    from touchflow.settings import get_settings

    reap_temporary_prefect_server()
    spec = load_spec(spec_path)
    engine = make_engine(get_settings().database_url)
    require_schema(engine)
    try:
        result = run_journey(engine, spec)
    finally:
        engine.dispose()
    _artifact(result)
    return result


def _artifact(result: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact

    status = result["status"]
    lines = [f"# journey {result['journey']} at {result['at']}", "", "| step | people | due |", "| --- | --- | --- |"]
    lines += [f"| {step} | {row['people']} | {row['due']} |" for step, row in status["at_step"].items()]
    lines += ["", f"done {status['done']}, holdout {status['holdout']}, left {status['left']}: "
              + ", ".join(f"{k} {v}" for k, v in status["left_because"].items())]
    create_markdown_artifact("\n".join(lines), key=f"journey-{result['journey']}".replace("_", "-"))

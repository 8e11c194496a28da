"""prefect.yaml declares a deployment per scheduled campaign and the daily reminders, all runnable."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect.client.schemas.schedules import CronSchedule

from flows.spec import campaign_files, load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_points_at_a_flow_and_a_valid_spec_with_a_valid_schedule():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = {d["name"]: d for d in config["deployments"]}
    for deployment in deployments.values():
        module, _, name = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert callable(flow) and hasattr(flow, "name")
        spec_path = deployment["parameters"].get("spec_path")
        if spec_path:
            assert load_spec(ROOT / spec_path).name == deployment["name"]
        for schedule in deployment.get("schedules", []):
            assert CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).cron == schedule["cron"]
    specs = [load_spec(p) for p in campaign_files(ROOT / "campaigns")]
    scheduled = {s.name for s in specs if s.kind == "campaign" and s.schedule}
    assert scheduled <= set(deployments)
    assert "reminders-daily" in deployments and any(s.kind == "reminder" for s in specs)

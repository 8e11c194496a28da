"""Prefect deployments: the shipped prefect.yaml matches the specs, and the whole path an operator takes works
against a real Prefect server: a project, a work pool, ``prefect deploy --all``, scheduled runs, a process
worker completing a deployment run against the project's database."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from prefect.client.schemas.schedules import CronSchedule
from sqlalchemy import create_engine, text

from flows.deployments import deployments
from flows.spec import campaign_files, load_spec

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_the_shipped_prefect_yaml_has_a_deployment_per_spec_on_its_schedule():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    assert config["deployments"] == deployments(ROOT, name="touchflow")["deployments"]   # written, not hand-kept
    for deployment in config["deployments"]:
        module, _, name = deployment["entrypoint"].partition(":")
        assert hasattr(getattr(importlib.import_module(module), name), "name")
        assert load_spec(ROOT / deployment["parameters"]["spec_path"]).name == deployment["name"]
        for schedule in deployment.get("schedules", []):
            assert CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).cron == schedule["cron"]
    assert {d["name"] for d in config["deployments"]} == {load_spec(p).name for p in campaign_files(ROOT / "campaigns")}


def _port() -> int:
    """A free port in 8000–8999 (where the temporary Prefect server is expected to live)."""
    for port in range(8000 + os.getpid() % 900, 9000):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port in 8000-8999")


def _wait(url: str, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def _runs(api: str, deployment_id: str) -> list[dict]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "limit": 50}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def test_an_operator_deploys_a_project_and_a_worker_runs_it(tmp_path):
    home, port = Path(tempfile.mkdtemp(prefix="touchflow-prefect-")), _port()
    api = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TOUCHFLOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        project = tmp_path / "shop"
        subprocess.run([str(BIN / "touchflow"), "init", str(project)], env=env, check=True, capture_output=True)
        subprocess.run([str(BIN / "touchflow"), "demo", "--base-only", "--dir", str(project / "demo")], env=env,
                       check=True, capture_output=True, cwd=project)
        shutil.move(project / "demo" / "touchflow-demo.db", project / "touchflow.db")   # the project's database
        _wait(f"{api}/health")
        prefect = [str(BIN / "prefect"), "--no-prompt"]
        subprocess.run([*prefect, "work-pool", "create", "touchflow-process", "--type", "process"], env=env,
                       check=True, capture_output=True)
        deployed = subprocess.run([*prefect, "deploy", "--all"], env=env, cwd=project, capture_output=True, text=True)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        found = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        ids = {d["name"]: d["id"] for d in found}
        assert set(ids) == {load_spec(p).name for p in campaign_files(project / "campaigns")}
        deadline = time.time() + 60
        while time.time() < deadline and not _runs(api, ids["winback"]):
            time.sleep(1)
        scheduled = _runs(api, ids["winback"])
        assert scheduled and all(run["state_type"] == "SCHEDULED" for run in scheduled)   # the scheduler works
        started = subprocess.run([*prefect, "deployment", "run", "campaign/cat_food_thanks"], env=env,
                                 capture_output=True, text=True)
        assert started.returncode == 0, started.stdout + started.stderr
        worker_env = {**env, "TOUCHFLOW_PROJECT_DIR": str(project)}     # the worker machine's own configuration
        worker = subprocess.run([*prefect, "worker", "start", "--pool", "touchflow-process", "--run-once"],
                                env=worker_env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        runs = [r for r in _runs(api, ids["cat_food_thanks"]) if r["state_type"] != "SCHEDULED"]
        assert [r["state_type"] for r in runs] == ["COMPLETED"], runs
        database = create_engine(f"sqlite:///{project / 'touchflow.db'}")
        with database.connect() as conn:
            finished = conn.execute(text("SELECT status, campaign FROM campaign_runs")).all()
            touched = conn.execute(text("SELECT count(*) FROM touches WHERE campaign = 'cat_food_thanks'")).scalar()
        assert finished == [("finished", "cat_food_thanks")] and touched > 0
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(home, ignore_errors=True)


def test_a_campaign_run_reports_to_a_prefect_server_already_running(engine, db_url, tmp_path):
    """No PREFECT_API_URL: `campaign run` finds the running server instead of starting a temporary one."""
    from tests.test_campaigns import build_base

    build_base(engine, tmp_path)
    spec = tmp_path / "promo.yaml"
    spec.write_text("name: promo\npurpose: marketing\noffer: promo-1\ntemplate: winback\nchannels: [email, sms]\n"
                    "rule: {field: name, exists: true}\npolicy: {quiet_hours: 'off'}\n"
                    "offer_values: {discount_percent: 5}\n", encoding="utf-8")
    home, port = Path(tempfile.mkdtemp(prefix="touchflow-prefect-")), _port()
    api = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TOUCHFLOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env={**env, "PREFECT_API_URL": api}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        _wait(f"{api}/health")
        run_env = {**env, "TOUCHFLOW_PREFECT_SERVER": api, "TOUCHFLOW_DATABASE_URL": db_url,
                   "TOUCHFLOW_EMAIL_TRANSPORT": "file", "TOUCHFLOW_SMS_TRANSPORT": "file", "TOUCHFLOW_MIN_GAP_HOURS": "0",
                   "TOUCHFLOW_OUTBOX_DIR": str(tmp_path / "outbox"), "TOUCHFLOW_SEND_ATTEMPTS": "1"}
        done = subprocess.run([str(BIN / "touchflow"), "campaign", "run", str(spec), "--json"], env=run_env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["channels"]["email"]["sent"] > 0
        runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 10}, timeout=10).json()
        assert [run["state_type"] for run in runs] == ["COMPLETED"]                # the run is on that server
    finally:
        server.terminate()
        server.wait(30)

"""The shell: one error handler with exit codes, a project scaffold, settings from touchflow.toml, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import run_cli, run_json, write_csv
from touchflow.settings import reset_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project made by ``touchflow init``, with the working directory inside it."""
    folder = tmp_path / "shop"
    for name in list(os.environ):
        if name.startswith("TOUCHFLOW_"):
            monkeypatch.delenv(name)
    reset_settings()
    made = run_json("init", folder, "--company", "Зоомагазин")
    monkeypatch.chdir(folder / "campaigns")  # settings are found from below the project too
    reset_settings()
    yield folder, made
    reset_settings()


def test_init_makes_a_project_whose_settings_come_from_its_file_and_the_environment(project, monkeypatch):
    folder, made = project
    names = {Path(p).relative_to(folder).as_posix() for p in made["files"]}
    assert {"touchflow.toml", "prefect.yaml", "templates/README.md", "segments/segments.yaml",
            "campaigns/winback.yaml"} <= names
    shown = {row["setting"]: row for row in run_json("config", "show")["settings"]}
    assert shown["database_url"]["value"] == f"sqlite:///{folder / 'touchflow.db'}"      # relative to the project
    assert shown["company_name"]["value"] == "Зоомагазин" and shown["company_name"]["source"].endswith("touchflow.toml")
    assert shown["locale"]["source"].endswith("touchflow.toml") and shown["send_attempts"]["source"] == "default"
    monkeypatch.setenv("TOUCHFLOW_COMPANY_NAME", "Из окружения")
    monkeypatch.setenv("TOUCHFLOW_SMTP_PASSWORD", "s3cret-value")
    reset_settings()
    result = run_cli("config", "show", "--json")
    shown = {row["setting"]: row for row in json.loads(result.stdout)["settings"]}
    assert shown["company_name"] == {**shown["company_name"], "value": "Из окружения",
                                     "source": "environment TOUCHFLOW_COMPANY_NAME"}
    assert shown["smtp_password"]["value"] == "***" and "s3cret-value" not in result.stdout
    assert run_json("db", "upgrade")["after"]
    assert (folder / "touchflow.db").exists()
    segments = {s["name"] for s in run_json("segment", "list")["segments"]}
    assert "moscow_email" in segments and "champions" in segments                   # the project's and shipped
    listed = {c["name"] for c in run_json("campaign", "list")["campaigns"]}
    assert "winback" in listed


def test_a_project_template_replaces_the_shipped_one_of_its_name(project):
    folder, _ = project
    own = folder / "templates" / "winback"
    own.mkdir()
    (own / "sms.txt").write_text("{{ customer.greeting_name }}, это наш собственный текст", encoding="utf-8")
    listed = {t["name"]: t["channels"] for t in run_json("template", "list")["templates"]}
    assert listed["winback"] == ["sms"] and "cat_food_offer" in listed            # replaced whole; others shipped
    from channels.render import render
    from channels.render.context import sample_context

    assert render("winback", "sms", sample_context()).text == "Анна, это наш собственный текст"


def test_a_secret_in_the_file_or_an_unknown_setting_is_refused_with_what_to_do(project):
    folder, _ = project
    config = folder / "touchflow.toml"
    config.write_text(config.read_text(encoding="utf-8") + '\n[twilio]\nauth_token = "oops"\n', encoding="utf-8")
    reset_settings()
    result = run_cli("config", "show")
    assert result.exit_code == 1 and "twilio_auth_token" in result.output and "TOUCHFLOW_TWILIO_AUTH_TOKEN" in result.output
    config.write_text('[smtp]\nhots = "x"\n', encoding="utf-8")
    reset_settings()
    result = run_cli("config", "show")
    assert result.exit_code == 1 and "smtp_hots" in result.output


def test_the_project_prefect_yaml_has_a_deployment_per_spec_on_its_own_schedule(project):
    folder, _ = project
    config = yaml.safe_load((folder / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = {d["name"]: d for d in config["deployments"]}
    specs = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in (folder / "campaigns").glob("*.yaml")}
    assert set(deployments) == {spec["name"] for spec in specs.values()}
    for spec in specs.values():
        deployment = deployments[spec["name"]]
        assert deployment["entrypoint"] == ("flows.journey:journey_flow" if spec.get("kind") == "journey"
                                            else "flows.campaign:campaign_flow")       # no checkout path
        assert deployment["parameters"]["spec_path"].startswith("campaigns/")
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env["TOUCHFLOW_LOCALE"] == "ru_RU" and not any("PASSWORD" in key or "TOKEN" in key for key in env)
        assert "TOUCHFLOW_DATABASE_URL" not in env                                    # the worker's own
        if "schedule" in spec:
            assert deployment["schedules"] == [{"cron": spec["schedule"]["cron"],
                                                "timezone": spec["schedule"]["timezone"]}]
    assert deployments["car_service_call"]["schedules"][0]["cron"] == "0 9 * * 1-5"   # not the daily 09:00 of all


def test_errors_print_one_line_and_their_exit_code(cli_env, tmp_path):
    missing = run_cli("stats")
    assert missing.exit_code == 1 and missing.output.startswith("error:") and "touchflow db upgrade" in missing.output
    run_cli("db", "upgrade")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npurpose: spam\n", encoding="utf-8")
    result = run_cli("campaign", "check", bad)
    assert result.exit_code == 1 and "bad.yaml" in result.output and "Traceback" not in result.output
    assert run_cli("customers", "show", "NOPE").exit_code == 1
    assert run_cli("customer", "show", "NOPE").exit_code == 1                        # the same group
    assert run_cli("tasks", "complete", "99", "--outcome", "reached").exit_code == 1
    assert run_cli("metrics", "--since", "yesterday").exit_code == 2                 # a usage error
    rows = write_csv(tmp_path / "c.csv", ["external_id", "email"], [["A", "a@mail.ru"], ["B", "not-an-email"]])
    assert run_cli("import", "customers", rows).exit_code == 3


def test_a_full_disk_under_the_database_ends_the_run_with_a_clear_error(tmp_path):
    """A campaign whose database fills its disk: exit 6, the disk named, no traceback."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount (root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    source = tmp_path / "base.db"
    env = {**os.environ, "TOUCHFLOW_DATABASE_URL": f"sqlite:///{source}", "TOUCHFLOW_EMAIL_TRANSPORT": "file",
           "TOUCHFLOW_OUTBOX_DIR": str(tmp_path / "outbox")}
    env.pop("TOUCHFLOW_CONFIG", None)
    cli = [sys.executable, "-m", "touchflow.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=tmp_path)
    rows = [[f"K{i:04d}", f"Клиент {i}", f"k{i}@mail.ru"] for i in range(1500)]
    consents = [[f"K{i:04d}", "email", "marketing", "granted", "2025-01-01"] for i in range(1500)]
    for kind, path in (("customers", write_csv(tmp_path / "c.csv", ["external_id", "name", "email"], rows)),
                       ("consents", write_csv(tmp_path / "k.csv", ["customer", "channel", "purpose", "status", "at"],
                                              consents))):
        subprocess.run([*cli, "import", kind, str(path)], env=env, check=True, capture_output=True, cwd=tmp_path)
    size = source.stat().st_size
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + 96 * 1024}", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()}")
    try:
        shutil.copyfile(source, disk / "base.db")
        env["TOUCHFLOW_DATABASE_URL"] = f"sqlite:///{disk / 'base.db'}"
        spec = tmp_path / "mail.yaml"
        spec.write_text("name: mail\npurpose: marketing\noffer: m-1\ntemplate: winback\nchannels: [email]\n"
                        "rule: {field: name, contains: Клиент}\npolicy: {quiet_hours: 'off'}\n", encoding="utf-8")
        done = subprocess.run([*cli, "campaign", "run", str(spec), "--direct"], env=env, capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert done.returncode == 6, done.stderr
    assert "is full" in done.stderr and "base.db" in done.stderr and "Traceback" not in done.stderr

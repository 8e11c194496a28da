"""The campaign runs as a real Prefect flow (a temporary server, one task per batch)."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="touchflow-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from sqlalchemy import select  # noqa: E402

from crm.models import CampaignRun, Touch  # noqa: E402
from flows.campaign import campaign_flow  # noqa: E402
from tests.test_campaigns import promo_spec  # noqa: E402


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_campaign_flow_runs_batches_as_tasks(harness, engine, cli_env, tmp_path, monkeypatch):
    path = promo_spec(engine, tmp_path, monkeypatch)
    state = campaign_flow(str(path), batch_size=100, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["channels"] == {"email": {"sent": 9}, "sms": {"sent": 1}}
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 9
    with engine.connect() as conn:
        runs = conn.execute(select(CampaignRun.__table__)).all()
        sent = conn.execute(select(Touch.__table__).where(Touch.__table__.c.status == "sent")).all()
    assert [r.status for r in runs] == ["finished"] and len(sent) == 10
    again = campaign_flow(str(path), batch_size=100)
    assert again["channels"] == {} and again["not_contacted"]["cooling_down"] == 10


def test_secrets_come_from_prefect_secret_blocks(harness, monkeypatch):
    from prefect.blocks.system import Secret

    from channels.registry import build_channel
    from touchflow.secrets import SecretMissing, secret
    from touchflow.settings import Settings

    Secret(value="123456:FROM-BLOCK").save("touchflow-test-telegram", overwrite=True)
    monkeypatch.setenv("TOUCHFLOW_TELEGRAM_BOT_TOKEN_BLOCK", "touchflow-test-telegram")
    assert secret(None, "TOUCHFLOW_TELEGRAM_BOT_TOKEN") == "123456:FROM-BLOCK"
    channel = build_channel("telegram", Settings(telegram_transport="telegram"))
    assert channel.config.token == "123456:FROM-BLOCK" and "FROM-BLOCK" not in repr(channel)
    monkeypatch.setenv("TOUCHFLOW_TELEGRAM_BOT_TOKEN_BLOCK", "no-such-block")
    with pytest.raises(SecretMissing, match="no-such-block"):
        secret(None, "TOUCHFLOW_TELEGRAM_BOT_TOKEN")


def test_campaign_flow_shares_its_batch_tasks_among_processes(harness, engine, cli_env, tmp_path, monkeypatch):
    """``workers=2``: one task per batch on a process pool, each person still contacted once."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    path = promo_spec(engine, tmp_path, monkeypatch, "pooled")
    state = campaign_flow(str(path), batch_size=3, workers=2, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["channels"] == {"email": {"sent": 9}, "sms": {"sent": 1}}
    recipients = [p.read_text(encoding="utf-8").split("To: ", 1)[1].split("\n", 1)[0]
                  for p in (tmp_path / "outbox" / "email").glob("*.eml")]
    assert len(recipients) == 9 and len(set(recipients)) == 9
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
            sort=TaskRunSort.ID_DESC, limit=200)
    batches = [r for r in runs if r.name.startswith("campaign-batch-in-worker")]
    assert len(batches) == -(-summary["selected"] // 3) and all(r.state.is_completed() for r in batches)


def test_a_run_shows_its_progress_and_summary_and_fails_when_its_sends_did(harness, engine, cli_env, tmp_path,
                                                                            monkeypatch):
    """Artifacts in the UI: progress to 100 % and the summary; a run whose sends all failed ends Failed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tests.servers import free_port
    from touchflow.settings import reset_settings

    path = promo_spec(engine, tmp_path, monkeypatch)
    monkeypatch.setenv("TOUCHFLOW_EMAIL_TRANSPORT", "smtp")
    monkeypatch.setenv("TOUCHFLOW_SMTP_PORT", str(free_port()))      # nobody listens: every send fails
    monkeypatch.setenv("TOUCHFLOW_SEND_ATTEMPTS", "1")
    reset_settings()
    state = campaign_flow(str(path), batch_size=3, return_state=True)
    assert state.is_failed() and "touches failed" in state.message
    summary = state.result(raise_on_failure=False)
    assert summary["channels"]["email"]["failed"] == 9
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    kinds = {artifact.type: artifact for artifact in artifacts}
    assert kinds["progress"].data == 100.0
    assert "| email |" in kinds["markdown"].data and "promo" in kinds["markdown"].data


def test_the_instance_secret_comes_from_a_prefect_secret_block_too(harness, monkeypatch):
    """TOUCHFLOW_SECRET_KEY_BLOCK: unsubscribe links and seals are keyed with the block's value."""
    from prefect.blocks.system import Secret

    from crm.keys import configured_secret
    from touchflow.settings import reset_settings

    Secret(value="key-from-the-block").save("touchflow-test-secret-key", overwrite=True)
    monkeypatch.delenv("TOUCHFLOW_SECRET_KEY", raising=False)
    monkeypatch.setenv("TOUCHFLOW_SECRET_KEY_BLOCK", "touchflow-test-secret-key")
    reset_settings()
    assert configured_secret() == "key-from-the-block"


def test_a_journey_runs_as_a_prefect_flow_and_moves_each_person_once(harness, engine, cli_env, tmp_path, monkeypatch):
    from flows.journey import journey_flow
    from tests.test_journeys import build, journey_file
    from touchflow.settings import reset_settings

    build(engine, tmp_path, 5)
    path = journey_file(tmp_path)
    for name, value in {"TOUCHFLOW_CAMPAIGNS_DIR": str(tmp_path / "campaigns"), "TOUCHFLOW_EMAIL_TRANSPORT": "file",
                        "TOUCHFLOW_OUTBOX_DIR": str(tmp_path / "outbox")}.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    state = journey_flow(str(path), return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["counts"]["sent:email"] == 5 and result["status"]["at_step"]["three_days"]["people"] == 5
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 5
    assert journey_flow(str(path))["counts"] == {}                        # a rerun: nobody is due, nothing sent
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 5

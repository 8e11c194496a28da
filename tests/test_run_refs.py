"""What travels to a run's other processes: no secret, no password, and how many share the provider's limits."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from channels import ratelimit
from flows import engine as campaign_engine
from flows.campaign import _require_shared_limits
from flows.run import RunRef, without_url_password
from flows.spec import CampaignSpec
from touchflow.errors import ConfigError
from touchflow.settings import Settings

SPEC = CampaignSpec(name="refs", rule={"field": "name", "exists": True}, purpose="marketing", offer="o",
                    template="winback", channels=["telegram", "email"], policy={"quiet_hours": "off"})


def test_a_pool_process_without_a_shared_limiter_keeps_its_share_of_every_limit(engine, db_url, monkeypatch):
    monkeypatch.setenv("TOUCHFLOW_DATABASE_URL", db_url)
    run = campaign_engine.start(engine, SPEC, now=datetime.now(timezone.utc), settings=Settings(
        database_url=db_url, telegram_transport="memory", email_transport="memory",
        rate_limit_url="redis://:s3cret-pw@127.0.0.1:6379/0"))
    try:
        ref = replace(RunRef.of(run), local_processes=3)
        data = pickle.dumps(ref)
        assert b"s3cret-pw" not in data and ref.chosen["rate_limit_url"] == "redis://127.0.0.1:6379/0"
        unshared = replace(ref, chosen={k: v for k, v in ref.chosen.items() if k != "rate_limit_url"})
        monkeypatch.setattr(ratelimit.LOCAL, "share", 1)
        other = unshared.open()
        assert ratelimit.LOCAL.share == 3                      # a third of each limit in this process
        other.engine.dispose()
    finally:
        campaign_engine.finish(run)


def test_a_dask_run_of_a_limited_channel_needs_the_shared_limiter():
    run = campaign_engine.Run(engine=None, spec=SPEC, run_id="r", now=datetime.now(timezone.utc),
                              as_of=datetime.now(timezone.utc).date(), policy=None,
                              settings=Settings(telegram_transport="telegram"), offer_values={})
    with pytest.raises(ConfigError, match="TOUCHFLOW_RATE_LIMIT_URL"):
        _require_shared_limits(run, "tcp://127.0.0.1:8786")
    _require_shared_limits(replace(run, settings=Settings(telegram_transport="telegram",
                                                          rate_limit_url="redis://127.0.0.1:6379/0")), "tcp://x")
    _require_shared_limits(replace(run, settings=Settings(telegram_transport="file")), "tcp://x")


def test_passwords_are_left_out_of_urls_that_travel_or_are_shown():
    assert without_url_password("redis://:pw@host:6379/1") == "redis://host:6379/1"
    assert without_url_password("redis://user:pw@host/0") == "redis://user@host/0"
    assert without_url_password("redis://host:6379/0") == "redis://host:6379/0"

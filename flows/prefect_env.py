"""Prefect settings touchflow needs before Prefect is imported: no telemetry, no result persistence, and which server.

A flow reports to the Prefect API that is configured (``PREFECT_API_URL`` in the environment or the
active Prefect profile). When none is, touchflow looks for a Prefect server already running at
``TOUCHFLOW_PREFECT_SERVER`` (default ``http://127.0.0.1:4200/api``, where ``prefect server start``
listens) and uses it; only when none answers does Prefect start its temporary server for the run
(about 9 s of a run's time). ``TOUCHFLOW_PREFECT_SERVER=off`` skips the look.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    # The temporary server takes 10-18 s to start on two idle cores; Prefect gives up at 20 s, so a busy machine
    # failed runs with "Timed out while attempting to connect to ephemeral Prefect API server".
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
LOCAL_SERVER = "http://127.0.0.1:4200/api"


def configure() -> None:
    """Set the defaults unless the environment already says otherwise; use a running Prefect server if there is one."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    use_a_running_server()


def use_a_running_server() -> str | None:
    """The Prefect API this process's flows report to, if one is configured or answers; None: a temporary server."""
    configured = os.environ.get("PREFECT_API_URL") or _profile_api_url()
    if configured:
        return configured
    candidate = os.environ.get("TOUCHFLOW_PREFECT_SERVER", LOCAL_SERVER).strip()
    if candidate.lower() in ("", "off", "none") or not _answers(candidate):
        return None
    os.environ["PREFECT_API_URL"] = candidate
    return candidate


def _answers(api: str) -> bool:
    """Whether a Prefect server answers its health check at ``api`` (a refused connection costs a millisecond)."""
    import httpx

    try:
        return httpx.get(f"{api.rstrip('/')}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _profile_api_url() -> str | None:
    """``PREFECT_API_URL`` of the active Prefect profile (``$PREFECT_HOME/profiles.toml``), if it sets one."""
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    return (data.get("profiles", {}).get(active, {}) or {}).get("PREFECT_API_URL")

"""Prefect settings touchflow needs before Prefect is imported: no telemetry, no result persistence."""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
}


def configure() -> None:
    """Set the defaults unless the environment already says otherwise."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)

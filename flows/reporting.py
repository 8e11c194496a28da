"""What a run shows in Prefect's UI: progress while it runs, its summary as an artifact, and an honest end state.

A run whose sends mostly failed (a provider down, a full disk) ends ``Failed`` with its summary,
not plain "Completed": an operator looking at the flow runs sees it. Plain functions over the
summary (``outcome``, ``markdown``) are tested without Prefect.
"""

from __future__ import annotations

import time
from typing import Any

FAILED_SHARE = 0.5  # more than half of the touches handed over failed (or may not have left): the run failed


def outcome(summary: dict[str, Any]) -> str | None:
    """Why a finished run counts as failed (None when it did its job)."""
    counts = {"sent": 0, "delivered": 0, "failed": 0, "unknown": 0}
    for per_channel in summary.get("channels", {}).values():
        for status in counts:
            counts[status] += per_channel.get(status, 0)
    tried = sum(counts.values())
    bad = counts["failed"] + counts["unknown"]
    if tried and bad / tried > FAILED_SHARE:
        return (f"{bad} of {tried} touches failed or may not have left ({counts['failed']} failed, "
                f"{counts['unknown']} unknown): see the summary for the channels and reasons")
    return None


def markdown(summary: dict[str, Any]) -> str:
    """The run's summary as a Markdown artifact: per channel, per reason not contacted, the rest."""
    lines = [f"# {summary['campaign']}{' (dry run)' if summary.get('dry_run') else ''}",
             f"run `{summary['run_id']}`, offer `{summary.get('offer')}`, {summary.get('purpose')}; "
             f"**{summary.get('selected', 0)} selected**", ""]
    channels = summary.get("channels", {})
    if channels:
        statuses = sorted({status for counts in channels.values() for status in counts})
        lines += ["| channel | " + " | ".join(statuses) + " |", "|---" * (len(statuses) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(str(counts.get(s, 0)) for s in statuses) + " |"
                  for name, counts in sorted(channels.items())]
        lines.append("")
    if summary.get("not_contacted"):
        lines += ["| not contacted | people |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in summary["not_contacted"].items()]
        lines.append("")
    other = {k: v for k, v in summary.get("other", {}).items() if not isinstance(v, dict)}
    if other:
        lines.append(", ".join(f"{k}: {v}" for k, v in other.items()))
    return "\n".join(lines)


class ProgressArtifact:
    """A Prefect progress artifact for a run, updated at most once every ``every`` seconds."""

    def __init__(self, campaign: str, every: float = 2.0) -> None:
        from prefect.artifacts import create_progress_artifact

        self.id = create_progress_artifact(progress=0.0, description=f"customers of {campaign} done")
        self.every, self.last = every, 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not total or (now - self.last < self.every and done < total):
            return
        from prefect.artifacts import update_progress_artifact

        self.last = now
        update_progress_artifact(self.id, progress=min(100.0, 100.0 * done / total))

"""Campaign runs: a lease while a run works, and settling the touches of runs that died.

A run holds a lease (``campaign_runs.lease_until``) that a thread of its process renews. Several
runs of one campaign may work at once (a schedule overlapping a manual run, a Prefect retry):
the person's locks keep them from contacting anyone twice. Only a run whose lease has expired is
taken for dead, by whichever run starts next: it becomes ``interrupted``, the touches it had
handed to a provider (``sending``) become ``unknown`` (never resent blindly) and those it had
only claimed are released (``skipped``, ``run_interrupted``) for the next run; its summary is
recomputed from the history.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from crm.db import write_tx
from crm.ledger.moves import move
from crm.models import CampaignRun, Touch, utcnow

runs = CampaignRun.__table__
touches = Touch.__table__
IN_FLIGHT = ("claimed", "sending")


def owner() -> str:
    """Who holds a lease, for people reading ``campaign_runs``: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def open_run(engine: Engine, run_id: str, campaign: str, *, dry_run: bool, now: datetime,
             lease_seconds: float) -> None:
    """Record a new run holding a lease."""
    with write_tx(engine) as conn:
        conn.execute(insert(runs).values(id=run_id, campaign=campaign, dry_run=dry_run, started_at=now,
                                         status="running", summary={}, owner=owner(),
                                         lease_until=utcnow() + timedelta(seconds=lease_seconds)))


def renew(engine: Engine, run_id: str, lease_seconds: float) -> bool:
    """Extend a run's lease; False when the run is no longer running (it was taken for dead)."""
    with write_tx(engine) as conn:
        moved = conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "running")
                             .values(lease_until=utcnow() + timedelta(seconds=lease_seconds)))
    return moved.rowcount == 1


def close_run(engine: Engine, run_id: str, status: str, summary: dict[str, Any]) -> None:
    """End a run: its status, its summary, no lease."""
    with write_tx(engine) as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(finished_at=utcnow(), status=status,
                                                                     summary=summary, lease_until=None))


class Lease:
    """Renews a run's lease from a background thread until stopped; ``lost`` once the run was taken for dead."""

    def __init__(self, engine: Engine, run_id: str, seconds: float) -> None:
        self.engine, self.run_id, self.seconds = engine, run_id, seconds
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{run_id[:8]}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                if not renew(self.engine, self.run_id, self.seconds):
                    self.lost = True
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: try again at the next beat
                continue

    def stop(self) -> None:
        """Stop renewing (the run is closing)."""
        self._stop.set()
        self._thread.join(timeout=5)


def reap(engine: Engine, now: datetime | None = None) -> list[dict[str, Any]]:
    """Take every run whose lease has expired for dead and settle its touches; return what was done per run."""
    now = now or utcnow()
    with engine.connect() as conn:
        expired = conn.execute(select(runs.c.id, runs.c.campaign).where(
            runs.c.status == "running", (runs.c.lease_until.is_(None)) | (runs.c.lease_until < now))).all()
    done = []
    for run_id, campaign in expired:
        with write_tx(engine) as conn:
            taken = conn.execute(update(runs).where(
                runs.c.id == run_id, runs.c.status == "running",
                (runs.c.lease_until.is_(None)) | (runs.c.lease_until < now))
                .values(status="interrupted", finished_at=now, lease_until=None)).rowcount
        if taken != 1:
            continue  # renewed meanwhile, or another run reaped it first
        unknown, released = settle(engine, run_id)
        with write_tx(engine) as conn:
            summary = summary_from_history(conn, run_id) | {
                "campaign": campaign, "interrupted": True, "unknown_when_reaped": unknown,
                "released_when_reaped": released}
            conn.execute(update(runs).where(runs.c.id == run_id).values(summary=summary))
        done.append({"run_id": run_id, "campaign": campaign, "unknown": unknown, "released": released})
    return done


def settle(engine: Engine, run_id: str, reason: str = "run_interrupted") -> tuple[int, int]:
    """A stopped run's in-flight touches: ``sending`` ones become unknown, ``claimed`` ones are released.

    Called for a run taken for dead (``reap``) and by a run that stops on an error (``flows.run.finish``).
    """
    with engine.connect() as conn:
        rows = conn.execute(select(touches.c.id, touches.c.status)
                            .where(touches.c.run_id == run_id, touches.c.status.in_(IN_FLIGHT))).all()
    moved = move(engine, [
        {"touch_id": tid, "status": "unknown",
         "detail": "the run that sent it stopped before recording the provider's answer"} if status == "sending"
        else {"touch_id": tid, "status": "skipped", "reason": reason,
              "detail": "the run that claimed it stopped before sending; released for the next run"}
        for tid, status in rows])
    unknown = sum(1 for tid, status in rows if status == "sending" and tid in moved)
    return unknown, len(moved) - unknown


def summary_from_history(conn: Connection, run_id: str) -> dict[str, Any]:
    """What a run's touches ended as, read from the history (right whichever process sent them)."""
    channels: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    other: dict[str, int] = {}
    for channel, status, reason, count in conn.execute(
            select(touches.c.channel, touches.c.status, touches.c.reason, func.count())
            .where(touches.c.run_id == run_id).group_by(touches.c.channel, touches.c.status, touches.c.reason)):
        if status == "skipped":
            reasons[reason or "unknown"] = reasons.get(reason or "unknown", 0) + count
        elif channel == "document":
            other["documents"] = other.get("documents", 0) + count
        else:
            counts = channels.setdefault(channel, {})
            counts[status] = counts.get(status, 0) + count
    selected = conn.execute(select(func.count(func.distinct(touches.c.customer_id)))
                            .where(touches.c.run_id == run_id, touches.c.channel.is_distinct_from("document"))
                            ).scalar_one()
    return {"run_id": run_id, "selected": selected, "channels": channels,
            "not_contacted": dict(sorted(reasons.items())), "other": other}


def live_runs(engine: Engine, campaign: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Runs of ``campaign`` holding a lease now (another run working beside this one)."""
    now = now or utcnow()
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(runs.c.id, runs.c.owner, runs.c.started_at, runs.c.lease_until)
            .where(runs.c.campaign == campaign, runs.c.status == "running", runs.c.lease_until >= now))]


def live_campaigns(engine: Engine, now: datetime | None = None) -> set[str]:
    """The campaigns with a real (not dry) run holding a lease now."""
    now = now or utcnow()
    with engine.connect() as conn:
        return set(conn.execute(select(runs.c.campaign).where(runs.c.status == "running", runs.c.lease_until >= now,
                                                              runs.c.dry_run.is_(False)).distinct()).scalars())


def one(engine: Engine, run_id: str) -> dict[str, Any] | None:
    """One run by id, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    return dict(row._mapping) if row else None


def recent(engine: Engine, *, campaign: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs (of one campaign), newest first."""
    query = select(runs).order_by(runs.c.started_at.desc()).limit(limit)
    if campaign:
        query = query.where(runs.c.campaign == campaign)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]

"""Bounces that arrive after the send (RFC 3464 reports): the touch failed, the address bounced or counted soft.

A hard bounce (``Action: failed`` with a 5.x.x status) moves the touch to ``failed`` (moves only
go forward, as Twilio's ``undelivered`` after ``sent`` does: a ``sent`` or ``unknown`` touch may
still fail, a final one stays as it is) and marks the address ``bounced`` on every record holding
it. A soft bounce (a 4.x.x status, or ``Action: delayed``) leaves the address active; a failed
one (the relay gave up retrying) still fails the touch, which was not delivered. Soft bounces of
``soft_limit`` touches in a row to one address (its latest handed-over touches up to this one,
each with a soft bounce, none between without) count as a hard bounce: a mailbox full for weeks
is as good as gone. Each (touch, action, status) is recorded once in ``bounces``: a report that
arrives twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, insert, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from crm.db import write_tx
from crm.ledger.contacts import address_of, mark_address
from crm.ledger.moves import move_in
from crm.models import Bounce, ContactStatus, Touch, utcnow

touches = Touch.__table__
bounces = Bounce.__table__
HANDED_OVER = ("sent", "delivered", "unknown")  # what a relay may have taken (failed ones count with a bounce row)


@dataclass(frozen=True)
class Report:
    """One recipient's line of a delivery status notification, as plain data."""

    touch_id: int
    action: str            # failed or delayed
    status: str            # the RFC 3463 code: 5.1.1, 4.2.2
    diagnostic: str | None = None

    @property
    def severity(self) -> str:
        """``hard`` for a failure with a 5.x.x (or no) status, ``soft`` for a 4.x.x or a delay."""
        return "hard" if self.action == "failed" and not self.status.startswith("4") else "soft"


def record(engine: Engine, report: Report, *, soft_limit: int = 3, at: datetime | None = None) -> dict:
    """Record ``report`` on its touch and address; what happened, as a dict (``outcome``: recorded,
    duplicate, not_email, no_touch)."""
    at = at or utcnow()
    with write_tx(engine) as conn:
        touch = conn.execute(select(touches.c.id, touches.c.channel, touches.c.direction, touches.c.address,
                                    touches.c.contact_point_id, touches.c.status)
                             .where(touches.c.id == report.touch_id)).first()
        if touch is None:
            return {"outcome": "no_touch", "touch_id": report.touch_id}
        if touch.channel != "email" or touch.direction != "out":
            return {"outcome": "not_email", "touch_id": touch.id}
        if not _first_time(conn, report, at):
            return {"outcome": "duplicate", "touch_id": touch.id, "severity": report.severity}
        moved = False
        if report.action == "failed":
            moved = bool(move_in(conn, [{"touch_id": touch.id, "status": "failed", "error_code": report.status,
                                         "error_message": (report.diagnostic or "")[:2000] or None,
                                         "detail": f"bounced {report.status}"}], at=at))
        address = _address(conn, touch)
        severity, in_a_row = report.severity, 0
        if severity == "soft" and address is not None:
            in_a_row = soft_in_a_row(conn, address[1], touch.id, soft_limit)
        marked = 0
        if address is not None and (severity == "hard" or in_a_row >= soft_limit):
            why = (f"bounced {report.status}: {report.diagnostic or ''}".strip() if severity == "hard" else
                   f"{in_a_row} soft bounces in a row (last {report.status})")
            marked = mark_address(conn, *address, ContactStatus.bounced.value, why)
        return {"outcome": "recorded", "touch_id": touch.id, "severity": severity, "touch_failed": moved,
                "soft_in_a_row": in_a_row, "address_bounced": marked > 0, "records_marked": marked}


def _first_time(conn: Connection, report: Report, at: datetime) -> bool:
    """Insert the report's row; False when this (touch, action, status) was recorded before."""
    try:
        with conn.begin_nested():
            conn.execute(insert(bounces).values(touch_id=report.touch_id, severity=report.severity,
                                                action=report.action[:16], status=report.status[:16], at=at))
    except IntegrityError:
        return False
    return True


def _address(conn: Connection, touch) -> tuple[str, str] | None:
    """(kind, value) the touch went to: its contact point's, else the address kept on the touch."""
    if touch.contact_point_id is not None:
        found = address_of(conn, touch.contact_point_id)
        if found is not None and not found[1].startswith("erased:"):
            return found
    return ("email", touch.address) if touch.address else None


def soft_in_a_row(conn: Connection, address: str, touch_id: int, limit: int) -> int:
    """How many of the address's latest handed-over email touches up to ``touch_id`` soft-bounced, without a break
    (looks at ``limit`` of them at most)."""
    bounced = exists().where(bounces.c.touch_id == touches.c.id)
    soft = exists().where(bounces.c.touch_id == touches.c.id, bounces.c.severity == "soft")
    rows = conn.execute(select(touches.c.id, soft.label("soft"))
                        .where(touches.c.channel == "email", touches.c.direction == "out",
                               touches.c.address == address, touches.c.id <= touch_id,
                               or_(touches.c.status.in_(HANDED_OVER), bounced))
                        .order_by(touches.c.id.desc()).limit(limit)).all()
    count = 0
    for row in rows:
        if not row.soft:
            break
        count += 1
    return count

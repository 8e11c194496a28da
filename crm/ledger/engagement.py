"""Opens and clicks of email touches: recorded here (the only writer of ``engagements``), and summed per campaign.

Why a table of their own, not ``touch_events`` rows: a touch event is a move of the touch that
touchflow made or a provider reported (claimed, sending, sent, delivered, failed); the touch's
state is the fold of its events and the events are hash-chained and sealed, because they are the
evidence of what was done to a person (``crm.ledger.audit``). An open or a click is neither: it is
what some client did with a message, written by an unauthenticated request anyone holding the
email can repeat, and often not the person at all (mail scanners, image proxies). In the chain it
would let any such request append to the evidence and contend for the chain's head on every
pixel, it would need a status the fold skips (and every reader of events to know it), and it
could not be erased: a click's URL can be personal, and a chained row cannot be edited. Kept apart
they move no status and cannot break ``compliance verify``; erasure clears their URLs.

Rules:
- The first open and every click are kept. Repeated opens are collapsed: at most one open of a
  touch per ``OPEN_WINDOW`` (10 minutes of the clock: the window is ``at // OPEN_WINDOW``), by the
  unique key (touch_id, kind, human, slot), so the database settles two pixels fetched at once.
  A machine's open does not take a person's window (``human`` is in the key).
- ``client`` is the class of the user agent (``classify``): browser, proxy (an image proxy such
  as Gmail's, which fetches the pixel when the person opens the message), scanner (a security
  gateway or a script), bot, unknown. The user agent itself and the address are not kept.
- Not human: a scanner or a bot by its user agent, or anything within ``SCANNER_SECONDS`` of the
  touch being handed over (no person opens and clicks that fast; gateways that follow every link
  on arrival often pose as browsers). Such rows are kept (``human`` false) and not counted.
- A click counts as an open too (the person read the message with images blocked).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from crm.db import write_tx
from crm.models import Engagement, Touch, utcnow

engagements = Engagement.__table__
touches = Touch.__table__

OPEN_WINDOW = 600          # seconds: one open of a touch per window of the clock
SCANNER_SECONDS = 2.0      # an open or click this soon after the touch was handed over is a machine's
_PATTERNS = (              # (class, pattern), first match wins; lower-cased user agent
    ("proxy", re.compile(r"googleimageproxy|ggpht\.com|yahoomailproxy|outlook-ios|owa-?proxy")),
    ("scanner", re.compile(r"barracuda|mimecast|proofpoint|symantec|messagelabs|trend ?micro|fireeye|forcepoint"
                           r"|zscaler|sophos|cisco|ironport|safelinks|microsoft office protection|bingpreview"
                           r"|python-requests|python-urllib|aiohttp|httpx|curl/|wget/|go-http-client|java/"
                           r"|okhttp|libwww|headlesschrome|phantomjs")),
    ("bot", re.compile(r"bot\b|bot/|crawler|spider|slurp|preview")),
    ("browser", re.compile(r"mozilla/|opera/|thunderbird")),
)
MACHINES = ("scanner", "bot")


def classify(user_agent: str | None) -> str:
    """The class of a user agent: browser, proxy, scanner, bot or unknown (documented in the module)."""
    agent = (user_agent or "").lower()
    if not agent:
        return "unknown"
    return next((kind for kind, pattern in _PATTERNS if pattern.search(agent)), "unknown")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _human(client: str, at: datetime, handed_over: datetime | None) -> bool:
    """A person, not a machine: not a scanner's user agent, and not within ``SCANNER_SECONDS`` of the hand-over."""
    if client in MACHINES:
        return False
    return handed_over is None or _aware(at) - _aware(handed_over) >= timedelta(seconds=SCANNER_SECONDS)


def _insert(conn: Connection, row: dict[str, Any]) -> bool:
    """Insert unless the unique key already holds the row (a collapsed open); True when written."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(engagements).values(**row).on_conflict_do_nothing().returning(engagements.c.id)
    return conn.execute(statement).first() is not None  # (rowcount is -1 here under psycopg)


def record(engine: Engine, touch_id: int, kind: str, *, url: str | None = None, user_agent: str | None = None,
           at: datetime | None = None) -> bool:
    """Record an open (``opened``) or a click (``clicked``, with its ``url``) of an email touch.

    Returns whether a row was written: False for an unknown or non-email touch, or an open
    collapsed into an earlier one of the same window (the module's rules).
    """
    if kind not in ("opened", "clicked"):
        raise ValueError(f"kind {kind!r}: opened or clicked")
    at = at or utcnow()
    client = classify(user_agent)
    with write_tx(engine) as conn:
        touch = conn.execute(select(touches.c.channel, touches.c.direction, touches.c.sent_at, touches.c.updated_at)
                             .where(touches.c.id == touch_id)).first()
        if touch is None or touch.channel != "email" or touch.direction != "out":
            return False
        human = _human(client, at, touch.sent_at or touch.updated_at)
        slot = int(_aware(at).timestamp()) // OPEN_WINDOW if kind == "opened" else None
        return _insert(conn, {"touch_id": touch_id, "kind": kind, "at": at, "url": url[:2000] if url else None,
                              "client": client, "human": human, "slot": slot})


def forget_urls(conn: Connection, customer_id: int) -> int:
    """Erasure: clear the URLs of a customer's clicks (they may be personal); the counts stay, as touch statistics do."""
    mine = select(touches.c.id).where(touches.c.customer_id == customer_id).scalar_subquery()
    result = conn.execute(engagements.update().where(engagements.c.touch_id.in_(mine), engagements.c.url.is_not(None))
                          .values(url=None))
    return result.rowcount or 0


def of_touches(conn: Connection, touch_ids: list[int]) -> list[dict[str, Any]]:
    """The opens and clicks of some touches, oldest first (a customer's card, a subject access export)."""
    if not touch_ids:
        return []
    rows = conn.execute(select(engagements).where(engagements.c.touch_id.in_(touch_ids))
                        .order_by(engagements.c.touch_id, engagements.c.id))
    return [dict(row._mapping) for row in rows]


# ---------------------------------------------------------------------------------------------
# Results

TRACKED = ("email",)  # channels with opens and clicks; the others get no rates (not 0 %)
_HANDED_OVER = ("sent", "delivered")
_COUNTED = (*_HANDED_OVER, "failed", "unknown")


def _filters(campaign: str | None, since: datetime | None, until: datetime | None) -> list[Any]:
    where = [touches.c.direction == "out", touches.c.campaign.is_not(None)]
    if campaign is not None:
        where.append(touches.c.campaign == campaign)
    if since is not None:
        where.append(touches.c.created_at >= since)
    if until is not None:
        where.append(touches.c.created_at <= until)
    return where


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def engagement_summary(engine: Engine, campaign: str | None = None, since: datetime | None = None,
                       until: datetime | None = None) -> dict[str, Any]:
    """Per campaign and channel: sent, delivered, failed (by error code), unknown, unique opens and clicks, rates.

    Over the outgoing touches created in [since, until]. ``sent`` is what a provider took and did
    not report failed (``sent`` or ``delivered``); ``failed`` counts every failure, refused at
    sending or reported later (Twilio's undelivered / failed callbacks, Telegram's errors), each
    code in ``failures``. Opens and clicks are a person's only (``human``), unique per touch, a
    click counting as an open; the rates are over ``sent``, click-to-open over opens. Decisions not
    to contact (``skipped``) and touches not yet sent (``deferred``, ``claimed``) are left out here.
    """
    where = _filters(campaign, since, until)
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    failures: dict[tuple[str, str], Counter] = defaultdict(Counter)
    with engine.connect() as conn:
        for row in conn.execute(select(touches.c.campaign, touches.c.channel, touches.c.status, touches.c.error_code,
                                       func.count()).where(*where, touches.c.status.in_(_COUNTED))
                                .group_by(touches.c.campaign, touches.c.channel, touches.c.status,
                                          touches.c.error_code)):
            key = (row[0], row[1] or "")
            counts[key][row.status] += row[4]
            if row.status == "failed":
                failures[key][row.error_code or "unknown"] += row[4]
        unique = _unique(conn, where)
        machines = _machines(conn, where)
    result: dict[str, dict[str, Any]] = {}
    for (name, channel), by_status in sorted(counts.items()):
        result.setdefault(name, {})[channel] = _channel_line(channel, by_status, failures[(name, channel)],
                                                             unique.get((name, channel), {}),
                                                             machines.get((name, channel), 0))
    return {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
            "campaigns": result}


def _channel_line(channel: str, by_status: Counter, failed_by: Counter, unique: dict[str, int],
                  machines: int) -> dict[str, Any]:
    sent = sum(by_status[s] for s in _HANDED_OVER)
    line: dict[str, Any] = {"sent": sent, "delivered": by_status["delivered"], "failed": by_status["failed"],
                            "unknown": by_status["unknown"], "failures": dict(sorted(failed_by.items()))}
    if channel in TRACKED:
        opens, clicks = unique.get("opened", 0), unique.get("clicked", 0)
        line.update({"unique_opens": opens, "unique_clicks": clicks, "open_rate": _rate(opens, sent),
                     "click_rate": _rate(clicks, sent), "click_to_open": _rate(clicks, opens),
                     "machine_events": machines})
    return line


def _unique(conn: Connection, where: list[Any]) -> dict[tuple[str, str], dict[str, int]]:
    """Touches a person opened (or clicked: a click is an open too) and touches a person clicked, per campaign, channel."""
    joined = touches.join(engagements, and_(engagements.c.touch_id == touches.c.id, engagements.c.human.is_(True)))
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    opened = select(touches.c.campaign, touches.c.channel, func.count(func.distinct(touches.c.id))) \
        .select_from(joined).where(*where).group_by(touches.c.campaign, touches.c.channel)
    clicked = opened.where(engagements.c.kind == "clicked")
    for kind, query in (("opened", opened), ("clicked", clicked)):
        for name, channel, count in conn.execute(query):
            out[(name, channel or "")][kind] = count
    return out


def _machines(conn: Connection, where: list[Any]) -> dict[tuple[str, str], int]:
    """Opens and clicks taken for a machine's (kept, not counted), per campaign and channel."""
    joined = touches.join(engagements, and_(engagements.c.touch_id == touches.c.id, engagements.c.human.is_(False)))
    query = select(touches.c.campaign, touches.c.channel, func.count()).select_from(joined).where(*where) \
        .group_by(touches.c.campaign, touches.c.channel)
    return {(name, channel or ""): count for name, channel, count in conn.execute(query)}

"""What each role may do: one table, read by ``auth.require`` on every route of the console and the API.

    sales        their own call tasks and the cards of their own customers (others: 404)
    marketing    the dashboard, campaigns and runs (and dry runs: they contact nobody), template previews
    compliance   people, timelines, consents, history search, reports, exports, erasure, the access log
    admin        users, everything marketing sees, and subject-access export and erasure (a data
                 subject's request may come to either); timelines, searches and the access log
                 stay with compliance
"""

from __future__ import annotations

SALES = frozenset({"calls.own", "customers.own"})
MARKETING = frozenset({"dashboard.view", "campaigns.view", "campaigns.dry_run", "templates.view", "segments.view"})
COMPLIANCE = frozenset({"customers.view", "history.view", "consents.view", "reports.view", "export", "erase",
                        "access_log.view"})
ADMIN = MARKETING | {"users.manage", "export", "erase"}

ROLES: dict[str, frozenset[str]] = {"sales": SALES, "marketing": MARKETING, "compliance": COMPLIANCE,
                                    "admin": frozenset(ADMIN)}

HOME = {"sales": "/calls", "marketing": "/dashboard", "compliance": "/people", "admin": "/dashboard"}


def allows(role: str, permission: str) -> bool:
    """Whether ``role`` holds ``permission``."""
    return permission in ROLES.get(role, frozenset())

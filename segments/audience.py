"""Export a segment as an advertising audience (article 003): normalised, optionally hashed identifiers.

Ad platforms match on a lower-cased, trimmed email and on a phone as E.164 digits (no ``+``), and
accept their SHA-256. Only active contact points of customers whose latest marketing consent for
that channel (email for emails, sms for phones) is a grant are exported; each identifier once.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import select

from crm.models import ContactPoint, ContactStatus
from segments.compile import consent_clause, segment_query
from segments.library import Segment
from segments.rules import Rule

contacts = ContactPoint.__table__
_CHANNEL = {"email": "email", "phone": "sms"}


@dataclass
class AudienceSummary:
    """How many identifiers were written, and where."""

    path: str
    emails: int
    phones: int
    hashed: bool

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"path": self.path, "emails": self.emails, "phones": self.phones, "hashed": self.hashed}


def ad_identifier(kind: str, value: str) -> str:
    """Normalise a stored address the way ad platforms match it (email lower-cased, phone digits only)."""
    if kind == "email":
        return value.strip().lower()
    return "".join(ch for ch in value if ch.isdigit())


def export(engine, rule: Rule, out: Path, *, library: dict[str, Segment] | None = None, as_of: date | None = None,
           hash_name: str | None = None) -> AudienceSummary:
    """Write ``type,identifier`` rows for the segment's consenting customers to ``out`` (CSV)."""
    if hash_name not in (None, "sha256"):
        raise ValueError(f"--hash {hash_name!r} is not supported; use sha256")
    members = segment_query(rule, as_of or date.today(), library).subquery()
    counts = {"email": 0, "phone": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn, out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["type", "sha256" if hash_name else "identifier"])
        for kind in ("email", "phone"):
            query = (select(contacts.c.value).distinct()
                     .where(contacts.c.kind == kind, contacts.c.status == ContactStatus.active.value,
                            contacts.c.customer_id.in_(select(members.c.id)),
                            consent_clause(contacts.c.customer_id, _CHANNEL[kind], "marketing"))
                     .order_by(contacts.c.value))
            for (value,) in conn.execute(query):
                identifier = ad_identifier(kind, value)
                if hash_name:
                    identifier = hashlib.sha256(identifier.encode()).hexdigest()
                writer.writerow([kind, identifier])
                counts[kind] += 1
    return AudienceSummary(str(out), counts["email"], counts["phone"], bool(hash_name))

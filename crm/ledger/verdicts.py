"""What a provider said about an address when a send failed for good: bounced, blocked, or opted out.

A verdict is about the address and the person behind it, not the one record a campaign went
through: a bounce or a block marks the address on every record holding it; an opt-out is a
revocation for every record holding the address and every record of their persons.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from crm.db import write_tx
from crm.ledger import consents
from crm.ledger.contacts import address_of, mark_address
from crm.models import ContactStatus

ADDRESS_ACTIONS = (ContactStatus.bounced.value, ContactStatus.blocked.value)


def apply(engine: Engine, contact_point_id: int, channel: str, action: str, code: str | None,
          message: str | None) -> None:
    """Record a provider's verdict (``bounced``, ``blocked`` or ``opt_out``) on the address and the person."""
    with write_tx(engine) as conn:
        address = address_of(conn, contact_point_id)
        if address is None:
            return
        if action in ADDRESS_ACTIONS:
            mark_address(conn, *address, action, f"{channel} provider: {code} {message or ''}".strip())
        elif action == "opt_out":
            consents.record(conn, channel=channel, purpose="marketing", granted=False,
                            source=f"{channel}_provider_opt_out", wording=f"provider code {code}",
                            addresses=[address])

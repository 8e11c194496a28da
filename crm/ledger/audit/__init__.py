"""Tamper evidence for the history: hash chains, keyed seals, the state checked against its events, an anchor.

What is chained (version 2). Each chain runs over one table's rows in id order,
``chain = SHA-256(previous chain + the row's JSON array)`` (the bytes: ``chains``):

    touches       every field fixed when the touch is written: id, person, customer, campaign, run,
                  offer, purpose, channel, contact point, address_digest, claim key, template and its
                  hash, body_hash, consent, manager, created_at, due_at
    touch_events  id, touch, status, at, reason, error_code, provider_message_id
    consents      every field (the consent ledger is append-only)
    erasures      every field: why a customer's touches no longer hold addresses and texts
    access_log    every field: who viewed, exported or erased whose data (``crm.ledger.access``)

What is not chained, and why:
    - a touch's status, reason, error fields, provider id, sent_at and delivered_at change with its
      status moves; ``verify`` checks each against the fold of the touch's (chained) events instead
      (for touches after the ``history_v2_after_touch`` marker: older events lack the move fields);
    - a touch's address and body are stripped by erasure; they are checked against the chained
      ``address_digest`` (keyed with the installation's ``history`` key) and ``body_hash`` while held;
    - ``detail`` and ``error_message`` (of touches and events) are free text that erasure strips;
      nothing checks them. ``updated_at`` is bookkeeping. A body the campaign chose not to keep
      (``keep_body: false``) and one removed later look alike: only its hash is evidence.

Seals. ``seal`` records a chain's value after a table's newest row, continuing from the table's
newest seal (a campaign run seals at its end, and its preparer every 2 s while it sends; the web
server after each consent it writes). A
version-2 seal is numbered per table (``seq`` 1, 2, 3...) and keyed: ``mac`` is an HMAC-SHA256,
under the installation's secret, of (table, seq, last_id, rows, chain, the previous seal's mac), so
a forged, edited, removed or renumbered seal is found (a seal keyed with the key kept in the
database proves nothing against whoever can read the database: ``verify`` says so). Campaign runs
record what they sealed in their summary (``"sealed"``); ``verify`` checks every such record
against the seals, so deleting the newest seals shows too, as far as a run saw them. An anchor file
kept outside the database (``compliance verify --anchor FILE``) holds the newest seals, so a
database restored to an older copy, or stripped of its newest seals and rows, fails against it.

Version-1 seals (made before keyed seals, no seq or mac) are still checked with the chain
definition they were made with (``LEGACY_CHAINS``, frozen: its touch_events chain covered
``detail``, which erasure strips). ``verify`` seals nothing: it reports the rows written after the
newest seal (the unsealed tail, which no seal can vouch for yet); ``compliance verify --seal`` seals
them once the rest verifies. ``verify`` reads one snapshot and streams every table.

The modules, each one idea (``verification`` uses all the others; nothing uses it)::

    chains.py        what is chained (CHAINS, LEGACY_CHAINS, VERSION), a row's bytes, a table's chain walked
    seals.py         seal: numbered keyed seals continuing the newest one; heads; the seal's mac
    report.py        Verification: the problems, notes, unsealed tail and counts every check writes into
    keyed.py         one table's version-2 seals checked: numbering, keys, links, chain, runs' records
    legacy.py        one table's version-1 seals checked with the frozen chain
    state.py         each touch's state against its events, its text and address against their hashes;
                     the MARKER below which touches are not checked
    anchor.py        write_anchor, and the database checked against an anchor file
    verification.py  verify: all of the checks in one read snapshot
"""

from crm.ledger.audit.anchor import write_anchor
from crm.ledger.audit.chains import CHAINS, LEGACY_CHAINS, VERSION
from crm.ledger.audit.report import Verification
from crm.ledger.audit.seals import heads, seal
from crm.ledger.audit.state import MARKER
from crm.ledger.audit.verification import verify

__all__ = ["CHAINS", "LEGACY_CHAINS", "MARKER", "VERSION", "Verification", "heads", "seal", "verify",
           "write_anchor"]

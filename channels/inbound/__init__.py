"""What comes back: replies and bounces read from a provider's inbound webhook or a mailbox, parsed into plain data.

    email.py      an email (a provider's JSON, or RFC 822 bytes) parsed; the quoted previous message cut off
    signature.py  the HMAC signature with a timestamp that authenticates the inbound email webhook
    ingest.py     one incoming email classified and stored as an inbound touch (``ingest_email``)
    imap.py       polling a mailbox over IMAP: unseen messages stored once, then marked seen
    bounces.py    per-touch return addresses (VERP) and delivery status notifications (RFC 3464)

Parsing is pure (no database); ``ingest`` is the one place that writes, through ``crm.ledger.inbound``.
"""

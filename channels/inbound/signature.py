"""The signature that authenticates the inbound email webhook: HMAC-SHA256 over a timestamp and the raw body.

The sender (a provider's webhook relay, or a small forwarder in front of one) sends two headers:

    X-Touchflow-Timestamp: <unix seconds>
    X-Touchflow-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>." + raw body)>

The timestamp is signed with the body, so an old request cannot be replayed with a fresh time;
one older (or newer) than ``TOLERANCE`` seconds is refused, and a replay inside that window stores
nothing new (the ledger keeps a message once by its Message-ID). Compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Touchflow-Timestamp"
SIGNATURE_HEADER = "X-Touchflow-Signature"
TOLERANCE = 300  # seconds either side of now


class SignatureError(ValueError):
    """A request whose signature is missing, malformed, wrong or too old; the message says which."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers a sender adds to a request carrying ``body`` (used by tests and forwarders)."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"sha256={digest}"}


def verify(secret: str, body: bytes, timestamp: str | None, signature: str | None, *,
           now: float | None = None, tolerance: int = TOLERANCE) -> None:
    """Return when the headers sign ``body`` with ``secret`` within ``tolerance`` seconds; else ``SignatureError``."""
    if not timestamp or not signature:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    if not timestamp.isdigit():
        raise SignatureError(f"{TIMESTAMP_HEADER} must be unix seconds")
    skew = abs((time.time() if now is None else now) - int(timestamp))
    if skew > tolerance:
        raise SignatureError(f"{TIMESTAMP_HEADER} is {int(skew)} s from now (at most {tolerance} s)")
    scheme, _, given = signature.partition("=")
    if scheme.strip().lower() != "sha256" or not given:
        raise SignatureError(f"{SIGNATURE_HEADER} must be sha256=<hex>")
    expected = sign(secret, body, int(timestamp))[SIGNATURE_HEADER].partition("=")[2]
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise SignatureError("the signature does not match the body")

"""Signed per-recipient unsubscribe tokens for ``List-Unsubscribe`` (RFC 8058 one-click).

A token carries the customer id, the channel, the address's hash and the issue date, signed with
HMAC-SHA256 under the installation's key (``TOUCHFLOW_SECRET_KEY``, or one generated once and kept
in the database). Tokens expire after ``MAX_AGE``; a forged or altered token never verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

MAX_AGE = 180 * 24 * 3600


class TokenError(ValueError):
    """The token is malformed, forged or expired."""


@dataclass(frozen=True)
class UnsubscribeClaim:
    """Who a verified token speaks for."""

    customer_id: int
    channel: str
    address_hash: str
    issued_at: int


def address_hash(address: str) -> str:
    """A short, stable hash of a normalised address (the token does not reveal the address)."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(key: bytes, customer_id: int, channel: str, address: str, *, now: float | None = None) -> str:
    """A signed token for one recipient."""
    payload = _b64(json.dumps([customer_id, channel, address_hash(address), int(now or time.time())],
                              separators=(",", ":")).encode())
    signature = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def verify_token(key: bytes, token: str, *, now: float | None = None, max_age: int = MAX_AGE) -> UnsubscribeClaim:
    """Check the signature and age of a token; raise TokenError otherwise."""
    payload, dot, signature = token.partition(".")
    if not dot:
        raise TokenError("malformed unsubscribe token")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        raise TokenError("unsubscribe token signature does not match")
    try:
        customer_id, channel, hashed, issued = json.loads(_unb64(payload))
    except (ValueError, TypeError):
        raise TokenError("malformed unsubscribe token") from None
    if (now or time.time()) - issued > max_age:
        raise TokenError("unsubscribe token expired")
    return UnsubscribeClaim(int(customer_id), str(channel), str(hashed), int(issued))


def unsubscribe_url(public_url: str, token: str) -> str:
    """The one-click URL served by ``touchflow serve``."""
    return f"{public_url.rstrip('/')}/unsubscribe/{token}"

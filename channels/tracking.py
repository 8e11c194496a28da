"""Open pixels and tracked links in an email's HTML part, and the signed tokens they carry.

    tracker = tracker_for(key, public_url, opens=True, clicks=True)     # once per run (cached)
    html = tracker.rewrite(rendered.html, touch_id, unsubscribe_url)  # once per claimed email touch

Each ``http(s)`` link of an ``<a>`` / ``<area>`` becomes ``{public_url}/t/c/{token}`` and a 1×1
image ``{public_url}/t/o/{token}.gif`` goes before ``</body>`` (``touchflow.server.tracking``
serves both). A click token carries the touch id and the target URL, signed: the redirect goes
only where the message itself linked, never where a token's bearer asks (no open redirect).

What is never rewritten: the unsubscribe link (the body's, which the ``List-Unsubscribe`` header
repeats, and any other link under ``{public_url}/unsubscribe/``): a person leaving must reach
the page directly, with no hop that could fail or be blocked; links that are not http(s)
(``mailto:``, ``tel:``); images; and the plain-text part. The text part stays as written because
it is the touch's stored body (``body_hash`` in the history), and a reader of plain text sees
where a link goes; so clicks from text-only clients are not counted.

Tokens are signed with HMAC-SHA256 under a key derived from the installation's signing key
(``crm.keys.signing_key``, the one that signs unsubscribe links), with the kind of token in the
signed text, so that an open token is no click token and neither is an unsubscribe token. They
do not expire: a link in a message kept for years still leads where it did. The send path is
hot: one precompiled pattern, the derived key computed once, one OpenSSL HMAC call per link
(``Tracker.sign``); the added cost per message: ``benchmarks/tracking_bench.py`` (README).
"""

from __future__ import annotations

import base64
import hmac
import html as htmllib
import re
from dataclasses import dataclass
from functools import lru_cache

OPEN_PATH, CLICK_PATH = "/t/o/", "/t/c/"
_SIGNATURE_BYTES = 16  # 128 bits: forging one is out of reach; keeps links short
_LINK = re.compile(  # <a ... href="http(s)://...">, any case; spelled out, not re.IGNORECASE: twice as fast
    r"""(<[aA](?:[rR][eE][aA])?\s(?:[^>]*?\s)?[hH][rR][eE][fF]\s*=\s*)(["'])([hH][tT][tT][pP][sS]?://[^"'<>\s]+)\2""")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class TrackingTokenError(ValueError):
    """A tracking token is malformed, forged or altered."""


class ForgedToken(TrackingTokenError):
    """A well-formed tracking token whose signature does not match: forged, altered, or of another kind."""


@dataclass(frozen=True)
class Click:
    """What a verified click token says: the touch and where its link goes."""

    touch_id: int
    url: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tracker:
    """Signs and checks tracking tokens, and rewrites an email's HTML for one touch (built once per run)."""

    def __init__(self, key: bytes, public_url: str, *, opens: bool = True, clicks: bool = True) -> None:
        self._key = hmac.digest(key, b"touchflow/tracking/v1", "sha256")  # derived once: tokens of their own
        self.base = public_url.rstrip("/")
        self._href_base = htmllib.escape(self.base, quote=True)
        self._unsubscribe_prefix = self.base + "/unsubscribe/"
        self.opens, self.clicks = opens, clicks

    def sign(self, kind: bytes, payload: bytes) -> str:
        """The signature of ``payload`` as a token of ``kind`` (one-shot OpenSSL HMAC: the fastest way here)."""
        return _b64(hmac.digest(self._key, kind + b":" + payload, "sha256")[:_SIGNATURE_BYTES])

    def open_token(self, touch_id: int) -> str:
        payload = str(touch_id)
        return f"{payload}.{self.sign(b'o', payload.encode())}"

    def click_token(self, touch_id: int, url: str) -> str:
        payload = _b64(f"{touch_id}:{url}".encode())
        return f"{payload}.{self.sign(b'c', payload.encode())}"

    def verify_open(self, token: str) -> int:
        """The touch id an open token names; TrackingTokenError when it was not made here."""
        payload, _ = self._split(token, b"o")
        if not payload.isdigit():
            raise TrackingTokenError("malformed open token")
        return int(payload)

    def verify_click(self, token: str) -> Click:
        """The touch and target a click token names; TrackingTokenError when it was not made here."""
        payload, _ = self._split(token, b"c")
        try:
            touch, _, url = _unb64(payload).decode().partition(":")
            touch_id = int(touch)
        except (ValueError, UnicodeDecodeError):
            raise TrackingTokenError("malformed link token") from None
        if not url.lower().startswith(("http://", "https://")):  # signed here, so never; checked all the same
            raise TrackingTokenError("the link token's target is not an http(s) address")
        return Click(touch_id, url)

    def _split(self, token: str, kind: bytes) -> tuple[str, str]:
        payload, dot, signature = token.rpartition(".")
        if not dot or not payload:
            raise TrackingTokenError("malformed tracking token")
        if not hmac.compare_digest(self.sign(kind, payload.encode()), signature):
            raise ForgedToken("tracking token signature does not match")
        return payload, signature

    def rewrite(self, html: str, touch_id: int, unsubscribe_url: str | None = None) -> str:
        """``html`` with its links tracked and the open pixel added, as this tracker's switches say."""
        if self.clicks:
            html = self._links(html, touch_id, unsubscribe_url)
        if self.opens:
            html = self._pixel(html, touch_id)
        return html

    def _links(self, html: str, touch_id: int, unsubscribe_url: str | None) -> str:
        base, keep = self._href_base, self._unsubscribe_prefix

        def replace(match: re.Match) -> str:
            raw = match.group(3)
            target = htmllib.unescape(raw) if "&" in raw else raw  # the address the browser would follow
            if target == unsubscribe_url or target.startswith(keep) or target.startswith(self.base + "/t/"):
                return match.group(0)
            return f"{match.group(1)}{match.group(2)}{base}/t/c/{self.click_token(touch_id, target)}{match.group(2)}"

        return _LINK.sub(replace, html)

    def _pixel(self, html: str, touch_id: int) -> str:
        pixel = (f'<img src="{self._href_base}/t/o/{self.open_token(touch_id)}.gif" width="1" height="1" alt="" '
                 'style="display:block;border:0;width:1px;height:1px">')
        at = html.rfind("</body>")  # the common spelling found without a scan by the pattern
        if at < 0:
            ends = list(_BODY_END.finditer(html))
            if not ends:
                return html + pixel
            at = ends[-1].start()
        return html[:at] + pixel + html[at:]


@lru_cache(maxsize=16)
def tracker_for(key: bytes, public_url: str, *, opens: bool = True, clicks: bool = True) -> Tracker:
    """The tracker for a key, a public URL and switches (built once: the derived key is computed here)."""
    return Tracker(key, public_url, opens=opens, clicks=clicks)

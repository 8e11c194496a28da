"""One aiohttp session per event loop for the HTTP API transports (Twilio, Telegram).

A channel is built before any event loop runs and may be used from more than one (``asyncio.run``
per batch), while an aiohttp session belongs to the loop it was made in: ``LoopSession.get`` makes
one in the running loop when first needed, and a new one after ``close`` or in another loop (the
old loop's session is dropped with its loop). Connections are kept alive, at most ``limit`` of
them. Certificates are checked against certifi's bundle, as requests and httpx (the clients these
transports used before) do; proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``) are
honoured when one is set, and not looked up for each request otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.request

import aiohttp


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The default client TLS context with certifi's CA bundle when installed (loaded once: it takes ~50 ms)."""
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with requests and httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class LoopSession:
    """The running loop's ``aiohttp.ClientSession`` with up to ``limit`` connections and ``timeout`` by default."""

    def __init__(self, limit: int, timeout: aiohttp.ClientTimeout | None = None) -> None:
        self.limit = max(1, limit)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        """This loop's session (a new one after ``close`` or in another loop)."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            kwargs = {"timeout": self.timeout} if self.timeout is not None else {}
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit, ssl=tls_context()),
                trust_env=bool(urllib.request.getproxies()), **kwargs)
            self._loop = loop
        return session

    async def close(self) -> None:
        """Close the connections (those of a loop that has ended went with it)."""
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()

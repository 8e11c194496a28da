"""Local servers speaking the protocols touchflow uses: SMTP (aiosmtpd), the Telegram Bot API and Twilio REST.

Each records what it received and can be told to fail the way real providers do.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from aiosmtpd.controller import Controller


def start_app(app: Any, port: int):
    """Serve an ASGI app with uvicorn on 127.0.0.1:``port`` in a thread; return a function that stops it and waits.

    Stop it before the test's database goes: the touchflow app seals the history once more as it stops.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.025)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return stop


@contextmanager
def running_app(app: Any, port: int) -> Iterator[str]:
    """``start_app`` as a context: yields the base URL, stops the server on the way out."""
    stop = start_app(app, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SmtpBehaviour:
    """How the SMTP server answers: per-recipient RCPT replies, the DATA reply, disconnects, stalls."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    disconnect_after_data: bool = False
    stall_seconds: float = 0.0
    smtputf8: bool = False  # advertise SMTPUTF8 (RFC 6531) and take UTF-8 mailboxes
    login: tuple[str, str] | None = None  # offer AUTH (without TLS) and take only this user and password
    pipelining: bool = False  # advertise PIPELINING (RFC 2920; aiosmtpd reads pipelined commands in order)


class RecordingHandler:
    """aiosmtpd handler keeping every accepted envelope."""

    def __init__(self, behaviour: SmtpBehaviour) -> None:
        self.behaviour = behaviour
        self.envelopes: list[Any] = []
        self.connections = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        if self.behaviour.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.behaviour.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.behaviour.stall_seconds:
            await asyncio.sleep(self.behaviour.stall_seconds)
        if self.behaviour.disconnect_after_data:
            server.transport.close()
            return "250 never seen"
        if self.behaviour.data_reply:
            return self.behaviour.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 in a background thread."""

    def __init__(self, behaviour: SmtpBehaviour | None = None) -> None:
        self.behaviour = behaviour or SmtpBehaviour()
        self.handler = RecordingHandler(self.behaviour)
        self.port = free_port()
        auth = {"authenticator": self._authenticate, "auth_require_tls": False} if self.behaviour.login else {}
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     enable_SMTPUTF8=self.behaviour.smtputf8, **auth)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        user, password = self.behaviour.login
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            user.encode(), password.encode())
        return AuthResult(success=ok, handled=False)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Any]:
        """Accepted envelopes (mail_from, rcpt_tos, content bytes)."""
        return self.handler.envelopes


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word (a hung SMTP server or API endpoint).

    With ``greeting`` it says that once on each connection, then nothing more (an SMTP server that
    greets and hangs, or refuses with a 554 greeting). ``accepted`` counts the connections it took;
    they stay open until the server stops.
    """

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._held.append(conn)
            if self.greeting:
                conn.sendall(self.greeting)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        for conn in self._held:
            conn.close()


class _JsonHandler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _params(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if "json" in (self.headers.get("Content-Type") or ""):
            return json.loads(body or "{}")
        params = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        query = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}
        return {**query, **params}

    def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = lambda self: self.do_POST()  # noqa: E731


class HttpStub:
    """A ThreadingHTTPServer on 127.0.0.1 in a background thread."""

    handler_class: type[_JsonHandler] = _JsonHandler

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class)
        self.httpd.stub = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.httpd.socket.listen(128)  # a burst of connections must not overflow the backlog (a SYN retried 1 s later)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _TelegramHandler(_JsonHandler):
    def do_POST(self) -> None:
        stub: TelegramStub = self.server.stub
        path = urlparse(self.path).path
        token, _, method = path.removeprefix("/bot").partition("/")
        params = self._params()
        stub.requests.append((method, params, dict(self.headers)))
        if token != stub.token:
            self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        if method == "getMe":
            self._reply(200, {"ok": True, "result": {"id": 4242, "is_bot": True, "first_name": "touchflow",
                                                     "username": "touchflow_bot"}})
        elif method == "sendMessage":
            chat = str(params.get("chat_id"))
            stub.arrivals.append((time.monotonic(), chat))
            if chat in stub.stall:  # take the message, answer too late
                stub.sent.append(params)
                time.sleep(stub.stall[chat])
                return
            if chat in stub.blocked:
                self._reply(403, {"ok": False, "error_code": 403,
                                  "description": "Forbidden: bot was blocked by the user"})
            elif stub.retry_after.get(chat):
                wait = stub.retry_after.pop(chat)
                self._reply(429, {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after "
                                  f"{wait}", "parameters": {"retry_after": wait}})
            elif chat in stub.missing:
                self._reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})
            else:
                stub.sent.append(params)
                if stub.delay:
                    time.sleep(stub.delay)
                self._reply(200, {"ok": True, "result": {
                    "message_id": len(stub.sent), "date": int(time.time()), "text": params.get("text", ""),
                    "chat": {"id": int(chat), "type": "private"}}})
        elif method == "getUpdates":
            offset = int(params.get("offset") or 0)
            updates = [u for u in stub.updates if u["update_id"] >= offset]
            self._reply(200, {"ok": True, "result": updates})
        else:
            self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"})


class TelegramStub(HttpStub):
    """The Bot API subset touchflow uses: getMe, sendMessage, getUpdates."""

    handler_class = _TelegramHandler

    def __init__(self, token: str = "123456:TEST-token") -> None:
        super().__init__()
        self.token = token
        self.sent: list[dict[str, Any]] = []
        self.blocked: set[str] = set()
        self.missing: set[str] = set()
        self.retry_after: dict[str, int] = {}
        self.stall: dict[str, float] = {}  # chat → seconds sendMessage keeps the request unanswered
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), chat) of every sendMessage, as it arrived
        self.delay = 0.0  # seconds each accepted sendMessage takes to answer (a slow API)
        self.updates: list[dict[str, Any]] = []

    def add_start(self, chat_id: int, text: str) -> None:
        """Queue a private message as if a user typed ``text``."""
        update_id = 1000 + len(self.updates)
        self.updates.append({"update_id": update_id, "message": {
            "message_id": update_id, "date": int(time.time()), "text": text,
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "Клиент"},
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}})


class _TwilioHandler(_JsonHandler):
    def do_POST(self) -> None:
        stub: TwilioStub = self.server.stub
        path = urlparse(self.path).path
        params = self._params()
        stub.requests.append((path, params, dict(self.headers)))
        auth = base64.b64decode(self.headers.get("Authorization", "Basic ").split(" ", 1)[1] or b"").decode()
        if auth != f"{stub.account_sid}:{stub.auth_token}":
            self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        resource = path.rsplit("/", 1)[-1]
        if not path.startswith(f"/2010-04-01/Accounts/{stub.account_sid}/") or resource not in (
                "Messages.json", "Calls.json"):
            self._reply(404, {"code": 20404, "message": "not found", "status": 404})
            return
        to = params.get("To", "")
        stub.arrivals.append((time.monotonic(), resource, params))
        failures = stub.failures.get(to)
        if failures:
            status, code = failures.pop(0)
            self._reply(status, {"code": code, "message": f"error {code}", "status": status,
                                 "more_info": f"https://www.twilio.com/docs/errors/{code}"})
            return
        prefix = "SM" if resource == "Messages.json" else "CA"
        sid = f"{prefix}{len(stub.requests):032d}"
        stub.created.append((resource, params))
        self._reply(201, {"sid": sid, "status": "queued", "to": to, "from": params.get("From"),
                          "body": params.get("Body"), "account_sid": stub.account_sid})


class TwilioStub(HttpStub):
    """The Twilio REST subset touchflow uses: Messages and Calls (create)."""

    handler_class = _TwilioHandler

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "secret-token") -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.failures: dict[str, list[tuple[int, int]]] = {}
        self.arrivals: list[tuple[float, str, dict[str, Any]]] = []  # (time.monotonic(), resource, fields) as arrived


class ScriptedSmtp:
    """A raw SMTP server on 127.0.0.1 that answers from a script, in the test's own event loop.

    ``script`` maps ``MAIL``, ``RCPT`` (or ``RCPT <address>``), ``DATA`` and ``content`` to a reply
    line, to ``close`` (drop the connection when that command or the content's final dot arrives)
    or to ``stall`` (say nothing). With ``hold`` it answers nothing of a transaction until MAIL,
    RCPT and DATA have all arrived: a client that waits for each reply never gets one. With
    ``max_connections`` it greets the connections beyond that many with a 421 and closes them
    (``refused`` counts them, ``peak`` is the most served at once); ``content_delay`` is how long
    each message's final reply takes.
    """

    def __init__(self, script: dict[str, str] | None = None, pipelining: bool = True, hold: bool = False,
                 max_connections: int = 0, content_delay: float = 0.0) -> None:
        self.script, self.pipelining, self.hold = script or {}, pipelining, hold
        self.max_connections, self.content_delay = max_connections, content_delay
        self.open = self.peak = self.refused = 0
        self.commands: list[str] = []
        self.contents: list[bytes] = []
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> ScriptedSmtp:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    def _answer(self, line: str, accepted: list[str]) -> str:
        """The scripted reply, or what postfix says (DATA with no recipient accepted: 554)."""
        verb = line.split(" ", 1)[0].upper()
        if verb == "RCPT":
            address = line.split(":", 1)[1].strip().strip("<>")
            answer = self.script.get(f"RCPT {address}", self.script.get("RCPT", "250 2.1.5 Ok"))
            if answer.startswith("250"):
                accepted.append(address)
            return answer
        if verb == "MAIL":
            accepted.clear()
            return self.script.get("MAIL", "250 2.1.0 Ok")
        return self.script.get("DATA", "354 End data with <CR><LF>.<CR><LF>" if accepted
                               else "554 5.5.1 Error: no valid recipients")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.max_connections and self.open >= self.max_connections:  # as Postfix's smtpd_client_connection_limit
            self.refused += 1
            writer.write(b"421 4.7.0 too many connections from you\r\n")
            writer.close()
            return
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await self._converse(reader, writer)
        finally:
            self.open -= 1

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        held: list[str] = []
        accepted: list[str] = []
        try:
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                self.commands.append(line)
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    writer.write(b"250-scripted\r\n" + (b"250-PIPELINING\r\n" if self.pipelining else b"")
                                 + b"250 8BITMIME\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 Bye\r\n")
                    break
                elif verb not in ("MAIL", "RCPT", "DATA"):
                    writer.write(b"250 Ok\r\n")
                else:
                    answer = self._answer(line, accepted)
                    if answer == "close":
                        break
                    if answer == "stall":
                        await asyncio.sleep(3600)
                    held.append(answer)
                    if not self.hold or verb == "DATA":
                        writer.write("".join(f"{a}\r\n" for a in held).encode())
                        held.clear()
                    if verb == "DATA" and answer.startswith("354") and not await self._content(reader, writer):
                        break
                await writer.drain()
        finally:
            writer.close()

    async def _content(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one message up to its final dot and answer it; False when the connection must end."""
        await writer.drain()
        data = b""
        while not data.endswith(b"\r\n.\r\n"):
            chunk = await reader.readline()
            if not chunk:
                return False  # the client went away before the final dot: no message
            data += chunk
        await asyncio.sleep(self.content_delay)  # a relay far away, or a slow queue
        answer = self.script.get("content", "250 2.0.0 Ok: queued")
        if answer == "close":
            return False
        if answer == "stall":
            await asyncio.sleep(3600)
        self.contents.append(data)
        writer.write(f"{answer}\r\n".encode())
        return True

"""SMTP with command pipelining (RFC 2920): MAIL, every RCPT and DATA written as one group.

aiosmtplib waits for each reply before writing the next command (four round trips a message) and
its protocol drops replies that arrive before it asks for them, so it cannot pipeline. This is a
small client of its own over asyncio streams, used by ``SmtpEmailChannel`` when
``SmtpConfig.pipelining`` is on (``TOUCHFLOW_SMTP_PIPELINING``): two round trips a message (the
envelope group, then the content) where the server advertises PIPELINING, the same commands one
at a time where it does not.

The failure rules are the channel's (``channels.transports.smtp``): nothing is handed over until
the content's final dot is written. A reply or a lost connection before that is
``ConnectionFailed``, ``TransientError``, ``AddressRejected`` or ``MessageRejected``; after it, no
reply in time is ``NoReply`` and a lost connection ``DeliveryUnknown``. A client that pipelines
must read every reply of a group (RFC 2920, 3.1): when DATA was accepted (354) but the message
must not go (its sender or a recipient was deferred, or every recipient refused), the connection
is closed before any content is written, and the server discards a message that never got its
final dot.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from channels.base import Delivery
from channels.errors import (
    AddressRejected,
    ChannelError,
    ConnectionFailed,
    DeliveryUnknown,
    MessageRejected,
    NoReply,
    TransientError,
)

if TYPE_CHECKING:
    from channels.transports.smtp import SmtpConfig

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f<>]")


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class WireClosed(Exception):
    """The connection ended, broke, or stayed silent past the time-out (``timed_out``)."""

    def __init__(self, detail: str, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


class SmtpWire:
    """One SMTP connection whose replies are read in the order the commands were written."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.extensions: dict[str, str] = {}

    @property
    def is_connected(self) -> bool:
        """Neither closed here nor by the server (an idle connection the relay timed out)."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    def supports_extension(self, name: str) -> bool:
        return name.lower() in self.extensions

    async def reply(self) -> Reply:
        """The next reply (several ``250-`` lines are one reply)."""
        lines: list[str] = []
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            except TimeoutError:
                raise WireClosed(f"no reply within {self.timeout:g} s", timed_out=True) from None
            except (OSError, ValueError) as exc:  # ValueError: a line longer than the stream's limit
                raise WireClosed(f"{type(exc).__name__}: {exc}") from None
            if not line.endswith(b"\n"):
                raise WireClosed("the server closed the connection")
            if not line[:3].isdigit():
                raise WireClosed(f"not an SMTP reply: {line[:80]!r}")
            lines.append(line[4:].strip().decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return Reply(int(line[:3]), "\n".join(lines))

    async def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise WireClosed("the connection is closed")
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except TimeoutError:
            raise WireClosed(f"could not write within {self.timeout:g} s", timed_out=True) from None
        except OSError as exc:
            raise WireClosed(f"{type(exc).__name__}: {exc}") from None

    async def command(self, line: bytes) -> Reply:
        await self.write(line + b"\r\n")
        return await self.reply()

    async def exchange(self, commands: list[bytes]) -> list[Reply]:
        """Each command's reply, in order: one group when the server pipelines, else one at a time."""
        if "pipelining" not in self.extensions:
            return [await self.command(command) for command in commands]
        await self.write(b"".join(command + b"\r\n" for command in commands))
        return [await self.reply() for _ in commands]

    async def hello(self) -> None:
        """EHLO (remembering the extensions), or HELO from a server that knows no EHLO."""
        host = self.writer.get_extra_info("sockname") or ("127.0.0.1",)
        name = f"[{host[0]}]" if ":" not in host[0] else f"[IPv6:{host[0]}]"
        reply = await self.command(b"EHLO " + name.encode())
        if reply.code == 250:
            self.extensions = dict(_extension(line) for line in reply.text.splitlines()[1:])
            return
        reply = await self.command(b"HELO " + name.encode())
        if reply.code != 250:
            raise WireClosed(f"EHLO and HELO refused: {reply}")
        self.extensions = {}

    async def quit(self) -> None:
        try:
            await self.command(b"QUIT")
        except WireClosed:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.writer.close()


def _extension(line: str) -> tuple[str, str]:
    name, _, parameters = line.partition(" ")
    return name.lower(), parameters


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not config.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def connect(config: SmtpConfig, channel: str) -> SmtpWire:
    """A connection greeted, EHLO said, STARTTLS and login done as configured.

    Not reaching a server that takes mail is ``ConnectionFailed``; a refused login is
    ``MessageRejected`` (our configuration), as in the aiosmtplib path.
    """
    where = f"the SMTP server {config.host}:{config.port}"
    wire = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            config.host, config.port, ssl=_tls_context(config) if config.use_tls else None), config.timeout)
        wire = SmtpWire(reader, writer, config.timeout)
        greeting = await wire.reply()
        if greeting.code != 220:
            raise WireClosed(f"greeting {greeting}")
        await wire.hello()
        if config.start_tls:
            reply = await wire.command(b"STARTTLS")
            if reply.code != 220:
                raise WireClosed(f"STARTTLS refused: {reply}")
            await writer.start_tls(_tls_context(config), server_hostname=config.host)
            await wire.hello()
        if config.username:
            await _login(wire, config, channel)
        return wire
    except (WireClosed, OSError, TimeoutError) as exc:
        if wire is not None:
            wire.close()
        detail = str(exc) or type(exc).__name__
        raise ConnectionFailed(f"cannot connect to {where} (connect, greeting, EHLO, STARTTLS or login): {detail}",
                               code="connection_failed", provider_message=detail, channel=channel) from None
    except BaseException:
        if wire is not None:
            wire.close()
        raise


async def _login(wire: SmtpWire, config: SmtpConfig, channel: str) -> None:
    """AUTH PLAIN, or LOGIN where only that is offered; a refusal is ``MessageRejected``."""
    user, password = (config.username or "").encode(), (config.password or "").encode()
    mechanisms = wire.extensions.get("auth", "").upper().split()
    if "PLAIN" in mechanisms:
        reply = await wire.command(b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password))
    elif "LOGIN" in mechanisms:
        reply = await wire.command(b"AUTH LOGIN")
        for answer in (user, password):
            if reply.code != 334:
                break
            reply = await wire.command(base64.b64encode(answer))
    else:
        raise MessageRejected(f"SMTP login to {config.host}:{config.port} impossible: the server offers no AUTH "
                              "PLAIN or LOGIN (often only after STARTTLS: TOUCHFLOW_SMTP_STARTTLS)",
                              code="smtp_login", channel=channel)
    if reply.code != 235:
        raise MessageRejected(f"SMTP login to {config.host}:{config.port} refused: check the user and password",
                              code=reply.code, provider_message=reply.text, channel=channel)


def _path(address: str, utf8: bool) -> bytes:
    """``<address>`` for MAIL / RCPT; an address that would break the command line is refused before sending."""
    if _CONTROL.search(address):
        raise MessageRejected(f"cannot send to {address!r}: control characters or angle brackets in the address",
                              code="unbuildable")
    return f"<{address}>".encode("utf-8" if utf8 else "ascii")


def content(data: bytes) -> bytes:
    """The message as DATA carries it: CRLF line endings, leading dots doubled, the final dot."""
    data = _LINE_ENDINGS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return _LEADING_DOT.sub(b"..", data) + b".\r\n"


async def transact(wire: SmtpWire, sender: str, to: str, recipients: list[str], data: bytes, message_id: str,
                   utf8: bool, channel: str) -> Delivery:
    """Send one message: the envelope as one group, then the content; errors as the channel classifies them."""
    commands = [b"MAIL FROM:" + _path(sender, utf8) + (b" SMTPUTF8" if utf8 else b"")]
    commands += [b"RCPT TO:" + _path(recipient, utf8) for recipient in recipients]
    commands.append(b"DATA")
    try:
        replies = await wire.exchange(commands)
    except WireClosed as exc:
        wire.close()
        raise ConnectionFailed(f"{exc} from the SMTP server before the message was sent", code="connection_failed",
                               provider_message=str(exc), channel=channel) from None
    refused, problem = _envelope_verdict(replies[0], dict(zip(recipients, replies[1:-1])), to, channel)
    start = replies[-1]
    if problem is None and start.code != 354:
        kind = TransientError if start.code < 500 else MessageRejected
        problem = kind(f"DATA refused: {start}", code=start.code, provider_message=start.text, channel=channel)
    if problem is not None:
        if start.code == 354:  # the server waits for content that must not come: it drops the message
            wire.close()
        else:
            await _reset(wire)
        raise problem
    return await _content(wire, data, message_id, refused, channel)


def _envelope_verdict(mail: Reply, rcpts: dict[str, Reply], to: str, channel: str
                      ) -> tuple[dict[str, str], ChannelError | None]:
    """(recipients refused for good, the error that stops this message or None) from MAIL's and RCPTs' replies."""
    if mail.code != 250:
        kind = TransientError if mail.code < 500 else MessageRejected
        return {}, kind(f"MAIL FROM: {mail}", code=mail.code, provider_message=mail.text, channel=channel)
    refused: dict[str, str] = {}
    for recipient, reply in rcpts.items():
        if reply.code in (250, 251):
            continue
        if reply.code < 500:
            return refused, TransientError(f"{recipient} deferred by the server: {reply}", code=reply.code,
                                           provider_message=reply.text, channel=channel)
        refused[recipient] = str(reply)
    if len(refused) == len(rcpts):
        first = next(iter(refused.values()))
        return refused, AddressRejected(f"{to} refused by the server: {first}", code=first.split(" ", 1)[0],
                                        provider_message=first, channel=channel)
    return refused, None


async def _content(wire: SmtpWire, data: bytes, message_id: str, refused: dict[str, str], channel: str) -> Delivery:
    """Write the content and read the verdict; from here the message may have been handed over."""
    try:
        await wire.write(content(data))
        reply = await wire.reply()
    except WireClosed as exc:
        wire.close()
        if exc.timed_out:
            raise NoReply(f"no reply from the SMTP server after the message was handed over ({exc}); it may have "
                          "accepted it", code="no_reply", provider_message=str(exc), channel=channel) from None
        raise DeliveryUnknown(f"connection lost after the message was handed over ({exc}); the server may have "
                              "accepted it", provider_message=str(exc), channel=channel) from None
    if reply.code == 250:
        return Delivery(provider_id=message_id, refused=refused)
    if reply.code < 500:
        raise TransientError(f"message deferred at DATA: {reply}", code=reply.code, provider_message=reply.text,
                             channel=channel)
    raise MessageRejected(f"message refused at DATA: {reply}", code=reply.code, provider_message=reply.text,
                          channel=channel)


async def _reset(wire: SmtpWire) -> None:
    """RSET after a refused envelope; a connection that cannot even do that is dropped."""
    try:
        if (await wire.command(b"RSET")).code == 250:
            return
    except WireClosed:
        pass
    wire.close()

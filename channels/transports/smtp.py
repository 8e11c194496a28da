"""Email over SMTP (aiosmtplib) with a pool of persistent connections.

Each send takes a connection from the pool, speaks MAIL / RCPT / DATA itself so that failures are
classified by the phase they happen in, and returns the connection (or drops a broken one):

* building the message (before anything is sent): any failure rejects that message only;
* connecting (refused, no greeting in time, a greeting or EHLO refused, STARTTLS), and a
  connection lost or silent before DATA: ``ConnectionFailed``, nothing was handed over (the
  ``sending.Breaker`` stops a server that keeps failing); a refused login is ``MessageRejected``;
* before DATA: 4xx replies are transient; 5xx at RCPT rejects the address;
* a definite reply to DATA: 4xx transient, 5xx the message was refused;
* anything else once the message was handed over (lost connection, no reply in time) is
  ``DeliveryUnknown`` (``NoReply`` for a time-out): the server may have queued it, so it is not
  resent blindly.

An address with a non-ASCII mailbox (``иван@почта.рф``) goes out with SMTPUTF8 when the server
offers it, and is ``AddressNotSupported`` (not bounced) when it does not; a non-ASCII domain alone
is sent in its IDNA form (``channels.transports.addresses``).

MAIL FROM is the message's ``envelope_from`` when it has one (a campaign email: its touch's
return address, where reports of a later failure go: ``channels.inbound.bounces``), else the
configured from address.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import aiosmtplib

from channels.base import Delivery, Message
from channels.errors import (
    AddressNotSupported,
    AddressRejected,
    ChannelError,
    ConnectionFailed,
    DeliveryUnknown,
    MessageRejected,
    NoReply,
    TransientError,
)
from channels.transports import smtp_pipelining
from channels.transports.addresses import WireAddress, wire_address, wire_addresses
from channels.transports.mime import build_email
from channels.transports.smtp_pipelining import SmtpWire
from channels.transports.smtp_pool import ConnectionPool


@dataclass
class SmtpConfig:
    """Where and how to connect; ``password`` is kept out of reprs."""

    host: str = "127.0.0.1"
    port: int = 25
    use_tls: bool = False
    start_tls: bool = False
    username: str | None = None
    password: str | None = None
    from_address: str = "touchflow@localhost"
    from_name: str | None = None
    pool_size: int = 4  # connections at first
    max_connections: int = 0  # at most, as the sending grows them (channels.concurrency); 0: pool_size
    timeout: float = 30.0
    validate_certs: bool = True
    pipelining: bool = False  # MAIL, RCPT and DATA as one group where offered (channels.transports.smtp_pipelining)

    def __repr__(self) -> str:
        return (f"SmtpConfig(host={self.host!r}, port={self.port}, use_tls={self.use_tls}, "
                f"start_tls={self.start_tls}, username={self.username!r}, "
                f"password={'***' if self.password else None}, pool_size={self.pool_size}, "
                f"max_connections={self.max_connections}, pipelining={self.pipelining})")


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")


def _plain_envelope(address: str) -> bytes | None:
    """``<address>`` as bytes for a plain ASCII address, or None for anything aiosmtplib must parse.

    For such an address this is exactly what ``aiosmtplib``'s ``quote_address`` produces, without
    parsing it with ``email.utils`` on every command (~15 µs each for MAIL and RCPT).
    """
    return f"<{address}>".encode("ascii") if _PLAIN_ADDRESS.fullmatch(address) else None


_ENVELOPE = {  # command: (argument prefix, accepted codes, aiosmtplib's error for anything else)
    "MAIL": (b"FROM:", (250,), aiosmtplib.SMTPSenderRefused),
    "RCPT": (b"TO:", (250, 251), aiosmtplib.SMTPRecipientRefused),
}


async def _envelope(client: aiosmtplib.SMTP, command: str, address: str, utf8: bool = False) -> None:
    """MAIL FROM or RCPT TO as ``client.mail`` / ``client.rcpt`` send them (same errors), quicker for plain addresses.

    ``utf8``: the transaction carries a UTF-8 mailbox (``MAIL FROM:<…> SMTPUTF8``, UTF-8 addresses).
    """
    envelope = None if utf8 else _plain_envelope(address)
    if envelope is None or client.is_ehlo_or_helo_needed:
        encoding = "utf-8" if utf8 else "ascii"
        if command == "MAIL":
            await client.mail(address, options=["SMTPUTF8"] if utf8 else None, encoding=encoding)
        else:
            await client.rcpt(address, encoding=encoding)
        return
    prefix, accepted, error = _ENVELOPE[command]
    response = await client.execute_command(command.encode(), prefix + envelope)
    if response.code not in accepted:
        raise error(response.code, response.message, address)


async def _quit(client) -> None:
    try:
        await client.quit()
    except Exception:  # closing a broken connection: nothing to report
        client.close()


class SmtpEmailChannel:
    """The real email channel."""

    name = "email"
    transport = "smtp"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._pool: ConnectionPool | None = None
        sender = config.from_address
        self._sender = WireAddress(sender, sender, False) if sender.isascii() else wire_address(sender)

    def __repr__(self) -> str:
        return f"SmtpEmailChannel({self.config!r})"

    async def open(self) -> None:
        """Prepare the pool; connections open on first use."""
        if self._pool is None:
            self._pool = ConnectionPool(max(self.config.pool_size, self.config.max_connections))

    async def close(self) -> None:
        """Say QUIT on every pooled connection, all at once (one round trip for the pool, not one per connection)."""
        if self._pool is None:
            return
        await asyncio.gather(*[_quit(client) for client in self._pool.drain() if client.is_connected])
        self._pool = None

    def _where(self) -> str:
        return f"the SMTP server {self.config.host}:{self.config.port}"

    def _unreachable(self, exc: BaseException, stage: str) -> ConnectionFailed:
        """The error for a server we could not talk to at ``stage`` (nothing was handed over)."""
        detail = str(exc) or type(exc).__name__
        return ConnectionFailed(f"cannot connect to {self._where()} ({stage}): {detail}",
                                code=getattr(exc, "code", None) or "connection_failed", provider_message=detail,
                                channel=self.name)

    async def _connect(self) -> aiosmtplib.SMTP | SmtpWire:
        """A connected client, greeted, EHLO said (so its extensions are known), logged in if configured.

        With ``pipelining`` it is touchflow's own client (``smtp_pipelining``), else aiosmtplib's. Every
        way of not reaching a server that takes mail is ``ConnectionFailed``: refused, no greeting in
        time, a greeting that is not 220, EHLO refused, STARTTLS failing.
        """
        cfg = self.config
        if cfg.pipelining:
            return await smtp_pipelining.connect(cfg, self.name)
        try:
            client = aiosmtplib.SMTP(hostname=cfg.host, port=cfg.port, use_tls=cfg.use_tls, start_tls=cfg.start_tls,
                                     timeout=cfg.timeout, validate_certs=cfg.validate_certs)
        except ValueError as exc:
            raise MessageRejected(f"the SMTP settings do not fit together: {exc}; check TOUCHFLOW_SMTP_TLS and "
                                  "TOUCHFLOW_SMTP_STARTTLS", code="smtp_settings", channel=self.name) from None
        try:
            try:
                await client.connect()
                if client.is_ehlo_or_helo_needed:
                    try:
                        await client.ehlo()
                    except aiosmtplib.SMTPHeloError:
                        await client.helo()
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise self._unreachable(exc, "connect, greeting, EHLO or STARTTLS") from None
            if cfg.username:
                await self._login(client)
        except BaseException:
            client.close()
            raise
        return client

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        """Log in; a refusal is our configuration (``MessageRejected``), a lost or silent server is not."""
        cfg = self.config
        try:
            await client.login(cfg.username, cfg.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise MessageRejected(f"SMTP login to {cfg.host}:{cfg.port} refused: check the user and password",
                                  code=exc.code, provider_message=exc.message, channel=self.name) from None
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            raise self._unreachable(exc, "login") from None
        except aiosmtplib.SMTPException as exc:
            raise MessageRejected(f"SMTP login to {cfg.host}:{cfg.port} impossible: {exc}; check that the server "
                                  "offers AUTH (often only after STARTTLS: TOUCHFLOW_SMTP_STARTTLS)",
                                  code="smtp_login", provider_message=str(exc), channel=self.name) from None

    def _prepare(self, message: Message) -> tuple[bytes, str, list[str], bool]:
        """(bytes, Message-ID, envelope recipients, whether SMTPUTF8 is needed) for ``message``.

        Nothing has been sent yet: a message that cannot be built is that message's failure
        (``MessageRejected``), never the run's. Plain ASCII addresses take the fast path.
        """
        try:
            if message.to.isascii() and not self._sender.utf8:
                recipients, utf8 = [r.strip() for r in message.to.split(",") if r.strip()], False
            else:
                wires = wire_addresses(message.to)
                recipients, utf8 = [w.envelope for w in wires], self._sender.utf8 or any(w.utf8 for w in wires)
            if not recipients:
                raise ValueError("the message has no recipient address")
            data, message_id = message.prebuilt or build_email(message, self.config.from_address)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it happened before the hand-over
            raise MessageRejected(f"cannot build the email to {message.to!r}: {type(exc).__name__}: {exc}",
                                  code="unbuildable", channel=self.name) from exc
        return data, message_id, recipients, utf8

    def prebuild(self, message: Message) -> None:
        """Build the message's bytes ahead (where the sending loop is not: the thread that marks it ``sending``);
        a message that cannot be built is left for ``send`` to reject."""
        if message.prebuilt is None:
            try:
                message.prebuilt = build_email(message, self.config.from_address)
            except Exception:  # noqa: BLE001 - send() builds it again and rejects that message alone
                pass

    async def send(self, message: Message) -> Delivery:
        """Send one message (one or several comma-separated recipients) over a pooled connection."""
        data, message_id, recipients, utf8 = self._prepare(message)
        await self.open()
        pool = self._pool
        assert pool is not None
        client = await self._connection(pool)
        keep = None
        try:
            if utf8 and not client.supports_extension("smtputf8"):
                raise AddressNotSupported(
                    f"{message.to}: {self._where()} does not support SMTPUTF8, which a mailbox with non-ASCII "
                    "characters needs (RFC 6531); the address is fine, it cannot go through this relay: send "
                    "through one that offers SMTPUTF8", code="smtputf8_unsupported", channel=self.name)
            delivery = await self._transaction(client, message.to, recipients, data, message_id, utf8,
                                               message.envelope_from or self._sender.envelope)
            keep = client
            return delivery
        except (AddressRejected, MessageRejected):
            keep = client
            raise
        finally:
            if keep is None:
                client.close()
            await pool.give(client, keep is not None)

    async def _connection(self, pool: ConnectionPool) -> aiosmtplib.SMTP | SmtpWire:
        """An idle connection, or a new one; when the relay refuses a new one while others are open, one of those."""
        while True:
            client = await pool.take()
            if client is not None:
                if client.is_connected:
                    return client
                client.close()
                pool.went_stale()
            try:
                client = await self._connect()
            except ConnectionFailed:
                if await pool.not_opened(refused=True):
                    continue
                raise
            except BaseException:
                await pool.not_opened(refused=False)
                raise
            pool.connected()
            return client

    async def _transaction(self, client: aiosmtplib.SMTP | SmtpWire, to: str, recipients: list[str], data: bytes,
                           message_id: str, utf8: bool, sender: str) -> Delivery:
        """MAIL FROM ``sender`` (the touch's return address, where bounces go), RCPT TO each recipient, DATA."""
        if isinstance(client, SmtpWire):
            return await smtp_pipelining.transact(client, sender, to, recipients, data, message_id, utf8, self.name)
        try:
            await _envelope(client, "MAIL", sender, utf8)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(client)
            raise self._reply_error("MAIL FROM", exc, to) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._unreachable(exc, "MAIL FROM, before the message was sent") from None
        refused: dict[str, str] = {}
        for recipient in recipients:
            try:
                await _envelope(client, "RCPT", recipient, utf8)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[recipient] = f"{exc.code} {exc.message}"
                if exc.code < 500:
                    await self._reset(client)
                    raise TransientError(f"{recipient} deferred by the server: {exc.code} {exc.message}",
                                         code=exc.code, provider_message=exc.message, channel=self.name) from None
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset(client)
                raise self._reply_error("RCPT TO", exc, recipient) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise self._unreachable(exc, "RCPT TO, before the message was sent") from None
        if len(refused) == len(recipients):
            await self._reset(client)
            first = next(iter(refused.values()))
            raise AddressRejected(f"{to} refused by the server: {first}", code=first.split(" ", 1)[0],
                                  provider_message=first, channel=self.name)
        try:
            await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or exc.code < 500:
                raise TransientError(f"message deferred at DATA: {exc.code} {exc.message}", code=exc.code,
                                     provider_message=exc.message, channel=self.name) from None
            await self._reset(client)
            raise MessageRejected(f"message refused at DATA: {exc.code} {exc.message}", code=exc.code,
                                  provider_message=exc.message, channel=self.name) from None
        except TimeoutError as exc:  # aiosmtplib's time-outs are TimeoutErrors too
            raise NoReply(f"no reply from {self._where()} within {self.config.timeout:g} s after the message was "
                          "handed over; the server may have accepted it", code="no_reply",
                          provider_message=str(exc), channel=self.name) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryUnknown(f"connection lost after the message was handed over ({exc!r}); "
                                  "the server may have accepted it", provider_message=str(exc),
                                  channel=self.name) from None
        return Delivery(provider_id=message_id, refused=refused)

    def _reply_error(self, stage: str, exc: aiosmtplib.SMTPResponseException, address: str) -> ChannelError:
        kind = TransientError if exc.code < 500 else (AddressRejected if stage == "RCPT TO" else MessageRejected)
        return kind(f"{stage} {address}: {exc.code} {exc.message}", code=exc.code, provider_message=exc.message,
                    channel=self.name)

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        try:
            await client.rset()
        except Exception:  # a broken connection is dropped by send()
            client.close()

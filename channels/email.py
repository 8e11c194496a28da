"""Email over SMTP (aiosmtplib) with a pool of persistent connections.

Each send takes a connection from the pool, speaks MAIL / RCPT / DATA itself so that failures are
classified by the phase they happen in, and returns the connection (or drops a broken one):

* before DATA: 4xx, disconnects and time-outs are transient; 5xx at RCPT rejects the address;
* a definite reply to DATA: 4xx transient, 5xx the message was refused;
* anything else once the message was handed over (lost connection, no reply in time) is
  ``DeliveryUnknown``: the server may have queued it, so it is not resent blindly.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import aiosmtplib

from channels.base import Delivery, Message
from channels.errors import (
    AddressRejected,
    ChannelError,
    DeliveryUnknown,
    MessageRejected,
    TransientError,
)
from channels.mime import build_email


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
    pool_size: int = 4
    timeout: float = 30.0
    validate_certs: bool = True

    def __repr__(self) -> str:
        return (f"SmtpConfig(host={self.host!r}, port={self.port}, use_tls={self.use_tls}, "
                f"start_tls={self.start_tls}, username={self.username!r}, "
                f"password={'***' if self.password else None}, pool_size={self.pool_size})")


def _code(exc: Exception) -> int | None:
    return getattr(exc, "code", None)


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


async def _envelope(client: aiosmtplib.SMTP, command: str, address: str) -> None:
    """MAIL FROM or RCPT TO as ``client.mail`` / ``client.rcpt`` send them (same errors), quicker for plain addresses."""
    envelope = _plain_envelope(address)
    if envelope is None or client.is_ehlo_or_helo_needed:
        await (client.mail if command == "MAIL" else client.rcpt)(address)
        return
    prefix, accepted, error = _ENVELOPE[command]
    response = await client.execute_command(command.encode(), prefix + envelope)
    if response.code not in accepted:
        raise error(response.code, response.message, address)


class SmtpEmailChannel:
    """The real email channel."""

    name = "email"
    transport = "smtp"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._pool: asyncio.Queue[aiosmtplib.SMTP | None] | None = None

    def __repr__(self) -> str:
        return f"SmtpEmailChannel({self.config!r})"

    async def open(self) -> None:
        """Prepare the pool; connections open on first use."""
        if self._pool is None:
            self._pool = asyncio.Queue()
            for _ in range(max(1, self.config.pool_size)):
                self._pool.put_nowait(None)

    async def close(self) -> None:
        """Say QUIT on every pooled connection."""
        if self._pool is None:
            return
        while not self._pool.empty():
            client = self._pool.get_nowait()
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except Exception:  # closing a broken connection: nothing to report
                    client.close()
        self._pool = None

    async def _connect(self) -> aiosmtplib.SMTP:
        cfg = self.config
        client = aiosmtplib.SMTP(hostname=cfg.host, port=cfg.port, use_tls=cfg.use_tls, start_tls=cfg.start_tls,
                                 timeout=cfg.timeout, validate_certs=cfg.validate_certs)
        try:
            await client.connect()
            if cfg.username:
                await client.login(cfg.username, cfg.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise MessageRejected(f"SMTP login to {cfg.host}:{cfg.port} refused: check the user and password",
                                  code=exc.code, provider_message=exc.message, channel=self.name) from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            raise TransientError(f"cannot connect to SMTP {cfg.host}:{cfg.port}: {exc}", code=_code(exc),
                                 provider_message=str(exc), channel=self.name) from None
        return client

    async def send(self, message: Message) -> Delivery:
        """Send one message (one or several comma-separated recipients) over a pooled connection."""
        await self.open()
        assert self._pool is not None
        client = await self._pool.get()
        keep = None
        try:
            if client is None or not client.is_connected:
                client = await self._connect()
            data, message_id = message.prebuilt or build_email(message, self.config.from_address)
            delivery = await self._transaction(client, message, data, message_id)
            keep = client
            return delivery
        except (AddressRejected, MessageRejected):
            keep = client
            raise
        finally:
            if keep is None and client is not None:
                client.close()
            self._pool.put_nowait(keep)

    async def _transaction(self, client: aiosmtplib.SMTP, message: Message, data: bytes,
                           message_id: str) -> Delivery:
        recipients = [r.strip() for r in message.to.split(",") if r.strip()]
        try:
            await _envelope(client, "MAIL", self.config.from_address)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(client)
            raise self._reply_error("MAIL FROM", exc, message.to) from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            raise TransientError(f"SMTP connection failed before the message was sent: {exc}",
                                 provider_message=str(exc), channel=self.name) from None
        refused: dict[str, str] = {}
        for recipient in recipients:
            try:
                await _envelope(client, "RCPT", recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[recipient] = f"{exc.code} {exc.message}"
                if exc.code < 500:
                    await self._reset(client)
                    raise TransientError(f"{recipient} deferred by the server: {exc.code} {exc.message}",
                                         code=exc.code, provider_message=exc.message, channel=self.name) from None
            except aiosmtplib.SMTPResponseException as exc:
                await self._reset(client)
                raise self._reply_error("RCPT TO", exc, recipient) from None
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
                raise TransientError(f"SMTP connection failed before the message was sent: {exc}",
                                     provider_message=str(exc), channel=self.name) from None
        if len(refused) == len(recipients):
            await self._reset(client)
            first = next(iter(refused.values()))
            raise AddressRejected(f"{message.to} refused by the server: {first}", code=first.split(" ", 1)[0],
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
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
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

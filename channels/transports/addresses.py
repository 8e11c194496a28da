"""Email addresses on the wire: internationalised domains as IDNA, UTF-8 mailboxes only with SMTPUTF8.

``иван@почта.рф`` has two non-ASCII halves that travel differently. A domain has an ASCII form
(RFC 5890 A-labels, ``xn--80a1acny.xn--p1ai``) that every relay and every header understands, so
an address whose only non-ASCII part is its domain is sent in that form. A local part has none:
it needs a relay that advertises SMTPUTF8 (RFC 6531) and a message with UTF-8 headers (RFC 6532).

Plain ASCII addresses (nearly all of them) never reach this module: callers check ``str.isascii``.
"""

from __future__ import annotations

from dataclasses import dataclass

import idna


class AddressError(ValueError):
    """An address that cannot be written on the wire (no ``@``, a domain IDNA refuses)."""


@dataclass(frozen=True)
class WireAddress:
    """How one address is sent: ``envelope`` for MAIL / RCPT, ``header`` for From / To."""

    envelope: str
    header: str
    utf8: bool  # the local part is not ASCII: only a relay with SMTPUTF8 can carry it


def ascii_domain(domain: str) -> str:
    """The A-label form of a domain (UTS 46 mapping: ``Почта.РФ`` → ``xn--80a1acny.xn--p1ai``)."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressError(f"the domain {domain!r} is not a valid internationalised domain name: {exc}") from None


def wire_address(address: str) -> WireAddress:
    """The forms of ``address`` to send; the domain is always its A-label form in the envelope."""
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{address!r} is not an email address (it needs a local part, @ and a domain)")
    envelope = f"{local}@{ascii_domain(domain)}"
    if local.isascii():
        return WireAddress(envelope, envelope, False)
    return WireAddress(envelope, address, True)


def wire_addresses(addresses: str) -> list[WireAddress]:
    """Each of the comma-separated ``addresses`` as sent."""
    return [wire_address(part) for part in addresses.split(",") if part.strip()]

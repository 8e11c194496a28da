"""Bind Telegram chats to customers: one-time deep-link tokens, ``/start <token>``, and the getUpdates listener."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from telegram import Bot
from telegram.error import TelegramError

from channels.transports.telegram import deep_link, link_expiry, new_token, token_hash
from crm.db import write_tx
from crm.ledger.contacts import bind
from crm.models import ContactKind, Customer, TelegramLink, utcnow
from touchflow.errors import InputError

log = logging.getLogger(__name__)
links = TelegramLink.__table__
customers = Customer.__table__


class LinkError(InputError):
    """The customer is unknown, or a token is unknown, used or expired."""


@dataclass
class Binding:
    """What ``/start <token>`` did."""

    customer_external_id: str
    chat_id: str
    created: bool


def create_link(engine: Engine, external_id: str, bot_username: str) -> tuple[str, datetime]:
    """Make a one-time token for a customer; return (deep link, expiry)."""
    token = new_token()
    expires = link_expiry()
    with write_tx(engine) as conn:
        customer_id = conn.execute(select(customers.c.id).where(customers.c.external_id == external_id)).scalar()
        if customer_id is None:
            raise LinkError(f"no customer with external id {external_id!r}")
        conn.execute(insert(links).values(token_hash=token_hash(token), customer_id=customer_id,
                                          created_at=utcnow(), expires_at=expires))
    return deep_link(bot_username, token), expires


def bind_chat(engine: Engine, token: str, chat_id: int | str, now: datetime | None = None) -> Binding:
    """Use a token once: the chat becomes the customer's active Telegram contact point."""
    now = now or datetime.now(timezone.utc)
    chat = str(chat_id)
    with write_tx(engine) as conn:
        # The conditional update is the arbiter: of two concurrent /start with one token, one wins.
        claimed = conn.execute(update(links).where(links.c.token_hash == token_hash(token), links.c.used_at.is_(None),
                                                   links.c.expires_at > now)
                               .values(used_at=now, chat_id=chat))
        if claimed.rowcount != 1:
            raise LinkError("this link is unknown, already used or expired; ask for a new one")
        customer_id, external_id = conn.execute(
            select(customers.c.id, customers.c.external_id).join(links, links.c.customer_id == customers.c.id)
            .where(links.c.token_hash == token_hash(token))).one()
        created = bind(conn, customer_id, ContactKind.telegram.value, chat, now)
    return Binding(external_id, chat, created)


async def poll(engine: Engine, bot: Bot, *, stop_after: int | None = None, timeout: int = 30,
               on_binding=None, spec=None, on_outcome=None) -> int:
    """Long-poll getUpdates until stopped (or after ``stop_after`` updates); return the chats bound.

    Each update goes through ``channels.telegram_bot.handle_update``, as the webhook's do: the
    same storing, binding, opt-outs and answers (``spec``: the bot file, ``load_spec()`` when None).
    """
    from channels.bot_spec import load_spec
    from channels.telegram_bot import handle_update
    from channels.transports.telegram import TelegramChannel

    spec = spec or load_spec()
    channel = TelegramChannel.around(bot)
    offset = None
    seen = bound = 0
    await bot.initialize()
    try:
        while stop_after is None or seen < stop_after:
            try:
                updates = await bot.get_updates(offset=offset, timeout=timeout)
            except TelegramError as exc:
                log.warning("getUpdates failed: %s; retrying in 5s", exc)
                await asyncio.sleep(5)
                continue
            for item in updates:
                offset = item.update_id + 1
                seen += 1
                outcome = await handle_update(engine, channel, spec, item.to_dict())
                if on_outcome:
                    on_outcome(item, outcome)
                if outcome.action == "bound":
                    bound += 1
                    if on_binding:
                        on_binding(Binding(outcome.customer, str(item.effective_chat.id), True))
    finally:
        await bot.shutdown()
    return bound

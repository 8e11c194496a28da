"""Keys this installation makes for itself and keeps in ``instance_keys`` (created once; the database settles races).

``TOUCHFLOW_SECRET_KEY`` replaces the generated key wherever it is set: a key kept in the database
signs links and seals, but someone who can edit the database could read it, so production
installations set their own.
"""

from __future__ import annotations

import secrets

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from crm.db import write_tx
from crm.models import InstanceKey, utcnow

keys = InstanceKey.__table__
SIGNING = "unsubscribe"          # signs unsubscribe links and keys the history's seals
SUPPRESSION_SALT = "suppression_salt"
HISTORY = "history"              # keys the address digests of touches (never rotated)


def stored_key(engine: Engine, name: str) -> str:
    """The installation's key ``name``, created on first use."""
    with engine.connect() as conn:
        value = conn.execute(select(keys.c.value).where(keys.c.name == name)).scalar()
    if value is None:
        try:
            with write_tx(engine) as conn:
                conn.execute(insert(keys).values(name=name, value=secrets.token_urlsafe(32), created_at=utcnow()))
        except IntegrityError:
            pass  # another process created it first
        with engine.connect() as conn:
            value = conn.execute(select(keys.c.value).where(keys.c.name == name)).scalar_one()
    return value


def stored_key_in(conn: Connection, name: str) -> str:
    """``stored_key`` inside a write transaction the caller holds."""
    value = conn.execute(select(keys.c.value).where(keys.c.name == name)).scalar()
    if value is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(keys).values(name=name, value=secrets.token_urlsafe(32), created_at=utcnow()))
        except IntegrityError:
            pass  # another transaction created it first
        value = conn.execute(select(keys.c.value).where(keys.c.name == name)).scalar_one()
    return value


def configured_secret(settings=None) -> str | None:
    """``TOUCHFLOW_SECRET_KEY``: from the settings, or from the Prefect Secret block ``TOUCHFLOW_SECRET_KEY_BLOCK`` names."""
    from touchflow.secrets import secret
    from touchflow.settings import get_settings

    return secret((settings or get_settings()).secret_key, "TOUCHFLOW_SECRET_KEY")


def signing_key(engine: Engine, configured: str | None = None) -> bytes:
    """The configured secret key, or the installation's own."""
    return (configured or stored_key(engine, SIGNING)).encode()

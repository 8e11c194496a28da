"""Console accounts: users with roles, their passwords, login sessions, lock-outs and API tokens.

The only writer of ``users``, ``user_sessions``, ``login_attempts`` and ``api_tokens``.

- Passwords are kept as Argon2id hashes (``argon2-cffi``), never in clear; a hash made with older
  parameters is upgraded at the next successful login.
- A login is refused unchecked while the name has ``LOCK_AFTER`` failures, or the client address
  ``LOCK_AFTER_CLIENT``, within ``LOCK_WINDOW`` (counted in ``login_attempts``, so every server process agrees); the
  lock-out ends when the window passes.
- A session cookie holds a random token; the database keeps its SHA-256, a CSRF token, an idle
  expiry (``IDLE``) and an absolute one (``LIFETIME``). Disabling a user ends their sessions and
  revokes their tokens.
- API tokens are shown once when created and kept as SHA-256 with a short prefix for lists.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from crm.db import write_tx
from crm.models import ApiToken, LoginAttempt, Manager, User, UserSession, utcnow

users = User.__table__
sessions = UserSession.__table__
attempts = LoginAttempt.__table__
tokens = ApiToken.__table__
managers = Manager.__table__

ROLES = ("admin", "marketing", "sales", "compliance")
MIN_PASSWORD = 10
LOCK_AFTER = 5            # failures of one name
LOCK_AFTER_CLIENT = 20    # failures from one client address, whatever the names (a guesser trying many)
LOCK_WINDOW = timedelta(minutes=15)
IDLE = timedelta(hours=8)
LIFETIME = timedelta(days=7)
TOKEN_PREFIX = "tf_"

_hasher = PasswordHasher()
_NOBODY = _hasher.hash("a password no account has")  # verified for unknown names: the same time either way


class AccountError(ValueError):
    """A request about accounts that cannot be done as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class Account:
    """Who is logged in or holds a token: what the server needs to decide what they may see."""

    user_id: int
    name: str
    role: str
    manager_id: int | None
    csrf: str | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password has {len(password)} characters; use at least {MIN_PASSWORD}")


def _manager_id(conn: Connection, code: str | None) -> int | None:
    if code is None:
        return None
    found = conn.execute(select(managers.c.id).where(managers.c.code == code)).scalar()
    if found is None:
        raise AccountError(f"no rep with code {code!r}; list them with `touchflow managers list`")
    return found


def add_user(engine: Engine, name: str, role: str, password: str, *, manager_code: str | None = None) -> int:
    """Create a user; a sales user must name their rep (``manager_code``). Return the id."""
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    if role == "sales" and manager_code is None:
        raise AccountError("a sales user sees one rep's customers and tasks: give --manager CODE")
    if not name or len(name) > 64 or name != name.strip():
        raise AccountError(f"user name {name!r}: 1-64 characters without spaces at the ends")
    _check_password(password)
    with write_tx(engine) as conn:
        if conn.execute(select(users.c.id).where(users.c.name == name)).first():
            raise AccountError(f"user {name!r} exists; reset the password with `touchflow user reset {name}`")
        now = utcnow()
        return conn.execute(insert(users).values(
            name=name, role=role, manager_id=_manager_id(conn, manager_code), password_hash=_hasher.hash(password),
            active=True, created_at=now, password_changed_at=now).returning(users.c.id)).scalar_one()


def _user(conn: Connection, name: str) -> Any:
    row = conn.execute(select(users).where(users.c.name == name)).first()
    if row is None:
        raise AccountError(f"no user {name!r}; list them with `touchflow user list`")
    return row


def set_password(engine: Engine, name: str, password: str) -> None:
    """A new password; every session of the user ends (tokens stay: they are revoked one by one)."""
    _check_password(password)
    with write_tx(engine) as conn:
        user = _user(conn, name)
        conn.execute(update(users).where(users.c.id == user.id).values(password_hash=_hasher.hash(password),
                                                                        password_changed_at=utcnow()))
        _end_sessions(conn, user.id)


def disable(engine: Engine, name: str) -> None:
    """Disable a user (never deleted: the access log keeps naming them); sessions end, tokens are revoked."""
    with write_tx(engine) as conn:
        user = _user(conn, name)
        now = utcnow()
        conn.execute(update(users).where(users.c.id == user.id).values(active=False, disabled_at=now))
        _end_sessions(conn, user.id)
        conn.execute(update(tokens).where(tokens.c.user_id == user.id, tokens.c.revoked_at.is_(None))
                     .values(revoked_at=now))


def list_users(engine: Engine) -> list[dict[str, Any]]:
    """Every user with role, rep code and state (no hashes)."""
    query = (select(users.c.id, users.c.name, users.c.role, users.c.active, users.c.created_at,
                    users.c.disabled_at, managers.c.code.label("manager"))
             .outerjoin(managers, managers.c.id == users.c.manager_id).order_by(users.c.name))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def _failures(conn: Connection, column, value: str, since: datetime) -> int:
    return conn.execute(select(func.count()).select_from(attempts).where(
        column == value, attempts.c.at >= since, attempts.c.outcome.in_(("failure", "pending")))).scalar_one()


def locked(engine: Engine, name: str, client: str) -> bool:
    """Whether logins for this name or from this client are refused now."""
    since = utcnow() - LOCK_WINDOW
    with engine.connect() as conn:
        return (_failures(conn, attempts.c.username, name[:64], since) >= LOCK_AFTER
                or _failures(conn, attempts.c.client, client[:64], since) >= LOCK_AFTER_CLIENT)


def authenticate(engine: Engine, name: str, password: str, client: str) -> Account | None:
    """The account for a right name and password of an active user; None otherwise (and the failure counts).

    Raises ``AccountError`` while locked out (the attempt is recorded as ``locked``, not counted).
    """
    if locked(engine, name, client):
        with write_tx(engine) as conn:
            conn.execute(insert(attempts).values(username=name[:64], client=client[:64], at=utcnow(), outcome="locked"))
        raise AccountError(f"too many failed logins; try again in {int(LOCK_WINDOW.total_seconds() // 60)} minutes")
    with write_tx(engine) as conn:
        attempt = conn.execute(insert(attempts).values(username=name[:64], client=client[:64], at=utcnow(),
                                                       outcome="pending").returning(attempts.c.id)).scalar_one()
    with engine.connect() as conn:
        user = conn.execute(select(users).where(users.c.name == name)).first()
    ok = _verify(user.password_hash if user is not None else _NOBODY, password) and user is not None and user.active
    with write_tx(engine) as conn:
        conn.execute(update(attempts).where(attempts.c.id == attempt).values(outcome="success" if ok else "failure"))
        if ok and _hasher.check_needs_rehash(user.password_hash):
            conn.execute(update(users).where(users.c.id == user.id).values(password_hash=_hasher.hash(password)))
    return Account(user.id, user.name, user.role, user.manager_id) if ok else None


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def start_session(engine: Engine, account: Account, client: str) -> tuple[str, str]:
    """A new session for the account: (the cookie's token, the session's CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    with write_tx(engine) as conn:
        conn.execute(insert(sessions).values(user_id=account.user_id, token_hash=_digest(token), csrf_token=csrf,
                                             client=client[:64], created_at=now, last_seen_at=now,
                                             expires_at=now + LIFETIME))
    return token, csrf


def session_account(engine: Engine, token: str) -> Account | None:
    """The account of a live session (its idle time restarts), or None when ended, expired or disabled."""
    now = utcnow()
    query = (select(sessions.c.id, sessions.c.csrf_token, sessions.c.last_seen_at, sessions.c.expires_at,
                    users.c.id.label("user_id"), users.c.name, users.c.role, users.c.manager_id, users.c.active)
             .join(users, users.c.id == sessions.c.user_id)
             .where(sessions.c.token_hash == _digest(token), sessions.c.ended_at.is_(None)))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or not row.active or row.expires_at <= now or row.last_seen_at + IDLE <= now:
        return None
    if now - row.last_seen_at > timedelta(minutes=1):  # one write a minute at most
        with write_tx(engine) as conn:
            conn.execute(update(sessions).where(sessions.c.id == row.id).values(last_seen_at=now))
    return Account(row.user_id, row.name, row.role, row.manager_id, row.csrf_token)


def end_session(engine: Engine, token: str) -> None:
    """Log out: the session's token stops working."""
    with write_tx(engine) as conn:
        conn.execute(update(sessions).where(sessions.c.token_hash == _digest(token), sessions.c.ended_at.is_(None))
                     .values(ended_at=utcnow()))


def _end_sessions(conn: Connection, user_id: int) -> None:
    conn.execute(update(sessions).where(sessions.c.user_id == user_id, sessions.c.ended_at.is_(None))
                 .values(ended_at=utcnow()))


def create_token(engine: Engine, name: str, label: str = "") -> tuple[int, str]:
    """A new API token for the user: (its id, the token — shown this once, kept only as a hash)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with write_tx(engine) as conn:
        user = _user(conn, name)
        if not user.active:
            raise AccountError(f"user {name!r} is disabled")
        ident = conn.execute(insert(tokens).values(user_id=user.id, label=label[:100], prefix=token[:10],
                                                   token_hash=_digest(token), created_at=utcnow())
                             .returning(tokens.c.id)).scalar_one()
    return ident, token


def token_account(engine: Engine, token: str) -> Account | None:
    """The account of a live API token (its last use is noted), or None."""
    query = (select(tokens.c.id, users.c.id.label("user_id"), users.c.name, users.c.role, users.c.manager_id)
             .join(users, users.c.id == tokens.c.user_id)
             .where(tokens.c.token_hash == _digest(token), tokens.c.revoked_at.is_(None), users.c.active.is_(True)))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    with write_tx(engine) as conn:
        conn.execute(update(tokens).where(tokens.c.id == row.id).values(last_used_at=utcnow()))
    return Account(row.user_id, row.name, row.role, row.manager_id)


def revoke_token(engine: Engine, token_id: int) -> None:
    """Revoke an API token by id."""
    with write_tx(engine) as conn:
        done = conn.execute(update(tokens).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                            .values(revoked_at=utcnow())).rowcount
    if not done:
        raise AccountError(f"no live API token {token_id}; list them with `touchflow user list --json`")

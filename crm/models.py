"""All tables of the customer base, as SQLModel classes.

Reference data (given by the customer): ``Customer``, ``ContactPoint``.
Transactional data (collected): ``Purchase``, ``ServiceEvent``, ``Consent`` (an append-only
ledger) and ``Touch`` (every contact attempt and every decision not to contact).
"""

from __future__ import annotations

import enum
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Optional

from sqlalchemy import JSON, Column, DateTime, Index, Numeric, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Return the current time in UTC (timezone-aware)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Store instants as naive UTC on every database and hand them back timezone-aware.

    SQLite keeps no zone and PostgreSQL's ``timestamptz`` answers in the session's zone; one
    convention for both keeps comparisons and history exports identical.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class ContactKind(str, enum.Enum):
    """The kind of address a contact point holds."""

    email = "email"
    phone = "phone"
    telegram = "telegram"


class ContactStatus(str, enum.Enum):
    """Whether a contact point can be used."""

    active = "active"
    bounced = "bounced"
    blocked = "blocked"
    invalid = "invalid"
    superseded = "superseded"  # replaced by a newer address in an import (kept for the history)


class Channel(str, enum.Enum):
    """A way of reaching a customer; consents are given per channel."""

    email = "email"
    sms = "sms"
    voice = "voice"
    telegram = "telegram"
    call = "call"


class Purpose(str, enum.Enum):
    """Why a customer is contacted: advertising needs consent, service notices are exempt from caps."""

    marketing = "marketing"
    service = "service"


CHANNEL_CONTACT_KIND: dict[str, ContactKind] = {
    Channel.email.value: ContactKind.email,
    Channel.sms.value: ContactKind.phone,
    Channel.voice.value: ContactKind.phone,
    Channel.call.value: ContactKind.phone,
    Channel.telegram.value: ContactKind.telegram,
}


DEFAULT_CALL_CAPACITY = 40  # calls a rep is given per day unless their record says otherwise


class Manager(SQLModel, table=True):
    """A sales rep who owns customers and receives call tasks, up to ``daily_call_capacity`` a day.

    ``needs_name`` marks a rep created by a customer import that named an unknown code: the code
    stands in for the name until a managers import gives one (messages must not show it).
    """

    __tablename__ = "managers"

    id: Optional[int] = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    email: Optional[str] = Field(default=None, max_length=320)
    phone: Optional[str] = Field(default=None, max_length=32)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    position: Optional[str] = Field(default=None, max_length=200)  # signs documents: «менеджер по продажам»
    daily_call_capacity: int = Field(default=DEFAULT_CALL_CAPACITY)
    needs_name: bool = Field(default=False)


class Customer(SQLModel, table=True):
    """A customer record as the source CRM knows it (one person may have several records)."""

    __tablename__ = "customers"
    # The console's lookup by the start of a name (LIKE 'prefix%' on PostgreSQL in any collation).
    __table_args__ = (Index("ix_customers_name", "name", postgresql_ops={"name": "text_pattern_ops"}),)

    id: Optional[int] = Field(default=None, primary_key=True)
    external_id: str = Field(max_length=128, unique=True, index=True)
    name: str = Field(default="", max_length=300)
    first_name: Optional[str] = Field(default=None, max_length=100)
    birthday: Optional[date] = Field(default=None)
    region: Optional[str] = Field(default=None, max_length=100, index=True)  # «Приморский край»: never a city
    city: Optional[str] = Field(default=None, max_length=100)
    gender: Optional[str] = Field(default=None, max_length=1)  # 'f', 'm', or NULL when not given
    timezone: Optional[str] = Field(default=None, max_length=64)
    manager_id: Optional[int] = Field(default=None, foreign_key="managers.id", index=True)
    preferred_channel: Optional[str] = Field(default=None, max_length=16)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    person_id: Optional[int] = Field(default=None, index=True)  # the smallest customer id of the same person
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ContactPoint(SQLModel, table=True):
    """An address of a customer in one kind (email, phone, Telegram chat) with its usability."""

    __tablename__ = "contact_points"
    __table_args__ = (
        UniqueConstraint("customer_id", "kind", "value", name="uq_contact_points_customer_kind_value"),
        Index("ix_contact_points_kind_value", "kind", "value"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    kind: str = Field(max_length=16)
    raw: str = Field(max_length=320)
    value: str = Field(max_length=320)
    status: str = Field(default=ContactStatus.active.value, max_length=16)
    status_reason: Optional[str] = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Consent(SQLModel, table=True):
    """One entry of the append-only consent ledger: a grant or a revocation, never edited."""

    __tablename__ = "consents"
    __table_args__ = (
        UniqueConstraint(
            "customer_id", "channel", "purpose", "granted", "at", "source",
            name="uq_consents_entry",
        ),
        Index("ix_consents_lookup", "customer_id", "channel", "purpose", "at"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id")
    channel: str = Field(max_length=16)
    purpose: str = Field(max_length=16)
    granted: bool
    at: datetime = Field(sa_type=UTCDateTime)
    source: str = Field(max_length=200)
    wording: Optional[str] = Field(default=None, max_length=2000)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Purchase(SQLModel, table=True):
    """One purchase line: what, when and how much a customer bought."""

    __tablename__ = "purchases"
    # Covers the per-customer aggregates and the replenishment windows (no table lookups, no sort).
    __table_args__ = (Index("ix_purchases_customer_category_date", "customer_id", "category", "purchased_on",
                            "quantity", "amount"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    source_key: str = Field(max_length=128, unique=True)
    customer_id: int = Field(foreign_key="customers.id")
    purchased_on: date
    product: str = Field(max_length=300)
    category: Optional[str] = Field(default=None, max_length=200)
    quantity: Decimal = Field(default=Decimal(1), sa_column=Column(Numeric(14, 3), nullable=False))
    amount: Decimal = Field(default=Decimal(0), sa_column=Column(Numeric(14, 2), nullable=False))
    currency: str = Field(default="RUB", max_length=3)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ServiceEvent(SQLModel, table=True):
    """A visit or service event (haircut, car service, trip) that may start a follow-up."""

    __tablename__ = "service_events"
    __table_args__ = (Index("ix_service_events_customer_kind_date", "customer_id", "kind", "occurred_on"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    source_key: str = Field(max_length=128, unique=True)
    customer_id: int = Field(foreign_key="customers.id")
    kind: str = Field(max_length=64)
    occurred_on: date
    note: Optional[str] = Field(default=None, max_length=2000)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Touch(SQLModel, table=True):
    """One line of the contact history: a contact attempt, or a decision not to contact and why."""

    __tablename__ = "touches"
    __table_args__ = (
        Index("ix_touches_customer_created", "customer_id", "created_at"),
        Index("ix_touches_person_created", "person_key", "created_at"),
        Index("ix_touches_campaign_created", "campaign", "created_at", "id"),  # was ix_touches_campaign (0011)
        Index("ix_touches_run_status", "run_id", "status"),
        # The console's history search: one page newest first from an index, whatever the filter.
        Index("ix_touches_created", "created_at", "id"),
        Index("ix_touches_campaign_status_created", "campaign", "status", "created_at", "id"),
        Index("ix_touches_status_created", "status", "created_at", "id"),
        Index("ix_touches_in_reply_to", "in_reply_to"),
        Index("ix_touches_provider_message_id", "provider_message_id"),  # replies and callbacks find their touch
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    claim_key: Optional[str] = Field(default=None, max_length=200, unique=True)
    person_key: Optional[str] = Field(default=None, max_length=64)
    customer_id: Optional[int] = Field(default=None, foreign_key="customers.id")
    campaign: Optional[str] = Field(default=None, max_length=200)
    run_id: Optional[str] = Field(default=None, max_length=64)
    offer: Optional[str] = Field(default=None, max_length=200)
    offer_valid_until: Optional[date] = Field(default=None)  # the date the message promised, computed by the run
    purpose: str = Field(default=Purpose.marketing.value, max_length=16)
    channel: Optional[str] = Field(default=None, max_length=16)
    contact_point_id: Optional[int] = Field(default=None, foreign_key="contact_points.id")
    address: Optional[str] = Field(default=None, max_length=320)
    address_digest: Optional[str] = Field(default=None, max_length=64)  # keyed hash: chained, kept after erasure
    status: str = Field(max_length=16)
    reason: Optional[str] = Field(default=None, max_length=64)
    detail: Optional[str] = Field(default=None, max_length=2000)
    template: Optional[str] = Field(default=None, max_length=200)
    template_hash: Optional[str] = Field(default=None, max_length=64)
    body: Optional[str] = Field(default=None)
    body_hash: Optional[str] = Field(default=None, max_length=64)
    consent_id: Optional[int] = Field(default=None, foreign_key="consents.id")
    manager_id: Optional[int] = Field(default=None, foreign_key="managers.id")
    provider_message_id: Optional[str] = Field(default=None, max_length=200)
    error_code: Optional[str] = Field(default=None, max_length=64)
    error_message: Optional[str] = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    due_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)  # deferred touches: when allowed
    sent_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    delivered_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    # ``out``: touchflow contacted the person; ``in``: the person wrote (a reply, a bot question)
    direction: str = Field(default="out", max_length=3, sa_column_kwargs={"server_default": "out"})
    in_reply_to: Optional[int] = Field(default=None, foreign_key="touches.id")  # the touch an inbound one answers
    cost: Optional[Decimal] = Field(default=None, sa_column=Column(Numeric(12, 4), nullable=True))  # price when claimed


class ImportRun(SQLModel, table=True):
    """A record of one import: which file, what kind, and how many rows went where."""

    __tablename__ = "import_runs"

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    path: str = Field(max_length=1000)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    rows: int = 0
    accepted: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejects_path: Optional[str] = Field(default=None, max_length=1000)
    status: str = Field(default="finished", max_length=16)  # finished, or failed (then ``error`` says why)
    error: Optional[str] = Field(default=None, max_length=2000)


class CustomerStats(SQLModel, table=True):
    """Per-customer purchase statistics and RFM scores, refreshed after purchase imports.

    Day numbers (``first_day``, ``last_day``) count days since 1970-01-01 so that segment rules do
    date arithmetic as integers, identically on SQLite and PostgreSQL.
    """

    __tablename__ = "customer_stats"
    __table_args__ = (Index("ix_customer_stats_rfm_group", "rfm_group"),
                      Index("ix_customer_stats_last_day", "last_day"))

    customer_id: int = Field(foreign_key="customers.id", primary_key=True)
    purchase_count: int = 0
    purchase_days: int = 0
    total_amount: float = 0.0
    avg_check: float = 0.0
    first_purchase_on: Optional[date] = None
    last_purchase_on: Optional[date] = None
    first_day: Optional[int] = None
    last_day: Optional[int] = None
    aipt_days: Optional[float] = None
    rfm_r: Optional[int] = None
    rfm_f: Optional[int] = None
    rfm_m: Optional[int] = None
    rfm_group: Optional[str] = Field(default=None, max_length=32)
    refreshed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Prediction(SQLModel, table=True):
    """A predicted need of one customer: when they run out (replenishment) or are due a visit.

    ``basis`` is ``replenishment`` (key ``category:<c>`` or ``product:<p>``) or ``service``
    (key: the event kind). ``note`` says why there is no date when there is none.
    """

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("customer_id", "basis", "key", name="uq_predictions_customer_basis_key"),
        Index("ix_predictions_basis_key_due", "basis", "key", "due_on"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id")
    basis: str = Field(max_length=16)
    key: str = Field(max_length=300)
    observations: int = 0
    last_on: Optional[date] = None
    last_quantity: Optional[float] = None
    avg_daily_use: Optional[float] = None
    interval_days: Optional[float] = None
    interval_source: Optional[str] = Field(default=None, max_length=32)
    due_on: Optional[date] = None
    note: Optional[str] = Field(default=None, max_length=500)
    refreshed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TelegramLink(SQLModel, table=True):
    """A one-time deep-link token that binds a Telegram chat to a customer (only its hash is kept)."""

    __tablename__ = "telegram_links"

    id: Optional[int] = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    chat_id: Optional[str] = Field(default=None, max_length=32)


class InstanceKey(SQLModel, table=True):
    """Keys this installation generated for itself (e.g. the one signing unsubscribe links)."""

    __tablename__ = "instance_keys"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TouchEvent(SQLModel, table=True):
    """A status move of a touch (claimed → sending → sent → delivered / failed / unknown), with its time.

    Every touch has at least one: the state it was written in. Each later move carries what it set
    on the touch, so the touch's current state is the fold of its events (``compliance verify``).
    """

    __tablename__ = "touch_events"
    __table_args__ = (Index("ix_touch_events_touch_id", "touch_id", "id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    touch_id: int = Field(foreign_key="touches.id")
    status: str = Field(max_length=16)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    detail: Optional[str] = Field(default=None, max_length=2000)
    reason: Optional[str] = Field(default=None, max_length=64)
    error_code: Optional[str] = Field(default=None, max_length=64)
    error_message: Optional[str] = Field(default=None, max_length=2000)
    provider_message_id: Optional[str] = Field(default=None, max_length=200)


class ContactLock(SQLModel, table=True):
    """A person's claim on a kind of contact until it expires; the unique key makes the database the arbiter.

    ``scope`` ``offer`` (key: the offer; expires after the offer's cooldown), ``group`` (key: the
    offer group; the same cooldown for every offer of the group), ``cap`` (key: slot number; N
    slots = at most N marketing touches in the window), ``gap`` (key ``marketing``: no other
    marketing touch until it expires), ``call`` (key ``open``: one open call task per person;
    released when the task is closed).
    """

    __tablename__ = "contact_locks"
    __table_args__ = (UniqueConstraint("person_id", "scope", "key", name="uq_contact_locks_person_scope_key"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    person_id: int = Field(index=True)
    scope: str = Field(max_length=16)
    key: str = Field(max_length=200)
    touch_id: Optional[int] = Field(default=None)
    expires_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    priority: Optional[int] = Field(default=None)  # the holding campaign's priority: outranked, or only a gap


class CampaignRun(SQLModel, table=True):
    """One run of a campaign flow: when, how it ended, and its counts.

    A running run holds a lease (``lease_until``) that its process renews while it works; only a
    run whose lease has expired is taken for dead: ``interrupted``, its in-flight touches settled.
    """

    __tablename__ = "campaign_runs"

    id: str = Field(primary_key=True, max_length=64)
    campaign: str = Field(max_length=200, index=True)
    dry_run: bool = False
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    status: str = Field(default="running", max_length=16)  # running, finished, failed, interrupted
    lease_until: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    owner: Optional[str] = Field(default=None, max_length=200)  # host and process id, for people reading
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))


class CallTask(SQLModel, table=True):
    """A sales rep's task to call a customer, with the script rendered for them."""

    __tablename__ = "call_tasks"
    __table_args__ = (Index("ix_call_tasks_manager_status", "manager_id", "status"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    touch_id: Optional[int] = Field(default=None, foreign_key="touches.id")
    customer_id: int = Field(foreign_key="customers.id", index=True)
    person_id: int = Field(index=True)
    manager_id: Optional[int] = Field(default=None, foreign_key="managers.id")
    campaign: Optional[str] = Field(default=None, max_length=200)
    offer: Optional[str] = Field(default=None, max_length=200)
    phone: Optional[str] = Field(default=None, max_length=32)
    script: str = ""
    document_path: Optional[str] = Field(default=None, max_length=1000)  # a proposal generated for the call
    due_on: date
    window_start: Optional[str] = Field(default=None, max_length=5)
    window_end: Optional[str] = Field(default=None, max_length=5)
    status: str = Field(default="open", max_length=16)
    outcome: Optional[str] = Field(default=None, max_length=32)
    note: Optional[str] = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    closed_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class Reassignment(SQLModel, table=True):
    """A move of a call task or a customer from one rep to another, and why (written by ``crm.ledger.calls``)."""

    __tablename__ = "reassignments"

    id: Optional[int] = Field(default=None, primary_key=True)
    subject: str = Field(max_length=16)  # call_task or customer
    subject_id: int
    customer_id: int = Field(foreign_key="customers.id", index=True)
    from_manager_id: Optional[int] = Field(default=None, foreign_key="managers.id")
    to_manager_id: Optional[int] = Field(default=None, foreign_key="managers.id")
    reason: str = Field(max_length=500)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Suppression(SQLModel, table=True):
    """A salted hash of an address that must never be contacted again (kept after a customer is erased)."""

    __tablename__ = "suppressions"

    id: Optional[int] = Field(default=None, primary_key=True)
    hash: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=16)
    reason: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ChainSeal(SQLModel, table=True):
    """A checkpoint of the history's hash chain: the chain value after the row with ``last_id``.

    ``touchflow compliance verify`` recomputes the chains and compares them with every seal, so an
    edited or deleted history row (up to the newest seal) is found. Seals of ``version`` 2 are
    numbered per table (``seq``), linked to the previous seal and keyed (``mac``, an HMAC under
    the installation's secret), so a removed or forged seal is found too.
    """

    __tablename__ = "chain_seals"
    __table_args__ = (Index("ix_chain_seals_table_last", "table_name", "last_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    table_name: str = Field(max_length=32)
    last_id: int
    rows: int
    chain: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    version: int = 1
    seq: Optional[int] = None
    mac: Optional[str] = Field(default=None, max_length=64)


class Erasure(SQLModel, table=True):
    """An erasure of a customer record's personal data: why its touches no longer hold addresses and texts."""

    __tablename__ = "erasures"

    id: Optional[int] = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customers.id", index=True)
    reason: str = Field(max_length=200)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class User(SQLModel, table=True):
    """A person who uses the console or the API, with one role (written by ``crm.accounts``).

    Only an Argon2 hash of the password is kept. A sales user is tied to their rep
    (``manager_id``): they see that rep's customers and tasks. Users are disabled, never deleted,
    so the access log keeps naming who looked.
    """

    __tablename__ = "users"

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(max_length=16)  # admin, marketing, sales, compliance
    manager_id: Optional[int] = Field(default=None, foreign_key="managers.id")
    password_hash: str = Field(max_length=200)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    password_changed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    disabled_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    """A bearer token for the API: shown once when created, kept as its SHA-256 only (``crm.accounts``)."""

    __tablename__ = "api_tokens"

    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    label: str = Field(default="", max_length=100)
    prefix: str = Field(max_length=16)  # the token's first characters: tells tokens apart in lists
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    revoked_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class LoginAttempt(SQLModel, table=True):
    """One login attempt: counted per user and per client address for the lock-out, in every process alike.

    ``outcome``: pending (being checked; counts as a failure), failure, success, or locked (refused
    unchecked during a lock-out; not counted, so a lock-out ends when its window does).
    """

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_username_at", "username", "at"),
                      Index("ix_login_attempts_client_at", "client", "at"))

    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(max_length=64)
    client: str = Field(max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    outcome: str = Field(default="pending", max_length=16)


class UserSession(SQLModel, table=True):
    """A console login: the cookie holds a random token, this row its SHA-256, its CSRF token and its expiries."""

    __tablename__ = "user_sessions"

    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    csrf_token: str = Field(max_length=64)
    client: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)  # the absolute end, whatever the activity
    ended_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class AccessLog(SQLModel, table=True):
    """Who looked at, exported or erased whose data, when, from where, by which route (``crm.ledger.access``).

    Append-only and chained (``crm.ledger.audit``). It names people by internal ids only
    (``customer_id``, ``person_id``): no name, address or external id, so an erasure leaves
    nothing personal behind in a table that may never be edited.
    """

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_customer", "customer_id"), Index("ix_access_log_user", "user_id"))

    id: Optional[int] = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    user_id: Optional[int] = Field(default=None)
    username: str = Field(max_length=64)
    role: str = Field(max_length=16)
    action: str = Field(max_length=32)  # card, history, timeline, consents, customers, export, erasure
    customer_id: Optional[int] = Field(default=None)
    person_id: Optional[int] = Field(default=None)
    client: str = Field(default="", max_length=64)
    method: str = Field(max_length=8)
    route: str = Field(max_length=200)
    detail: Optional[str] = Field(default=None, max_length=500)


class JourneyState(SQLModel, table=True):
    """A person's place in a journey: the step they are at, when it is due, or why they left (``crm.ledger.journeys``).

    ``status`` is ``active`` (at ``step``, due at ``due_at``), ``done`` (past the last step),
    ``left`` (``left_reason``: a branch's condition, ``opted_out``, ``held_back:<reason>``) or
    ``holdout`` (the journey's control group: never contacted). A runner leases the rows it works
    (``lease_owner`` until ``lease_until``), so two runners never run one person's step at once.
    """

    __tablename__ = "journey_states"
    __table_args__ = (UniqueConstraint("journey", "person_id", name="uq_journey_states_journey_person"),
                      Index("ix_journey_states_due", "journey", "status", "due_at"))

    id: Optional[int] = Field(default=None, primary_key=True)
    journey: str = Field(max_length=200)
    person_id: int
    customer_id: int = Field(foreign_key="customers.id")
    step: str = Field(max_length=60)
    status: str = Field(default="active", max_length=16)
    due_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    entered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    step_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)  # when the current step began
    attempts: int = Field(default=0)  # tries of the current send step the policy held back
    last_touch_id: Optional[int] = Field(default=None)
    left_reason: Optional[str] = Field(default=None, max_length=64)
    lease_owner: Optional[str] = Field(default=None, max_length=64)
    lease_until: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Engagement(SQLModel, table=True):
    """An open (the email's pixel was fetched) or a click (a tracked link was followed) of a touch (``crm.ledger.engagement``).

    Not a touch event: opens and clicks are what a mail client did, not moves of the touch, so
    they are neither folded into its status nor chained (why: ``crm.ledger.engagement``). ``slot``
    collapses repeated opens (one per touch and window, by the unique key); clicks have none (every
    click is kept). ``client`` is the user agent's class, never the user agent or the address.
    """

    __tablename__ = "engagements"
    __table_args__ = (UniqueConstraint("touch_id", "kind", "human", "slot", name="uq_engagements_touch_kind_slot"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    touch_id: int = Field(foreign_key="touches.id")
    kind: str = Field(max_length=8)  # opened, clicked
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    url: Optional[str] = Field(default=None, max_length=2000)  # a click's target
    client: str = Field(default="unknown", max_length=16)  # browser, proxy, scanner, bot, unknown
    human: bool = Field(default=True)  # False: a scanner's or a prefetch's, not counted in rates
    slot: Optional[int] = Field(default=None)  # opens: the collapse window it fell in; clicks: none


class Bounce(SQLModel, table=True):
    """A delivery status notification about an email touch (``crm.ledger.bounces``): hard or soft, once per report.

    One row per (touch, action, status): the same report arriving twice changes nothing twice, and
    soft bounces "in a row" are counted over an address's touches from these rows. No address or
    diagnostic text is kept here (the touch holds them, and erasure strips them there).
    """

    __tablename__ = "bounces"
    __table_args__ = (UniqueConstraint("touch_id", "action", "status", name="uq_bounces_touch_action_status"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    touch_id: int = Field(foreign_key="touches.id")
    severity: str = Field(max_length=8)  # hard or soft
    action: str = Field(max_length=16)   # failed, delayed (RFC 3464)
    status: str = Field(max_length=16)   # 5.1.1, 4.2.2
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

"""A run of a campaign: what it needs (built once), its lease, and how it ends.

``start`` records the run with a lease (renewed by a thread while the run works), first taking
for dead the runs whose lease has expired (``crm.ledger.runs.reap``). ``finish`` closes the
channels and writes the summary, read from the history so that it is right whichever process
sent which batch. ``RunRef`` is what another process, on this machine or another, needs to take
part in a run: no secret and no database password travel in it; each worker reads its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy.engine import URL, Engine, make_url

from channels.base import Channel
from channels.render import Rendered, meta, render, template_hash
from channels.unsubscribe import make_token, unsubscribe_url
from crm.db import BASE_TABLES, HISTORY_TABLES, refresh_statistics
from crm.keys import configured_secret, signing_key
from crm.ledger import runs as ledger_runs
from crm.ledger.policy import Decision, Policy
from flows.spec import CampaignSpec, resolve_offer
from touchflow.errors import ConfigError, RunStopped, UsageError
from touchflow.settings import SECRETS, Settings, get_settings

SAMPLE_SIZE = 3
PROGRESS: list[Callable[[int, int | None], None]] = []  # listeners every run of this process tells (a CLI bar)


@contextmanager
def listening(listener: Callable[[int, int | None], None]) -> Iterator[None]:
    """Tell ``listener(done, total)`` how far the runs of this process are, while the block runs."""
    PROGRESS.append(listener)
    try:
        yield
    finally:
        PROGRESS.remove(listener)
BATCH_BY = "batch_by:"  # a count key: "batch_by:host:pid" is one batch that process ran (``flows.workers``)
PREPARED_BY = "prepared_by:"  # a count key: "prepared_by:host:pid" is one page that process prepared (``flows.preparer``)


def freeze(value: Any) -> Any:
    """A read-only copy of nested offer values: no template can change what the next customer sees."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


@dataclass
class Run:
    """Everything one run of a campaign needs, built once."""

    engine: Engine
    spec: CampaignSpec
    run_id: str
    now: datetime
    as_of: date
    policy: Policy
    settings: Settings
    dry_run: bool = False
    template_hash: str = ""
    key: bytes = b""
    channels: dict[str, Channel] = field(default_factory=dict)
    runner: asyncio.Runner | None = None  # one event loop per run: connection pools live across batches
    lease: ledger_runs.Lease | None = None
    breakers: dict[str, Any] = field(default_factory=dict)  # per channel: stops one that no longer answers
    paces: dict[str, tuple[int, bool]] = field(default_factory=dict)  # per channel, from the batch before: its
    # last chunk's size and whether it waits on the network (flows.delivery.Stream starts from them)
    windows: dict[str, int] = field(default_factory=dict)  # per channel: the messages in flight the batch before
    # ended with (the next batch's sending starts there, not from the pool size again)
    simulated: dict[int, dict] | None = None  # a dry run: the locks it would have taken, for multi-record persons
    total: int | None = None  # customers the segment selects (counted when paging starts)
    done: int = 0             # customers whose batches are done
    listeners: list[Callable[[int, int | None], None]] = field(default_factory=list)  # progress, this process
    started: float = field(default_factory=time.monotonic)
    counts: Counter = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    offer_values: Any = None  # the offer as templates see it (read-only): template defaults, spec values, key
    claim_key_of: Callable[[Decision], str] | None = None  # a journey step's own key: one touch per person and step
    journey: bool = False  # a journey's step: the journey's own offer locks do not hold its later steps back
    due_rivals: list[Any] | None = None  # the plan's campaigns that outrank this run in its gap window (found once)
    prices: Any = None  # channels.pricing.Prices: the settings' prices under the spec's
    base_responses: dict[str, Any] | None = None  # channels: auto: the base's answers per channel (read once)
    budget_spent: bool = False
    dry_spent: Any = None  # a dry run: the campaign's spend plus what it would have claimed (Decimal)  # a claim met the campaign's budget: this process claims nothing more in the run

    def __post_init__(self) -> None:
        """The offer for this run's date: ``valid_until`` a date (rules evaluated on ``as_of``); SpecError if past."""
        if self.prices is None:
            from channels.pricing import prices_for

            self.prices = prices_for(self.settings, self.spec.prices.model_dump())
        if self.offer_values is None:
            offer = resolve_offer(meta(self.spec.template).get("offer", {}), self.spec.offer_values, self.as_of,
                                  template=self.spec.template, campaign=self.spec.name)
            self.offer_values = freeze({**offer, "key": self.spec.offer})

    @property
    def offer_valid_until(self) -> date | None:
        """The date the run's messages promise the offer until (recorded on each touch), if the offer has one."""
        return self.offer_values.get("valid_until")

    def advance(self, customers: int) -> None:
        """Count ``customers`` as done and tell the progress listeners (a bar, a Prefect artifact)."""
        self.done += customers
        for listener in self.listeners:
            listener(self.done, self.total)

    def clock(self) -> datetime:
        """The run's time: its start (``now``, which tests and the demo may set) plus the time elapsed."""
        return self.now + timedelta(seconds=time.monotonic() - self.started)

    def check_lease(self) -> None:
        """Stop sending when this run was taken for dead (its lease expired and another run settled its touches)."""
        if self.lease is not None and self.lease.lost:
            raise RunStopped(f"run {self.run_id} of {self.spec.name} lost its lease (it was stalled longer than "
                             f"{self.settings.run_lease_seconds:g} s and another run took over its touches); "
                             "it stops here and sends nothing more")

    def unsubscribe_link(self, decision: Decision) -> str | None:
        """The one-click link for an email touch (made once at render, reused by the List-Unsubscribe header)."""
        if decision.channel != "email" or not self.key:
            return None
        return unsubscribe_url(self.settings.public_url,
                               make_token(self.key, decision.customer_id, "email", decision.address or ""))

    def render(self, decision: Decision, context: dict[str, Any], channel: str) -> Rendered:
        """The decision's message on ``channel``, with its own unsubscribe link; raises TemplateError."""
        context = dict(context)
        context["unsubscribe_url"] = self.unsubscribe_link(decision)
        rendered = render(self.spec.template, channel, context, sms_max_segments=self.settings.sms_max_segments,
                          sms_over_limit=self.settings.sms_over_limit, timeout=self.settings.render_timeout_seconds,
                          max_bytes=self.settings.render_max_bytes)
        rendered.unsubscribe_url = context["unsubscribe_url"]
        return rendered


def local_now(spec: CampaignSpec) -> datetime:
    """Now, in the campaign's own zone (its schedule's, else this machine's): a run's ``as_of`` is its local day,
    the day the plan and its simulator count it on."""
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(spec.schedule.timezone)) if spec.schedule else datetime.now().astimezone()


def default_policy(settings: Settings) -> Policy:
    """The policy from settings (campaign specs override it)."""
    return Policy(default_timezone=settings.default_timezone, min_gap_hours=settings.min_gap_hours)


def start(engine: Engine, spec: CampaignSpec, *, dry_run: bool = False, now: datetime | None = None,
          as_of: date | None = None, settings: Settings | None = None) -> Run:
    """Open a run: settle runs that died, record this one with a lease, prepare template and key."""
    if spec.kind == "journey":
        raise UsageError(f"{spec.name} is a journey: it runs step by step with `touchflow journey run {spec.name}` "
                         "(or its Prefect deployment), not as one campaign run")
    settings = settings or get_settings()
    now = now or datetime.now(timezone.utc)
    if spec.channel_choice == "auto":  # ranks the channels its template has a part for
        from channels.render import channels_of

        spec = spec.for_template(channels_of(spec.template))
    run = Run(engine=engine, spec=spec, run_id=uuid.uuid4().hex, now=now, as_of=as_of or now.date(),
              policy=spec.contact_policy(default_policy(settings)), settings=settings, dry_run=dry_run,
              template_hash=template_hash(spec.template))
    for reaped in ledger_runs.reap(engine):
        run.counts["unknown_from_earlier_runs"] += reaped["unknown"]
        run.counts["released_from_earlier_runs"] += reaped["released"]
    ledger_runs.open_run(engine, run.run_id, spec.name, dry_run=dry_run, now=now,
                         lease_seconds=settings.run_lease_seconds)
    run.lease = ledger_runs.Lease(engine, run.run_id, settings.run_lease_seconds)
    run.listeners.extend(PROGRESS)
    refresh_statistics(engine, BASE_TABLES + HISTORY_TABLES)
    if not dry_run:
        run.key = signing_key(engine, configured_secret(settings))
    return run


def finish(run: Run, status: str = "finished") -> dict[str, Any]:
    """Close the run and return its summary (per channel, per decision reason, samples for dry runs)."""
    from flows.delivery import close_channels

    try:
        close_channels(run)
    finally:
        if run.lease is not None:
            run.lease.stop()
    if status != "finished" and not run.dry_run:  # what it claimed and never handed over goes to the next run
        unknown, released = ledger_runs.settle(run.engine, run.run_id, reason="run_stopped")
        run.counts.update({"unknown_when_stopped": unknown, "released_when_stopped": released})
    summary = summarise(run)
    if not run.dry_run:  # sealed before the run is closed, and the seals named in its summary
        from crm.ledger.audit import seal

        summary["sealed"] = seal(run.engine, key=run.key)
    ledger_runs.close_run(run.engine, run.run_id, status, summary)
    return summary


def summarise(run: Run) -> dict[str, Any]:
    """The run's summary: from the history for a real run, from this process's counts for a dry one."""
    base = {"campaign": run.spec.name, "run_id": run.run_id, "dry_run": run.dry_run, "offer": run.spec.offer,
            "purpose": run.spec.purpose, "samples": run.samples}
    extra = {k: v for k, v in sorted(run.counts.items())
             if not k.startswith(("skipped:", "selected", BATCH_BY, PREPARED_BY))
             and (run.dry_run or ":" not in k or k.startswith(("fallback:", "duplicated:", "deferred_sent:",
                                                                            "lost_claim:")))}
    # which process (host:pid) ran how many batches (a pool, a Dask cluster), or prepared how many pages (a preparer)
    for name, prefix in (("batches_by_worker", BATCH_BY), ("pages_prepared_by", PREPARED_BY)):
        split = {k[len(prefix):]: v for k, v in sorted(run.counts.items()) if k.startswith(prefix)}
        if split:
            extra[name] = split
    if run.dry_run:
        channels: dict[str, dict[str, int]] = {}
        for key, value in list(extra.items()):
            if ":" in key and not key.startswith("fallback:"):
                outcome, channel = key.split(":", 1)
                channels.setdefault(channel, {})[outcome] = value
                del extra[key]
        reasons = {k.split(":", 1)[1]: v for k, v in sorted(run.counts.items()) if k.startswith("skipped:")}
        return base | {"selected": run.counts.get("selected", 0), "channels": channels, "not_contacted": reasons,
                       "other": extra}
    with run.engine.connect() as conn:
        recorded = ledger_runs.summary_from_history(conn, run.run_id)
    return base | {"selected": recorded["selected"], "channels": recorded["channels"],
                   "not_contacted": recorded["not_contacted"], "other": {**recorded["other"], **extra}}


def key_check(run_id: str, key: bytes) -> str:
    """A digest by which a worker checks it signs with the run's key, the key itself never leaving the process.

    Keyed by the key (HMAC) over the run's id: nothing to look up, nothing shared between runs.
    """
    return hmac.new(key, f"touchflow-run:{run_id}".encode(), hashlib.sha256).hexdigest()[:16]


def without_password(url: URL | str) -> str:
    """A database URL as it may travel and be printed: no password, nor one in its query (``?password=``)."""
    url = make_url(url) if isinstance(url, str) else url
    url = url._replace(password=None)  # URL.set(password=None) would keep it: None there means unchanged
    url = url.difference_update_query([k for k in url.query if "password" in k.lower()])
    return url.render_as_string(hide_password=False)


def chosen_settings(settings: Settings) -> dict[str, Any]:
    """The non-secret settings a run chose over its process's configuration: the ones that travel to its workers.

    A run started with the configuration (the flow, the CLI) sends none, and each worker follows
    its own machine's (its outbox, its SMTP relay). One given ``Settings(...)`` (tests, the
    benchmark) sends what differs. Secrets never travel, nor the database: ``RunRef.open``.
    """
    configured = get_settings()
    if settings is configured:
        return {}
    chosen = {name: getattr(settings, name) for name in Settings.model_fields
              if name not in SECRETS and name != "database_url" and getattr(settings, name) != getattr(configured, name)}
    if chosen.get("rate_limit_url"):
        chosen["rate_limit_url"] = without_url_password(chosen["rate_limit_url"])
    return chosen


def without_url_password(url: str) -> str:
    """A URL with its password left out (a limiter's password comes from each machine's own configuration)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = (f"{parts.username}@" if parts.username else "") + (parts.hostname or "") + \
        (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class RunRef:
    """What another process, on this machine or another, needs to take part in a run: picklable, without a secret
    (unless ``local``).

    It names the run (spec, id, clock) and carries the non-secret settings the run chose
    (``chosen_settings``). A worker reads its secrets and its database from its own configuration
    (``get_settings()``: its environment, its project's touchflow.toml); ``database``, the run's
    URL without its password, is used only by a worker whose configuration names no database (a
    pool on the flow's own machine). ``key_check`` lets a worker refuse to sign unsubscribe links
    with another key than the run's.

    A process the run's own process starts itself (its preparer, the pool of ``run_campaign``'s
    ``workers``) gets the run's settings whole instead (``local``): they go through a pipe between
    two processes of one user, never through Prefect or Dask, and such a process works on the
    run's database with the run's key even when the run was given settings that its environment
    does not hold (``run_campaign(..., settings=...)`` from a script).
    """

    database: str
    spec: CampaignSpec
    run_id: str
    now: datetime
    as_of: date
    chosen: dict[str, Any]
    key_check: str
    local_processes: int = 1  # processes of this machine sharing the run: without a shared limiter, each keeps 1/n
    settings: Settings | None = field(default=None, repr=False)  # the run's own, for a process it started (``local``)

    @classmethod
    def of(cls, run: Run) -> "RunRef":
        return cls(without_password(run.engine.url), run.spec, run.run_id, run.now, run.as_of,
                   chosen_settings(run.settings), key_check(run.run_id, run.key))

    @classmethod
    def local(cls, run: Run, processes: int = 1) -> "RunRef":
        """For processes this one starts itself: the run's settings whole, its database URL with its password."""
        url = run.engine.url.render_as_string(hide_password=False)
        return replace(cls.of(run), local_processes=processes,
                       settings=run.settings.model_copy(update={"database_url": url}))

    def open(self) -> Run:
        """This process's own ``Run`` of the same run: its database, its secrets, the run's choices, its channels.

        Raises ConfigError when this process's database does not hold the run as running, or when
        its signing key is not the run's (its links would not verify).
        """
        from touchflow.settings import sources

        if self.settings is not None:
            own, url = self.settings, self.settings.database_url
        else:
            own = get_settings()
            url = own.database_url if sources(own)["database_url"] != "default" else self.database
        engine = self._engine(url)
        settings = own.model_copy(update={**self.chosen, "database_url": url})
        key = signing_key(engine, configured_secret(settings))
        if key_check(self.run_id, key) != self.key_check:
            engine.dispose()
            raise ConfigError(f"{ledger_runs.owner()}: this worker signs unsubscribe links with another key than run "
                              f"{self.run_id} of {self.spec.name} (TOUCHFLOW_SECRET_KEY differs between the flow's "
                              "process and this worker); set the same TOUCHFLOW_SECRET_KEY for both, or leave it "
                              "unset on both (the key kept in the database then signs)")
        if not settings.rate_limit_url:
            from channels.ratelimit import share_locally

            share_locally(self.local_processes)
        return Run(engine=engine, spec=self.spec, run_id=self.run_id, now=self.now, as_of=self.as_of,
                   policy=self.spec.contact_policy(default_policy(settings)), settings=settings,
                   template_hash=template_hash(self.spec.template), key=key)

    def _engine(self, url: str) -> Engine:
        """An engine on ``url`` once it is known to hold this run, running; else ConfigError saying how to fix it."""
        from sqlalchemy.exc import SQLAlchemyError

        from crm.db import make_engine

        where = without_password(url)
        fix = (f"set TOUCHFLOW_DATABASE_URL in this worker's environment (or database_url in its touchflow.toml) "
               f"to the database of the flow that started the run ({self.database}, with its password)")
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
                and not Path(parsed.database).expanduser().is_file():
            raise ConfigError(f"{ledger_runs.owner()}: this worker's database {where} does not exist here; {fix}")
        engine = make_engine(url)
        try:
            live = {r["id"] for r in ledger_runs.live_runs(engine, self.spec.name)}
        except SQLAlchemyError as exc:
            engine.dispose()
            raise ConfigError(f"{ledger_runs.owner()}: this worker cannot read run {self.run_id} from its database "
                              f"{where} ({type(exc).__name__}: {str(exc).splitlines()[0]}); {fix}") from None
        if self.run_id not in live:
            engine.dispose()
            raise ConfigError(f"{ledger_runs.owner()}: run {self.run_id} of {self.spec.name} is not running in this "
                              f"worker's database {where} (another database, or the run has ended); {fix}")
        return engine

"""The campaign engine as plain functions: select → decide → render → claim → send → record.

Flows (``flows.campaign``) only orchestrate these; tests call them directly. A batch is a list of
customer ids (keyset-paged from the segment); every customer of a batch ends in the history as a
touch (claimed → sent / failed / unknown, or deferred) or as a decision not to contact, with its
reason.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.engine import Engine

from channels.base import Channel, Message
from channels.context import contexts_for
from channels.errors import ChannelError, DeliveryUnknown, PermanentError
from channels.registry import DEV_TRANSPORTS, build_channel, rate_of
from channels.render import Rendered, TemplateError, render, template_hash
from channels.sending import send_all
from channels.unsubscribe import make_token, signing_key, unsubscribe_url
from crm.db import BASE_TABLES, HISTORY_TABLES, refresh_statistics, write_tx
from crm.history import (
    Claimed,
    claim,
    due_deferred,
    load_candidates,
    mark_stale_in_flight,
    move,
    record_decisions,
    touch_row,
)
from crm.models import CampaignRun, ContactLock, Touch, TouchEvent, utcnow
from crm.policy import Decision, Policy, decide
from flows.calltasks import make_task_sink
from flows.spec import CampaignSpec
from segments import customer_ids, load_library, resolve
from touchflow.settings import Settings, get_settings

runs = CampaignRun.__table__
touches = Touch.__table__
locks = ContactLock.__table__
SAMPLE_SIZE = 3
SEND_CHUNK = 200  # touches marked sending per step: what a crash can leave unknown


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
    started: float = field(default_factory=time.monotonic)

    def clock(self) -> datetime:
        """The run's time: its start (``now``, which tests and the demo may set) plus the time elapsed."""
        return self.now + timedelta(seconds=time.monotonic() - self.started)
    counts: Counter = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    unsubscribe_urls: dict[tuple, str] = field(default_factory=dict)  # made at render, reused by the message

    @property
    def offer_values(self) -> dict[str, Any]:
        """The offer as templates see it: the template's defaults, the spec's values, and its key."""
        from channels.render import meta

        return {**meta(self.spec.template).get("offer", {}), **self.spec.offer_values, "key": self.spec.offer}


def default_policy(settings: Settings) -> Policy:
    """The policy from settings (campaign specs override it)."""
    return Policy(default_timezone=settings.default_timezone)


def start(engine: Engine, spec: CampaignSpec, *, dry_run: bool = False, now: datetime | None = None,
          as_of: date | None = None, settings: Settings | None = None) -> Run:
    """Open a run: record it, mark earlier in-flight touches unknown, prepare template and key."""
    settings = settings or get_settings()
    now = now or datetime.now(timezone.utc)
    run = Run(engine=engine, spec=spec, run_id=uuid.uuid4().hex, now=now, as_of=as_of or now.date(),
              policy=spec.contact_policy(default_policy(settings)), settings=settings, dry_run=dry_run,
              template_hash=template_hash(spec.template))
    with write_tx(engine) as conn:
        conn.execute(insert(runs).values(id=run.run_id, campaign=spec.name, dry_run=dry_run, started_at=now,
                                         status="running", summary={}))
    refresh_statistics(engine, BASE_TABLES + HISTORY_TABLES)
    if not dry_run:
        unknown, released = mark_stale_in_flight(engine, spec.name, run.run_id)
        run.counts["unknown_from_earlier_runs"] += len(unknown)
        run.counts["released_from_earlier_runs"] += len(released)
        run.key = signing_key(engine, settings.secret_key.get_secret_value() if settings.secret_key else None)
    return run


def segment_pages(run: Run, page_size: int = 5000):
    """The segment's customer ids, a page at a time (keyset paging: memory stays flat)."""
    library = load_library()
    rule = resolve(run.spec.rule if run.spec.rule is not None else run.spec.segment, library)
    yield from customer_ids(run.engine, rule, as_of=run.as_of, library=library, page_size=page_size)


def _dedupe_persons(decisions: list[Decision], seen: set[int]) -> None:
    for decision in decisions:
        if decision.action == "skip":
            continue
        if decision.person_id in seen:
            decision.action, decision.reason = "skip", "same_person"
            decision.detail = "this person is reached through another customer record"
        else:
            seen.add(decision.person_id)


def _unsubscribe(run: Run, decision: Decision) -> str | None:
    if decision.channel != "email" or not run.key:
        return None
    return unsubscribe_url(run.settings.public_url,
                           make_token(run.key, decision.customer_id, "email", decision.address or ""))


def _render(run: Run, decision: Decision, context: dict[str, Any], channel: str) -> Rendered:
    context = dict(context)
    context["unsubscribe_url"] = url = _unsubscribe(run, decision)
    if url:  # the List-Unsubscribe header carries the same link as the body
        run.unsubscribe_urls[(decision.customer_id, decision.channel, decision.address)] = url
    return render(run.spec.template, channel, context, sms_max_segments=run.settings.sms_max_segments,
                  sms_over_limit=run.settings.sms_over_limit)


def process_batch(run: Run, ids: list[int]) -> dict[str, int]:
    """Decide, render, claim, send and record one batch of customers; return this batch's counts.

    Several records of one person: within a batch the first keeps the touch; across batches (and
    across runs) the person's offer lock decides, so the others end as ``same_person`` decisions.
    """
    spec, before = run.spec, Counter(run.counts)
    run.unsubscribe_urls.clear()  # links of an earlier batch (a dry run sends nothing) are not needed
    with run.engine.connect() as conn:
        candidates = load_candidates(conn, ids)
    run.counts["selected"] += len(candidates)
    decisions = [decide(c, campaign=spec.name, channels=list(spec.channels), purpose=spec.purpose, now=run.now,
                        policy=run.policy, holdout_percent=spec.holdout_percent,
                        use_preferred=spec.use_preferred_channel) for c in candidates]
    _dedupe_persons(decisions, set())
    active = [d for d in decisions if d.action != "skip"]
    contexts = contexts_for(run.engine, [d.customer_id for d in active], offer=run.offer_values, as_of=run.as_of,
                            company=run.settings.company_name, locale=run.settings.locale) if active else {}
    rows_go, go, skipped, rendered_by_customer = [], [], [], {}
    for decision in decisions:
        if decision.action != "skip":
            try:
                rendered = _render(run, decision, contexts[decision.customer_id], decision.channel)
            except TemplateError as exc:
                decision.action, decision.reason, decision.detail = "skip", "render_failed", str(exc)[:2000]
        if decision.action == "skip":
            skipped.append(touch_row(decision, run_id=run.run_id, campaign=spec.name, offer=spec.offer,
                                     purpose=spec.purpose, status="skipped", now=run.now))
            run.counts[f"skipped:{decision.reason}"] += 1
            continue
        rendered_by_customer[decision.customer_id] = rendered
        go.append(decision)
        rows_go.append(touch_row(decision, run_id=run.run_id, campaign=spec.name, offer=spec.offer,
                                 purpose=spec.purpose, status="deferred" if decision.action == "defer" else "claimed",
                                 now=run.now, template=spec.template, template_hash=run.template_hash,
                                 body=rendered.text, keep_body=spec.keep_body,
                                 claim_key=f"{run.run_id}:{decision.customer_id}:{decision.channel}"))
        if run.dry_run and len(run.samples) < SAMPLE_SIZE:
            run.samples.append({"customer_id": decision.customer_id, "channel": decision.channel,
                                "address": decision.address, "subject": rendered.subject, "text": rendered.text})
    if run.dry_run:
        for decision in go:
            run.counts[f"{'deferred' if decision.action == 'defer' else 'would_send'}:{decision.channel}"] += 1
        return dict(run.counts - before)
    with write_tx(run.engine) as conn:
        record_decisions(conn, skipped)
    claimed, refused = claim(run.engine, go, rows_go, offer=spec.offer, purpose=spec.purpose, policy=run.policy,
                             run_id=run.run_id, now=run.now)
    if refused:
        with write_tx(run.engine) as conn:
            record_decisions(conn, refused)
        for row in refused:
            run.counts[f"skipped:{row['reason']}"] += 1
    ready = [c for c in claimed if c.decision.action == "touch"]
    if spec.duplicate_in:
        ready += _duplicates(run, ready, {c.customer_id: c for c in candidates}, contexts, rendered_by_customer)
    for c in claimed:
        if c.decision.action == "defer":
            run.counts[f"deferred:{c.decision.channel}"] += 1
    if ready:
        send_claimed(run, ready, {c.decision.customer_id: contexts[c.decision.customer_id] for c in ready},
                     rendered_by_customer)
    refresh_statistics(run.engine, HISTORY_TABLES)  # the run's own rows soon outgrow what the planner knows
    return dict(run.counts - before)


def _duplicates(run: Run, primaries: list[Claimed], candidates: dict, contexts: dict, rendered: dict) -> list[Claimed]:
    """Copies of claimed touches in the spec's ``duplicate_in`` channel (same person, same offer, no new lock)."""
    from crm.policy import options

    channel = run.spec.duplicate_in
    copies, rows = [], []
    for primary in primaries:
        if primary.decision.channel == channel:
            continue
        usable, _ = options(candidates[primary.decision.customer_id], [channel], run.spec.purpose)
        if not usable:
            continue
        _, point, address, consent = usable[0]
        decision = Decision(customer_id=primary.decision.customer_id, person_id=primary.decision.person_id,
                            action="touch", channel=channel, contact_point_id=point, address=address,
                            consent_id=consent, detail=f"duplicate of touch {primary.touch_id}")
        try:
            text = _render(run, decision, contexts[decision.customer_id], channel)
        except TemplateError:
            continue
        rendered[(decision.customer_id, channel)] = text
        rows.append((decision, touch_row(decision, run_id=run.run_id, campaign=run.spec.name, offer=run.spec.offer,
                                         purpose=run.spec.purpose, status="claimed", now=run.now,
                                         template=run.spec.template, template_hash=run.template_hash, body=text.text,
                                         keep_body=run.spec.keep_body,
                                         claim_key=f"{run.run_id}:{decision.customer_id}:{channel}")))
    with write_tx(run.engine) as conn:
        for decision, row in rows:
            touch_id = conn.execute(insert(touches).values(**row).returning(touches.c.id)).scalar_one()
            conn.execute(insert(TouchEvent.__table__).values(touch_id=touch_id, status="claimed", at=run.now,
                                                             detail=row["detail"]))
            copies.append(Claimed(touch_id, decision))
    run.counts[f"duplicated:{channel}"] += len(copies)
    return copies


def _rendered_for(rendered: dict, decision: Decision) -> Rendered:
    return rendered.get((decision.customer_id, decision.channel)) or rendered[decision.customer_id]


def _channel(run: Run, name: str) -> Channel:
    if name not in run.channels:
        sink = (make_task_sink(run.engine, campaign=run.spec.name, offer=run.spec.offer, as_of=run.as_of)
                if name == "call" else None)
        run.channels[name] = build_channel(name, run.settings, task_sink=sink)
    return run.channels[name]


def _message(run: Run, claimed: Claimed, rendered: Rendered) -> Message:
    d = claimed.decision
    return Message(channel=d.channel, to=d.address or "", subject=rendered.subject, text=rendered.text,
                   html=rendered.html, from_name=run.settings.company_name, reference=f"touch:{claimed.touch_id}",
                   unsubscribe_url=run.unsubscribe_urls.pop((d.customer_id, d.channel, d.address), None)
                   or _unsubscribe(run, d),
                   metadata={"touch_id": claimed.touch_id, "customer_id": d.customer_id, "person_id": d.person_id})


def send_claimed(run: Run, claimed: list[Claimed], contexts: dict[int, dict], rendered: dict[int, Rendered]) -> None:
    """Send claimed touches per channel, record each outcome, fall back on permanent failures.

    The outcomes of one chunk are committed together with the ``sending`` mark of the next (one
    transaction instead of two): each outcome is still recorded after its send, and each chunk is
    still marked before it is handed to the provider.
    """
    by_channel: dict[str, list[Claimed]] = {}
    for item in claimed:
        by_channel.setdefault(item.decision.channel, []).append(item)
    for name, all_items in by_channel.items():
        channel = _channel(run, name)
        outcomes: list[dict[str, Any]] = []
        try:
            for start_at in range(0, len(all_items), SEND_CHUNK):
                outcomes = _send_chunk(run, channel, name, all_items[start_at:start_at + SEND_CHUNK], contexts,
                                       rendered, outcomes)
        finally:
            move(run.engine, outcomes, at=run.clock())


def _send_chunk(run: Run, channel: Channel, name: str, items: list[Claimed], contexts: dict[int, dict],
                rendered: dict[int, Rendered], earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark a chunk ``sending`` (committed with the ``earlier`` outcomes), hand it to the provider.

    Returns the chunk's outcomes, still to be recorded (after a permanent failure with fallbacks,
    they are recorded here, before the fallback touches are sent).
    """
    move(run.engine, earlier + [{"touch_id": item.touch_id, "status": "sending"} for item in items], at=run.clock())
    messages = [_message(run, item, _rendered_for(rendered, item.decision)) for item in items]
    if run.spec.document:
        _attach_documents(run, items, messages)
    if run.runner is None:
        run.runner = asyncio.Runner()
    results = run.runner.run(_send(channel, messages, run, name))
    moves, fallbacks = [], []
    for item, result in zip(items, results):
        if isinstance(result, ChannelError):
            moves.append(_failure_move(run, item, result))
            if isinstance(result, PermanentError) and run.spec.fallback and item.decision.fallbacks:
                fallbacks.append((item, result))
        else:
            moves.append({"touch_id": item.touch_id, "status": "sent", "provider_message_id": result.provider_id,
                          "detail": (f"refused: {result.refused}" if result.refused else None)})
            run.counts[f"sent:{name}"] += 1
    if fallbacks:
        _fall_back(run, fallbacks, moves, contexts)
        return []
    return moves


def _attach_documents(run: Run, items: list[Claimed], messages: list[Message]) -> None:
    """Generate the spec's document for each touch: attached to emails, referenced by call tasks, recorded."""
    from documents.proposals import DocumentError, record_document, render_document

    folder = Path(run.settings.outbox_dir) / "documents"
    rows = run.spec.offer_values.get("items")
    written = []
    for item, message in zip(items, messages):
        try:
            path, digest, summary = render_document(run.engine, run.spec.document, item.decision.customer_id,
                                                    rows=rows, out_dir=folder, company=run.settings.company_name,
                                                    today=run.as_of)
        except DocumentError as exc:
            run.counts["document_failed"] += 1
            message.metadata["document_error"] = str(exc)
            continue
        written.append((item, path, digest, summary))
        message.metadata["document"] = str(path)
        if message.channel == "email":
            message.attachments.append((path.name, path.read_bytes(),
                                        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"))
    with write_tx(run.engine) as conn:
        for item, path, digest, summary in written:
            record_document(conn, run.spec.document, item.decision.customer_id, path, digest, summary,
                            campaign=run.spec.name, run_id=run.run_id, offer=run.spec.offer)
    run.counts["documents"] += len(written)


async def _send(channel: Channel, messages: list[Message], run: Run, name: str):
    key = name
    if name in ("sms", "voice") and run.settings.twilio_from_number:
        key = f"{name}:{run.settings.twilio_from_number}"
    return await send_all(channel, messages, concurrency=run.settings.smtp_pool_size if name == "email" else 4,
                          rate=rate_of(name, run.settings) if channel.transport not in DEV_TRANSPORTS else 0,
                          attempts=run.settings.send_attempts, limiter_key=key)


def close_channels(run: Run) -> None:
    """Close every channel the run opened, and its event loop."""
    if run.runner is None:
        return

    async def close_all() -> None:
        for channel in run.channels.values():
            await channel.close()

    try:
        run.runner.run(close_all())
    finally:
        run.runner.close()
        run.runner = None


def _failure_move(run: Run, item: Claimed, error: ChannelError) -> dict[str, Any]:
    from crm.history import apply_address_action

    status = "unknown" if isinstance(error, DeliveryUnknown) else "failed"
    run.counts[f"{status}:{item.decision.channel}"] += 1
    if isinstance(error, PermanentError) and error.action and item.decision.contact_point_id:
        apply_address_action(run.engine, item.decision.contact_point_id, item.decision.customer_id,
                             item.decision.channel, error.action, error.code, error.provider_message)
    return {"touch_id": item.touch_id, "status": status, "error_code": error.code,
            "error_message": f"{type(error).__name__}: {error}"[:2000]}


def _fall_back(run: Run, failed: list[tuple[Claimed, ChannelError]], moves: list[dict], contexts: dict) -> None:
    """Move each failed touch's claim to a new touch on the next channel of the plan, then send those."""
    retry: list[Claimed] = []
    rendered: dict[int, Rendered] = {}
    for item, error in failed:
        channel, point, address, consent = item.decision.fallbacks[0]
        decision = Decision(customer_id=item.decision.customer_id, person_id=item.decision.person_id, action="touch",
                            channel=channel, contact_point_id=point, address=address, consent_id=consent,
                            fallbacks=item.decision.fallbacks[1:],
                            detail=f"fallback after {item.decision.channel} failed: {error.code}")
        try:
            rendered[decision.customer_id] = _render(run, decision, contexts[decision.customer_id], channel)
        except TemplateError:
            continue
        row = touch_row(decision, run_id=run.run_id, campaign=run.spec.name, offer=run.spec.offer,
                        purpose=run.spec.purpose, status="claimed", now=utcnow(), template=run.spec.template,
                        template_hash=run.template_hash, body=rendered[decision.customer_id].text,
                        keep_body=run.spec.keep_body,
                        claim_key=f"{run.run_id}:{decision.customer_id}:{channel}")
        with write_tx(run.engine) as conn:
            touch_id = conn.execute(insert(touches).values(**row).returning(touches.c.id)).scalar_one()
            conn.execute(update(locks).where(locks.c.touch_id == item.touch_id).values(touch_id=touch_id))
        retry.append(Claimed(touch_id, decision))
        run.counts[f"fallback:{item.decision.channel}->{channel}"] += 1
    move(run.engine, moves, at=run.clock())
    if retry:
        send_claimed(run, retry, contexts, rendered)


def process_deferred(run: Run) -> int:
    """Send the campaign's deferred touches whose quiet hours are over (consent re-checked first)."""
    due = due_deferred(run.engine, run.spec.name, run.now)
    if not due or run.dry_run:
        return 0
    with run.engine.connect() as conn:
        candidates = {c.customer_id: c for c in load_candidates(conn, [t["customer_id"] for t in due])}
    ready, drop = [], []
    for touch in due:
        candidate = candidates.get(touch["customer_id"])
        decision = decide(candidate, campaign=run.spec.name, channels=[touch["channel"]], purpose=run.spec.purpose,
                          now=run.now, policy=run.policy, use_preferred=False) if candidate else None
        if decision is None or decision.action != "touch":
            drop.append({"touch_id": touch["id"], "status": "skipped",
                         "reason": decision.reason if decision else "unreachable",
                         "detail": "re-checked when the quiet hours ended"})
            continue
        ready.append(Claimed(touch["id"], decision))
    move(run.engine, drop + [{"touch_id": c.touch_id, "status": "claimed", "detail": "quiet hours over"}
                             for c in ready])
    if ready:
        contexts = contexts_for(run.engine, [c.decision.customer_id for c in ready], offer=run.offer_values,
                                as_of=run.as_of, company=run.settings.company_name, locale=run.settings.locale)
        rendered = {c.decision.customer_id: _render(run, c.decision, contexts[c.decision.customer_id],
                                                    c.decision.channel) for c in ready}
        send_claimed(run, ready, contexts, rendered)
    return len(ready)


def finish(run: Run, status: str = "finished") -> dict[str, Any]:
    """Close the run and return its summary (per channel, per decision reason, samples for dry runs)."""
    close_channels(run)
    summary = summarise(run)
    with write_tx(run.engine) as conn:
        conn.execute(update(runs).where(runs.c.id == run.run_id).values(finished_at=utcnow(), status=status,
                                                                         summary=summary))
    if not run.dry_run:
        from crm.audit import seal

        seal(run.engine)
    return summary


def summarise(run: Run) -> dict[str, Any]:
    """Counts grouped for reports."""
    channels: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    other: dict[str, int] = {}
    for key, value in sorted(run.counts.items()):
        if key.startswith("skipped:"):
            reasons[key.split(":", 1)[1]] = value
        elif ":" in key and not key.startswith("fallback:"):
            outcome, channel = key.split(":", 1)
            channels.setdefault(channel, {})[outcome] = value
        else:
            other[key] = value
    return {"campaign": run.spec.name, "run_id": run.run_id, "dry_run": run.dry_run, "offer": run.spec.offer,
            "purpose": run.spec.purpose, "selected": run.counts.get("selected", 0), "channels": channels,
            "not_contacted": reasons, "other": other, "samples": run.samples}


def run_campaign(engine: Engine, spec: CampaignSpec, *, dry_run: bool = False, now: datetime | None = None,
                 as_of: date | None = None, page_size: int = 5000, settings: Settings | None = None,
                 workers: int = 1) -> dict[str, Any]:
    """Run a campaign without Prefect (the flow does the same with one task per batch).

    ``workers`` > 1 shares the batches among that many processes (the database keeps them from
    contacting anyone twice, as it does for any concurrent runs).
    """
    run = start(engine, spec, dry_run=dry_run, now=now, as_of=as_of, settings=settings)
    try:
        process_deferred(run)
        if workers > 1 and not dry_run:
            run_in_workers(run, page_size, workers)
        else:
            for page in segment_pages(run, page_size):
                process_batch(run, page)
    except BaseException:
        finish(run, "failed")
        raise
    return finish(run)


@dataclass(frozen=True)
class RunRef:
    """What another process needs to take part in a run (picklable: no engine, no connections)."""

    url: str
    spec: CampaignSpec
    run_id: str
    now: datetime
    as_of: date
    settings: Settings

    @classmethod
    def of(cls, run: Run) -> "RunRef":
        return cls(run.engine.url.render_as_string(hide_password=False), run.spec, run.run_id, run.now, run.as_of,
                   run.settings)

    def open(self) -> Run:
        """This process's own ``Run`` of the same run: its engine, channels and signing key."""
        from crm.db import make_engine

        engine = make_engine(self.url)
        settings = self.settings
        return Run(engine=engine, spec=self.spec, run_id=self.run_id, now=self.now, as_of=self.as_of,
                   policy=self.spec.contact_policy(default_policy(settings)), settings=settings,
                   template_hash=template_hash(self.spec.template),
                   key=signing_key(engine, settings.secret_key.get_secret_value() if settings.secret_key else None))


def release(run: Run) -> None:
    """Close a worker's channels and database connections."""
    try:
        close_channels(run)
    finally:
        run.engine.dispose()


_WORKER_RUNS: dict[str, tuple[Run, Any]] = {}


def worker_run(ref: RunRef) -> Run:
    """The ``Run`` this process keeps for ``ref`` across batches (connection pools stay open).

    Made on the first batch; released when the process exits, or when it gets a batch of another run.
    """
    kept = _WORKER_RUNS.get(ref.run_id)
    if kept is None:
        import multiprocessing.util

        for other in list(_WORKER_RUNS):
            _WORKER_RUNS.pop(other)[1]()  # a finalizer runs once: release the older run now
        run = ref.open()
        kept = _WORKER_RUNS[ref.run_id] = (run, multiprocessing.util.Finalize(None, release, args=(run,),
                                                                              exitpriority=10))
    return kept[0]


def pooled_batch(ref: RunRef, ids: list[int]) -> dict[str, int]:
    """One batch in a pool process, with the run that process keeps (``worker_run``); its counts."""
    return process_batch(worker_run(ref), ids)


def feed_pool(run: Run, page_size: int, workers: int, submit: Callable[[list[int]], Any]) -> None:
    """Hand the segment's pages to a pool (``submit(page)`` returns a future) and add up their counts.

    The segment is paged once, here; at most two batches per process wait, so memory stays flat.
    Used by the direct pool (``run_in_workers``) and by the Prefect flow's process pool.
    """
    pending: deque = deque()
    try:
        for page in segment_pages(run, page_size):
            if len(pending) >= 2 * workers:
                run.counts.update(pending.popleft().result())
            pending.append(submit(page))
        while pending:
            run.counts.update(pending.popleft().result())
    finally:
        for future in pending:  # a batch failed: let the others end before the run is closed
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the first failure is the one raised
                pass


def run_in_workers(run: Run, page_size: int, workers: int) -> None:
    """Process the segment's batches in ``workers`` processes and add up their counts."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ref = RunRef.of(run)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        feed_pool(run, page_size, workers, lambda page: pool.submit(pooled_batch, ref, page))


"""Delivering claimed touches: mark a chunk ``sending``, hand it to the channel, record each outcome.

The crash rules: a touch is committed ``sending`` before it is handed to the provider, and only
the touches whose move to ``sending`` actually happened are handed over (a run that was taken for
dead finds its touches already settled and sends none of them); each outcome is recorded after
its send. A chunk is what a crash can leave ``unknown``, so its size follows the channel's pace:
about half a second of sending (``CHUNK_SECONDS``). A permanent failure may fall back to the next
channel of the plan; a channel that stops answering (``channels.sending.Breaker``) fails the rest
of its touches without trying them, and a fatal channel error (a full disk) ends the run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from channels.base import Channel, Message
from channels.errors import ChannelError, ChannelFatal, DeliveryUnknown, PermanentError
from channels.ratelimit import limiter_for
from channels.registry import build_channel, meter_of
from channels.render import Rendered, TemplateError
from channels.sending import Breaker, send_all
from crm.db import write_tx
from crm.ledger import calls, verdicts
from crm.ledger.claims import Claimed, add_copies, transfer
from crm.ledger.moves import move
from crm.ledger.policy import Decision, options
from crm.ledger.touches import touch_row
from crm.models import utcnow
from flows.run import Run
from touchflow.errors import RunStopped

CHUNK_SECONDS = 0.5            # what one chunk takes to send: the most a crash can leave unknown
CHUNK_FIRST, CHUNK_MIN, CHUNK_MAX = 8, 4, 500


def chunk_size(sent: int, seconds: float, current: int) -> int:
    """The next chunk's size from the pace of the last one (about ``CHUNK_SECONDS`` of sending, at most 8× more)."""
    if sent <= 0 or seconds <= 0:
        return current
    return max(CHUNK_MIN, min(CHUNK_MAX, 8 * current, int(sent / seconds * CHUNK_SECONDS)))


def channel_for(run: Run, name: str) -> Channel:
    """The run's channel ``name`` (built once; the call channel creates call tasks through the ledger)."""
    if name not in run.channels:
        sink = _task_sink(run) if name == "call" else None
        run.channels[name] = build_channel(name, run.settings, task_sink=sink)
    return run.channels[name]


def _task_sink(run: Run):
    async def sink(message: Message) -> str:
        meta = message.metadata
        task_id = await asyncio.to_thread(
            calls.create_task, run.engine, touch_id=meta.get("touch_id"), customer_id=meta["customer_id"],
            person_id=meta["person_id"], phone=message.to, script=message.text, campaign=run.spec.name,
            offer=run.spec.offer, due_on=run.as_of, document_path=meta.get("document"))
        return f"task-{task_id}"
    return sink


def _message(run: Run, claimed: Claimed, rendered: Rendered) -> Message:
    d = claimed.decision
    return Message(channel=d.channel, to=d.address or "", subject=rendered.subject, text=rendered.text,
                   html=rendered.html, from_name=run.settings.company_name, reference=f"touch:{claimed.touch_id}",
                   unsubscribe_url=rendered.unsubscribe_url,
                   metadata={"touch_id": claimed.touch_id, "customer_id": d.customer_id, "person_id": d.person_id})


def _rendered_for(rendered: dict, decision: Decision) -> Rendered:
    return rendered.get((decision.customer_id, decision.channel)) or rendered[decision.customer_id]


def send_claimed(run: Run, claimed: list[Claimed], contexts: dict[int, dict], rendered: dict) -> None:
    """Send claimed touches per channel, record each outcome, fall back on permanent failures.

    The outcomes of one chunk are committed together with the ``sending`` mark of the next (one
    transaction instead of two): each outcome is still recorded after its send, and each chunk is
    still marked before it is handed to the provider.
    """
    by_channel: dict[str, list[Claimed]] = {}
    for item in claimed:
        by_channel.setdefault(item.decision.channel, []).append(item)
    for name, items in by_channel.items():
        channel = channel_for(run, name)
        outcomes: list[dict[str, Any]] = []
        size, position = CHUNK_FIRST, 0
        try:
            while position < len(items):
                chunk = items[position:position + size]
                position += len(chunk)
                began = time.monotonic()
                outcomes = _send_chunk(run, channel, name, chunk, contexts, rendered, outcomes)
                size = chunk_size(len(chunk), time.monotonic() - began, size)
        finally:
            move(run.engine, outcomes, at=run.clock())


def _send_chunk(run: Run, channel: Channel, name: str, items: list[Claimed], contexts: dict[int, dict],
                rendered: dict, earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark a chunk ``sending`` (committed with the ``earlier`` outcomes), hand over what moved.

    Returns the chunk's outcomes, still to be recorded (after a permanent failure with fallbacks,
    they are recorded here, before the fallback touches are sent).
    """
    run.check_lease()
    moved = move(run.engine, earlier + [{"touch_id": item.touch_id, "status": "sending"} for item in items],
                 at=run.clock())
    lost = [item for item in items if item.touch_id not in moved]
    if lost:  # settled by another run meanwhile: not ours to send any more
        run.counts[f"lost_claim:{name}"] += len(lost)
        items = [item for item in items if item.touch_id in moved]
    messages = [_message(run, item, _rendered_for(rendered, item.decision)) for item in items]
    if run.spec.document:
        _attach_documents(run, items, messages)
    if run.runner is None:
        run.runner = asyncio.Runner()
    results = run.runner.run(_send(channel, messages, run, name))
    moves, fallbacks, fatal = [], [], None
    for item, result in zip(items, results):
        if isinstance(result, ChannelError):
            moves.append(_failure_move(run, item, result))
            fatal = fatal or (result if isinstance(result, ChannelFatal) else None)
            if isinstance(result, PermanentError) and run.spec.fallback and item.decision.fallbacks:
                fallbacks.append((item, result))
        else:
            moves.append({"touch_id": item.touch_id, "status": "sent", "provider_message_id": result.provider_id,
                          "detail": (f"refused: {result.refused}" if result.refused else None)})
            run.counts[f"sent:{name}"] += 1
    if fatal is not None:
        move(run.engine, moves, at=run.clock())
        raise RunStopped(f"the {name} channel cannot go on: {fatal}; the run stopped, and the touches it had not "
                         "handed over are recorded as failed (the next run contacts those people)")
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
                                                    today=run.as_of, valid_until=run.offer_valid_until,
                                                    settings=run.settings)
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
                            campaign=run.spec.name, run_id=run.run_id, offer=run.spec.offer,
                            offer_valid_until=run.offer_valid_until)


async def _send(channel: Channel, messages: list[Message], run: Run, name: str):
    """Send through ``channel`` within its provider's limits, shared with every process using the same limiter."""
    breaker = run.breakers.setdefault(name, Breaker(run.settings.channel_failure_limit))
    return await send_all(channel, messages, concurrency=run.settings.smtp_pool_size if name == "email" else 4,
                          meter=meter_of(name, channel, run.settings), limiter=limiter_for(run.settings.rate_limit_url),
                          attempts=run.settings.send_attempts, breaker=breaker)


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
    status = "unknown" if isinstance(error, DeliveryUnknown) else "failed"
    run.counts[f"{status}:{item.decision.channel}"] += 1
    if isinstance(error, PermanentError) and error.action and item.decision.contact_point_id:
        verdicts.apply(run.engine, item.decision.contact_point_id, item.decision.channel, error.action, error.code,
                       error.provider_message)
    return {"touch_id": item.touch_id, "status": status, "error_code": error.code,
            "error_message": f"{type(error).__name__}: {error}"[:2000]}


def _new_touch(run: Run, decision: Decision, rendered: Rendered) -> dict[str, Any]:
    return touch_row(decision, run_id=run.run_id, campaign=run.spec.name, offer=run.spec.offer,
                     purpose=run.spec.purpose, status="claimed", now=utcnow(), template=run.spec.template,
                     template_hash=run.template_hash, body=rendered.text, keep_body=run.spec.keep_body,
                     claim_key=f"{run.run_id}:{decision.customer_id}:{decision.channel}",
                     offer_valid_until=run.offer_valid_until)


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
            rendered[decision.customer_id] = run.render(decision, contexts[decision.customer_id], channel)
        except TemplateError:
            continue
        touch_id = transfer(run.engine, item.touch_id, _new_touch(run, decision, rendered[decision.customer_id]))
        retry.append(Claimed(touch_id, decision))
        run.counts[f"fallback:{item.decision.channel}->{channel}"] += 1
    move(run.engine, moves, at=run.clock())
    if retry:
        send_claimed(run, retry, contexts, rendered)


def add_duplicates(run: Run, primaries: list[Claimed], candidates: dict, contexts: dict,
                   rendered: dict) -> list[Claimed]:
    """Copies of claimed touches in the spec's ``duplicate_in`` channel (same person, same offer, no new lock)."""
    channel = run.spec.duplicate_in
    decisions, rows = [], []
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
            text = run.render(decision, contexts[decision.customer_id], channel)
        except TemplateError:
            continue
        rendered[(decision.customer_id, channel)] = text
        decisions.append(decision)
        rows.append(_new_touch(run, decision, text) | {"created_at": run.now, "updated_at": run.now})
    copies = [Claimed(touch_id, decision) for touch_id, decision in zip(add_copies(run.engine, rows), decisions)]
    run.counts[f"duplicated:{channel}"] += len(copies)
    return copies

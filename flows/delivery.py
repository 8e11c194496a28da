"""Delivering claimed touches: mark them ``sending`` a chunk ahead, hand them to the channel, record each outcome.

The crash rules: a touch is committed ``sending`` before it is handed to the provider, and only
the touches whose move to ``sending`` actually happened are handed over (a run that was taken for
dead finds its touches already settled and sends none of them); each outcome is recorded after
its send. The touches of a channel flow (``Stream``): the next chunk is marked while the current
one is being sent, and no chunk waits for its slowest message. What a crash can leave ``unknown``
is about two chunks, so a chunk's size follows the channel's pace: about half a second of sending
(``CHUNK_SECONDS``). A permanent failure may fall back to the next
channel of the plan; a channel that stops answering (``channels.sending.Breaker``) fails the rest
of its touches without trying them, and a fatal channel error (a full disk) ends the run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from channels.base import Channel, Message
from channels.errors import ChannelError, ChannelFatal, DeliveryUnknown, PermanentError
from channels.inbound.bounces import verp_for
from channels.ratelimit import limiter_for
from channels.registry import build_channel, meter_of
from channels.render import Rendered, TemplateError
from channels.sending import Breaker, send_stream
from channels.tracking import Tracker, tracker_for
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
NETWORK_BOUND = 0.005          # a message keeps a connection longer than this: database and templates go to a thread


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


def _tracker(run: Run) -> Tracker | None:
    """The run's email tracker (opens, clicks), or None when its spec switches both off (cached per key and switches)."""
    opens, clicks = run.spec.tracks("opens"), run.spec.tracks("clicks")
    if not (opens or clicks) or not run.key:
        return None
    return tracker_for(run.key, run.settings.public_url, opens=opens, clicks=clicks)


def _message(run: Run, claimed: Claimed, rendered: Rendered, tracker: Tracker | None = None) -> Message:
    """The message of a claimed touch; an email's HTML tracked now, when its touch id is known (``channels.tracking``)."""
    d = claimed.decision
    html = rendered.html
    if tracker is not None and html and d.channel == "email":
        html = tracker.rewrite(html, claimed.touch_id, rendered.unsubscribe_url)
    return Message(channel=d.channel, to=d.address or "", subject=rendered.subject, text=rendered.text,
                   html=html, from_name=run.settings.company_name, reference=f"touch:{claimed.touch_id}",
                   unsubscribe_url=rendered.unsubscribe_url,
                   envelope_from=_return_address(run, d.channel, claimed.touch_id),
                   metadata={"touch_id": claimed.touch_id, "customer_id": d.customer_id, "person_id": d.person_id})


def _return_address(run: Run, channel: str, touch_id: int) -> str | None:
    """An email's envelope sender: the touch's own signed return address (VERP), where its bounces come back
    (``channels.inbound.bounces``); None (the From address) with ``verp`` off or no signing key (a dry run)."""
    if channel != "email" or not run.key or not run.settings.verp:
        return None
    settings = run.settings
    return verp_for(run.key, settings.bounce_local, settings.bounce_domain, settings.mail_from).address(touch_id)


def build_ahead(run: Run, claimed: list[Claimed], rendered: dict) -> dict[int, Message]:
    """The messages of claimed touches built where they were claimed (``flows.preparer``), so that the sending
    process only marks and sends: tracked, addressed, an email's bytes built. The bytes are what goes out, so an
    email built here carries no text and HTML beside them (half as much to hand over)."""
    tracker = _tracker(run)
    built = {}
    for item in claimed:
        message = _message(run, item, _rendered_for(rendered, item.decision), tracker)
        prebuild = getattr(channel_for(run, message.channel), "prebuild", None) if message.channel == "email" else None
        if prebuild is not None:
            prebuild(message)
            if message.prebuilt is not None:
                message.text, message.html = "", None
        built[item.touch_id] = message
    return built


def _rendered_for(rendered: dict, decision: Decision) -> Rendered:
    return rendered.get((decision.customer_id, decision.channel)) or rendered[decision.customer_id]


SWITCH_SECONDS = 0.0005  # how long a thread holds the interpreter while another waits for it, during a sending


@contextmanager
def responsive_loop() -> Iterator[None]:
    """While the block runs, a thread that wants the interpreter lock gets it after 0.5 ms instead of Python's 5.

    The sending loop gives the lock up at each socket call and must win it back; with the default
    interval a thread marking or preparing beside it keeps it waiting up to 5 ms each time, and a relay
    far away then sees the loop's messages late (1.28× the bare loop with SMTP pipelining at 64
    connections, 1.46× at 0.5 ms; ``benchmarks/README.md``).
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_SECONDS))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def send_claimed(run: Run, claimed: list[Claimed], contexts: dict[int, dict], rendered: dict) -> None:
    """``deliver`` on the run's event loop (for callers outside it)."""
    if run.runner is None:
        run.runner = asyncio.Runner()
    run.runner.run(deliver(run, claimed, contexts, rendered))


async def deliver(run: Run, claimed: list[Claimed], contexts: dict[int, dict], rendered: dict) -> None:
    """Send claimed touches per channel, record each outcome, fall back on permanent failures."""
    sending = Sending(run)
    sending.feed(claimed, contexts, rendered)
    await sending.finish()


class Sending:
    """The streams of a batch (or of a whole run, ``flows.pipeline``), one per channel, fed slice by slice as
    touches are claimed. What a touch needs is dropped once it is used (its message once built, its context once
    it can no longer fall back): a sending that lives for a whole run keeps only its backlog."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.streams: dict[str, Stream] = {}
        self.flows: list[asyncio.Future] = []
        self.contexts: dict[int, dict] = {}
        self.rendered: dict[Any, Rendered] = {}
        self.built: dict[int, Message] = {}  # messages built ahead (``build_ahead``), by touch id

    @property
    def waits_on_network(self) -> bool:
        """Whether a stream's messages keep their connections long enough for other work to overlap them."""
        return any(stream.waits_on_network for stream in self.streams.values())

    async def measured(self, longest: float = 1.0) -> None:
        """Send until every stream has answered enough to tell whether it waits on the network (at most ``longest``)."""
        until = time.monotonic() + longest
        while time.monotonic() < until and not self.broken and any(
                not stream.measured and not stream.ended for stream in self.streams.values()):
            await asyncio.sleep(0.002)

    @property
    def broken(self) -> bool:
        """A stream has stopped with an error (a lost lease, a database error): no point feeding more."""
        return any(flow.done() and flow.exception() is not None for flow in self.flows)

    @property
    def backlog(self) -> int:
        """Claimed touches not yet answered: what the streams have to send before they run dry."""
        return sum(stream.added - stream.answered for stream in self.streams.values())

    async def backlog_below(self, size: int) -> None:
        """Wait until fewer than ``size`` claimed touches are left to send (or a stream broke or ended)."""
        while self.backlog >= size and not self.broken and not all(s.ended for s in self.streams.values()):
            await asyncio.sleep(0.01)

    def feed(self, claimed: list[Claimed], contexts: dict[int, dict], rendered: dict,
             built: dict[int, Message] | None = None) -> None:
        """Hand more claimed touches, their messages rendered or built, to their channels' streams (started on first
        use); a context is kept only for a touch that may fall back to another channel (``_fall_back`` renders it
        again)."""
        if self.run.spec.fallback:
            self.contexts.update((c.decision.customer_id, contexts[c.decision.customer_id]) for c in claimed
                                 if c.decision.fallbacks and c.decision.customer_id in contexts)
        self.rendered.update(rendered)
        self.built.update(built or {})
        by_channel: dict[str, list[Claimed]] = {}
        for item in claimed:
            by_channel.setdefault(item.decision.channel, []).append(item)
        for name, items in by_channel.items():
            if name not in self.streams:
                channel = channel_for(self.run, name)
                self.streams[name] = Stream(self.run, channel, name, self.rendered, concurrency(self.run, channel)[0],
                                            self.contexts, self.built)
                self.flows.append(asyncio.ensure_future(self.streams[name].flow()))
            self.streams[name].add(items)

    async def finish(self) -> None:
        """No more touches: let every stream end, record what is left, then stop on a fatal error or fall back."""
        for stream in self.streams.values():
            stream.close()
        ended = await asyncio.gather(*self.flows, return_exceptions=True)
        for stream in self.streams.values():
            await asyncio.to_thread(move, self.run.engine, stream.take_outcomes(), at=self.run.clock())
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
        for name, stream in self.streams.items():
            if stream.fatal is not None:
                raise RunStopped(f"the {name} channel cannot go on: {stream.fatal}; the run stopped, and the touches "
                                 "it had not handed over are recorded as failed (the next run contacts those people)")
        failed = [entry for stream in self.streams.values() for entry in stream.fallbacks]
        if failed:
            retry, again, counts = await asyncio.to_thread(_fall_back, self.run, failed, self.contexts)
            self.run.counts.update(counts)
            if retry:
                await deliver(self.run, retry, self.contexts, again)


class Stream:
    """One channel's claimed touches flowing to the provider: marked ``sending`` a chunk ahead, recorded behind.

    Touches are added as they are claimed (``add``) until ``close``. The first chunk is marked
    before anything is handed over; then, while the channel's workers send (``_send``: as many in
    flight as it has connections, each taking the next message as soon as it is free), the next
    chunk is marked in a thread, committed together with the outcomes recorded so far, once the
    queue is down to half a chunk: the network never waits for the database, and no chunk waits
    for its slowest message. What a crash can leave ``unknown`` is what was marked and not yet
    recorded: about two chunks (``CHUNK_SECONDS`` of sending each).
    """

    def __init__(self, run: Run, channel: Channel, name: str, rendered: dict, connections: int,
                 contexts: dict | None = None, built: dict[int, Message] | None = None) -> None:
        self.run, self.channel, self.name, self.rendered, self.connections = run, channel, name, rendered, connections
        self.contexts = {} if contexts is None else contexts  # of touches that may fall back, until answered
        self.built = {} if built is None else built  # messages built ahead, by touch id, until marked
        self.began: float | None = None  # when the first message was handed over
        self.items: list[Claimed] = []  # added and not yet marked
        self.added = 0
        self.closed = False
        self.size = CHUNK_FIRST
        self.known = run.paces.get(name)  # the batch before's pace: no slow start, no measuring again
        if self.known:
            self.size = self.known[0]
        self.outcomes: list[dict[str, Any]] = []
        self.fallbacks: list[tuple[Claimed, ChannelError, dict[str, Any]]] = []
        self.fatal: ChannelError | None = None
        self.answered, self.paced = 0, (0, time.monotonic())  # results so far; (results, time) at the last mark
        self.queue: asyncio.Queue = asyncio.Queue()
        self.wake = asyncio.Event()  # set by an answer, new touches, or the close

    def add(self, items: list[Claimed]) -> None:
        self.items.extend(items)
        self.added += len(items)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    @property
    def measured(self) -> bool:
        """Enough answers to know the pace (twice as many as there are connections), or known from the batch before."""
        return self.known is not None or (self.began is not None and self.answered >= 2 * self.connections)

    @property
    def ended(self) -> bool:
        return self.fatal is not None or (self.closed and self.answered >= self.added)

    @property
    def waits_on_network(self) -> bool:
        """Whether a message keeps a connection longer than ``NETWORK_BOUND`` (a relay far away, a slow API): then
        marking, rendering and claiming run in threads, beside the sending; on a fast network the threads would
        only take the processor from the sending."""
        if self.known is not None:
            return self.known[1]
        if not self.measured:
            return False
        return (time.monotonic() - self.began) * self.connections / self.answered > NETWORK_BOUND

    async def off_loop(self, function, *args):
        """``function(*args)`` in a thread when the stream waits on the network, else here."""
        return await asyncio.to_thread(function, *args) if self.waits_on_network else function(*args)

    def take_outcomes(self) -> list[dict[str, Any]]:
        """The outcomes recorded since the last mark (to be written), leaving none."""
        taken, self.outcomes = self.outcomes, []
        return taken

    async def flow(self) -> None:
        """Mark the first chunk, then send while the marker keeps the queue filled; raise what the marker met."""
        if not await self._ready():
            return
        self._enqueue(self._mark(self._next_chunk(), []))
        self.began = time.monotonic()
        sending = _send(self.channel, self.queue, self._done, self.run, self.name)
        marker, sent = await asyncio.gather(self._marker(), sending, return_exceptions=True)
        for outcome in (marker, sent):
            if isinstance(outcome, BaseException):
                raise outcome

    async def _ready(self) -> bool:
        """Wait until there is a chunk to mark (True) or the stream has ended (False)."""
        while self.fatal is None:
            if self.items and self.queue.qsize() <= self.size // 2:
                return True
            if self.closed and not self.items:
                return False
            self.wake.clear()
            await self.wake.wait()
        return False

    async def _marker(self) -> None:
        try:
            while await self._ready():
                chunk, earlier = self._next_chunk(), self.take_outcomes()
                self._enqueue(await self.off_loop(self._mark, chunk, earlier))
        finally:
            self.queue.put_nowait(None)  # the end of the stream

    def _next_chunk(self) -> list[Claimed]:
        """The next chunk, sized to about ``CHUNK_SECONDS`` of sending at the pace since the last one."""
        self.run.check_lease()
        answered, since = self.paced
        now = time.monotonic()
        self.size = chunk_size(self.answered - answered, now - since, self.size)
        self.paced = (self.answered, now)
        if self.measured and self.answered - answered >= self.connections:  # a pace worth keeping for the next batch
            self.run.paces[self.name] = (self.size, self.waits_on_network)
        chunk = self.items[:self.size]
        del self.items[:self.size]
        return chunk

    def _mark(self, chunk: list[Claimed], earlier: list[dict[str, Any]]) -> tuple[list, int, int]:
        """Commit ``chunk`` as ``sending`` with the ``earlier`` outcomes (in a thread): its messages, how many were
        lost to another run, how many documents failed."""
        run = self.run
        moved = move(run.engine, earlier + [{"touch_id": item.touch_id, "status": "sending"} for item in chunk],
                     at=run.clock())
        items = [item for item in chunk if item.touch_id in moved]  # others were settled by another run meanwhile
        tracker = _tracker(run) if self.name == "email" else None
        messages = [self.built.get(item.touch_id) or _message(run, item, _rendered_for(self.rendered, item.decision),
                                                              tracker) for item in items]
        for item in chunk:  # built (or lost to another run): the rendered text is not needed again
            if self.built.pop(item.touch_id, None) is None and \
                    self.rendered.pop((item.decision.customer_id, item.decision.channel), None) is None:
                self.rendered.pop(item.decision.customer_id, None)
        failed = _attach_documents(run, items, messages) if run.spec.document else 0
        prebuild = getattr(self.channel, "prebuild", None)  # email: the bytes built here, not on the sending loop
        if prebuild is not None and self.waits_on_network:
            for message in messages:
                prebuild(message)
        return list(zip(items, messages)), len(chunk) - len(items), failed

    def _enqueue(self, marked: tuple[list, int, int]) -> None:
        pairs, lost, documents_failed = marked
        if lost:
            self.run.counts[f"lost_claim:{self.name}"] += lost
        if documents_failed:
            self.run.counts["document_failed"] += documents_failed
        for pair in pairs:
            self.queue.put_nowait(pair)

    def _done(self, item: Claimed, result: Any) -> None:
        """One answer: the touch's outcome, to be recorded with the next mark (or at the end)."""
        self.answered += 1
        if self.queue.qsize() <= self.size // 2:  # time to mark the next chunk: wake the marker (not on every answer)
            self.wake.set()
        if isinstance(result, ChannelError):
            failure = _failure_move(self.run, item, result)
            if isinstance(result, ChannelFatal) and self.fatal is None:
                self.fatal = result
            if isinstance(result, PermanentError) and self.run.spec.fallback and item.decision.fallbacks:
                self.fallbacks.append((item, result, failure))  # recorded once its locks have moved to the fallback
                return
            self.outcomes.append(failure)
        else:
            self.outcomes.append({"touch_id": item.touch_id, "status": "sent",
                                  "provider_message_id": result.provider_id,
                                  "detail": (f"refused: {result.refused}" if result.refused else None)})
            self.run.counts[f"sent:{self.name}"] += 1
        if item.decision.fallbacks:  # it will not fall back: its context is not needed
            self.contexts.pop(item.decision.customer_id, None)


def _attach_documents(run: Run, items: list[Claimed], messages: list[Message]) -> int:
    """Generate the spec's document for each touch: attached to emails, referenced by call tasks, recorded."""
    from documents.proposals import DocumentError, record_document, render_document

    folder = Path(run.settings.outbox_dir) / "documents"
    rows = run.spec.offer_values.get("items")
    written, failed = [], 0
    for item, message in zip(items, messages):
        try:
            path, digest, summary = render_document(run.engine, run.spec.document, item.decision.customer_id,
                                                    rows=rows, out_dir=folder, company=run.settings.company_name,
                                                    today=run.as_of, valid_until=run.offer_valid_until,
                                                    settings=run.settings)
        except DocumentError as exc:
            failed += 1
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
    return failed


def concurrency(run: Run, channel: Channel) -> tuple[int, int]:
    """Messages in flight on a channel at first and at most (``channels.concurrency``): the SMTP pool for email,
    ``max_in_flight`` for the providers' APIs, 4 for the rest (outbox files, call tasks)."""
    settings = run.settings
    if channel.transport == "smtp":
        return settings.smtp_pool_size, max(settings.smtp_pool_size, settings.smtp_max_connections)
    if channel.transport in ("twilio", "telegram"):
        return 4, max(4, settings.max_in_flight)
    return (settings.smtp_pool_size if channel.name == "email" else 4), 4


async def _send(channel: Channel, queue: asyncio.Queue, done, run: Run, name: str) -> None:
    """Send what the stream queues through ``channel`` within its provider's limits (shared with every process
    using the same limiter), as many in flight as the window allows: from where the batch before left it."""
    breaker = run.breakers.setdefault(name, Breaker(run.settings.channel_failure_limit))
    start, ceiling = concurrency(run, channel)
    window = await send_stream(channel, queue, done, concurrency=run.windows.get(name, start), ceiling=ceiling,
                               meter=meter_of(name, channel, run.settings),
                               limiter=limiter_for(run.settings.rate_limit_url), attempts=run.settings.send_attempts,
                               breaker=breaker)
    run.windows[name] = window.limit


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
                     offer_valid_until=run.offer_valid_until, cost=run.prices.of_rendered(decision.channel, rendered))


def _fall_back(run: Run, failed: list[tuple[Claimed, ChannelError, dict[str, Any]]],
               contexts: dict) -> tuple[list[Claimed], dict[int, Rendered], Counter]:
    """Move each failed touch's claim to a new touch on the next channel of the plan, then record the failures
    (which would have freed the locks, had they not moved); the new touches to send, their messages, the counts."""
    retry: list[Claimed] = []
    rendered: dict[int, Rendered] = {}
    counts: Counter = Counter()
    for item, error, _ in failed:
        channel, point, address, consent = item.decision.fallbacks[0]
        decision = Decision(customer_id=item.decision.customer_id, person_id=item.decision.person_id, action="touch",
                            channel=channel, contact_point_id=point, address=address, consent_id=consent,
                            fallbacks=item.decision.fallbacks[1:],
                            detail=f"fallback after {item.decision.channel} failed: {error.code}")
        try:
            rendered[decision.customer_id] = run.render(decision, contexts[decision.customer_id], channel)
        except TemplateError:
            continue
        touch_id = transfer(run.engine, item.touch_id, _new_touch(run, decision, rendered[decision.customer_id]),
                            _budget(run))
        if touch_id is None:  # no money left for a second message: the failed touch stays the person's last
            counts[f"budget_exhausted:fallback:{channel}"] += 1
            continue
        retry.append(Claimed(touch_id, decision))
        counts[f"fallback:{item.decision.channel}->{channel}"] += 1
    move(run.engine, [failure for _, _, failure in failed], at=run.clock())
    return retry, rendered, counts


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
    ids = add_copies(run.engine, rows, _budget(run))  # within the budget: the first copies that fit
    if len(ids) < len(rows):
        run.counts[f"budget_exhausted:duplicate:{channel}"] += len(rows) - len(ids)
    return [Claimed(touch_id, decision) for touch_id, decision in zip(ids, decisions)]


def _budget(run: Run) -> Decimal | None:
    return None if run.spec.budget is None else Decimal(str(run.spec.budget))

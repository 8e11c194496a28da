"""One batch of a campaign: select → decide, then slice by slice render → claim while the slice before is sent.

A batch is a list of customer ids (keyset-paged from the segment); every customer of a batch ends
in the history as a touch (claimed, then sent / failed / unknown, or deferred) or as a decision
not to contact, with its reason. A message that cannot be rendered is that customer's decision
(``render_failed``), never the batch's failure.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from channels.base import Message
from channels.choice import Choice, rank
from channels.render import Rendered, TemplateError
from channels.render.context import contexts_for
from crm.db import HISTORY_TABLES, refresh_statistics, write_tx
from crm.ledger import budget
from crm.ledger.claims import Claimed, claim, load_candidates, preview, shared_persons
from crm.ledger.history import due_deferred
from crm.ledger.moves import move
from crm.ledger.arbitration import Terms
from crm.ledger.policy import Candidate, Decision, decide, options
from crm.ledger.responses import base_responses, responses
from crm.ledger.runs import live_campaigns
from crm.ledger.touches import record_decisions, touch_row
from flows.delivery import Sending, add_duplicates, responsive_loop, send_claimed
from flows.plan import DueRival, batch_rivals, load_plan, rivals_due
from flows.run import SAMPLE_SIZE, Run, default_policy
from segments import count, customer_ids, load_library, resolve
from touchflow.settings import campaigns_dir


def segment_pages(run: Run, page_size: int = 5000):
    """The segment's customer ids, a page at a time (keyset paging: memory stays flat).

    The segment is counted first (one query), so that progress can say how far the run is.
    """
    library = load_library()
    rule = resolve(run.spec.rule if run.spec.rule is not None else run.spec.segment, library)
    run.total = count(run.engine, rule, as_of=run.as_of, library=library)
    run.advance(0)
    yield from customer_ids(run.engine, rule, as_of=run.as_of, library=library, page_size=page_size)


def dedupe_persons(decisions: list[Decision]) -> None:
    """Several records of one person in a batch: the first keeps the touch."""
    seen: set[int] = set()
    for decision in decisions:
        if decision.action == "skip":
            continue
        if decision.person_id in seen:
            decision.action, decision.reason = "skip", "same_person"
            decision.detail = "this person is reached through another customer record"
        else:
            seen.add(decision.person_id)


def _contexts(run: Run, customer_ids: list[int]) -> dict[int, dict[str, Any]]:
    if not customer_ids:
        return {}
    return contexts_for(run.engine, customer_ids, offer=run.offer_values, as_of=run.as_of,
                        company=run.settings.company_name, locale=run.settings.locale)


def _row(run: Run, decision: Decision, status: str, rendered: Rendered | None = None) -> dict[str, Any]:
    """The history row of a decision: a claimed or deferred touch with its message, or a decision not to contact."""
    spec = run.spec
    if rendered is None:
        return touch_row(decision, run_id=run.run_id, campaign=spec.name, offer=spec.offer, purpose=spec.purpose,
                         status=status, now=run.now, offer_valid_until=run.offer_valid_until)
    return touch_row(decision, run_id=run.run_id, campaign=spec.name, offer=spec.offer, purpose=spec.purpose,
                     status=status, now=run.now, template=spec.template, template_hash=run.template_hash,
                     body=rendered.text, keep_body=spec.keep_body,
                     claim_key=(run.claim_key_of(decision) if run.claim_key_of
                                else f"{run.run_id}:{decision.customer_id}:{decision.channel}"),
                     offer_valid_until=run.offer_valid_until, cost=run.prices.of_rendered(decision.channel, rendered))


FIRST_SLICE, SLICE = 250, 2000  # customers prepared (rendered, claimed) at once: the first before anything is
# sent (kept small: the network waits for it); then, beside a sending that waits on the network, twice as many
# each time up to 2,000


@dataclass
class Prepared:
    """A slice of a batch, claimed and rendered: the touches to send now, and what was counted on the way."""

    ready: list[Claimed] = field(default_factory=list)
    contexts: dict[int, dict[str, Any]] = field(default_factory=dict)
    rendered: dict[Any, Rendered] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    built: dict[int, Message] = field(default_factory=dict)  # or the messages built already, by touch id


def process_batch(run: Run, ids: list[int]) -> dict[str, int]:
    """Decide, render, claim, send and record one batch of customers; return this batch's counts.

    The batch is decided at once, then prepared (rendered and claimed) a slice at a time in a
    thread while the slice before it is being sent, when the sending waits on the network: the
    network does not wait for the database or the templates. Across batches (and across runs) the
    person's offer lock decides, so a person's other records end as ``same_person`` or
    ``cooling_down`` decisions.
    """
    before = Counter(run.counts)
    candidates, decisions = select_page(run, ids)
    if run.dry_run:
        _dry_run(run, candidates, decisions)
        return dict(run.counts - before)
    if run.runner is None:
        run.runner = asyncio.Runner()
    terms = terms_for(run, candidates, decisions)  # rivals looked up once a batch
    with responsive_loop():
        run.runner.run(_prepare_and_send(run, candidates, decisions, terms))
    refresh_statistics(run.engine, HISTORY_TABLES)  # the run's own rows soon outgrow what the planner knows
    return dict(run.counts - before)


def select_page(run: Run, ids: list[int]) -> tuple[list[Candidate], list[Decision]]:
    """A page's candidates (counted as selected) and their decisions, one touch per person."""
    with run.engine.connect() as conn:
        candidates = load_candidates(conn, ids)
    run.counts["selected"] += len(candidates)
    decisions = decide_batch(run, candidates)
    dedupe_persons(decisions)
    return candidates, decisions


def decide_batch(run: Run, candidates: list[Candidate]) -> list[Decision]:
    """Each candidate's decision: on the spec's channels in order, or (``channels: auto``) on the channel with the
    lowest expected cost per response for that person, read from the batch's history in one pass."""
    spec = run.spec
    ranked: dict[int, Choice] = {}
    if spec.channel_choice == "auto" and candidates:
        ranked = choose_channels(run, candidates)
    decisions = []
    for c in candidates:
        choice = ranked.get(c.customer_id)
        why = choice.reason if choice else None
        decision = decide(c, campaign=spec.name, channels=choice.order if choice else list(spec.channels),
                          purpose=spec.purpose, now=run.now, policy=run.policy,
                          holdout_percent=spec.holdout_percent,
                          use_preferred=spec.use_preferred_channel and (choice is None or not choice.known))
        if why is not None and decision.action != "skip":
            decision.detail = why if decision.detail is None else f"{decision.detail}; {why}"[:2000]
        decisions.append(decision)
    return decisions


def choose_channels(run: Run, candidates: list[Candidate]) -> dict[int, Choice]:
    """``channels: auto``: each candidate's usable channels ranked by their own response, smoothed towards the
    whole base's (read once a run), and by cost per response; why, for the touch (``channels.choice``)."""
    spec, settings = run.spec, run.settings
    window = {"now": run.now, "lookback_days": settings.choice_lookback_days,
              "window_days": settings.choice_window_days}
    with run.engine.connect() as conn:
        if run.base_responses is None:
            run.base_responses = base_responses(conn, **window)
        history = responses([c.person_id for c in candidates], conn=conn, **window)
    base = run.base_responses
    out = {}
    for c in candidates:
        usable, _ = options(c, list(spec.channels), spec.purpose)
        if usable:
            out[c.customer_id] = rank([u[0] for u in usable], history.get(c.person_id, {}), base, run.prices,
                                       settings.choice_prior_weight)
    return out


async def _prepare_and_send(run: Run, candidates: list[Candidate], decisions: list[Decision], terms: Terms) -> None:
    """Prepare a small first slice and start sending it; then, if the sending waits on the network, prepare the rest
    a slice at a time in a thread beside it, else all at once here (a thread would only take the processor)."""
    sending = Sending(run)
    first, rest = decisions[:FIRST_SLICE], decisions[FIRST_SLICE:]
    try:
        feed(run, sending, prepare_slice(run, candidates, first, terms))
        if rest and not sending.broken:
            await sending.measured()  # is the network or the processor the limit? (a few round trips)
            if sending.waits_on_network:
                await _beside_the_sending(run, sending, candidates, rest, terms)
            else:
                feed(run, sending, prepare_slice(run, candidates, rest, terms))
    finally:
        await sending.finish()


async def _beside_the_sending(run: Run, sending: Sending, candidates: list[Candidate], decisions: list[Decision],
                              terms: Terms) -> None:
    """Each slice prepared in a thread while the one before it is being sent."""
    slices = ramped(decisions)
    pending = asyncio.ensure_future(asyncio.to_thread(prepare_slice, run, candidates, slices[0], terms))
    try:
        for following in [*slices[1:], None]:
            prepared = await pending
            pending = None
            feed(run, sending, prepared)
            if following is None or sending.broken:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(prepare_slice, run, candidates, following, terms))
    finally:
        if pending is not None:  # a slice claimed after sending stopped: the run's end settles it
            await asyncio.wait([pending])


def ramped(decisions: list[Decision]) -> list[list[Decision]]:
    """Slices twice the size of the one before (from twice the first slice) up to ``SLICE``: each is prepared while
    the one before it is sent, so the first ones are small, or the network would wait for them."""
    slices, start, size = [], 0, 2 * FIRST_SLICE
    while start < len(decisions):
        slices.append(decisions[start:start + size])
        start, size = start + size, min(SLICE, 2 * size)
    return slices


def feed(run: Run, sending: Sending, prepared: Prepared) -> None:
    run.counts.update(prepared.counts)
    sending.feed(prepared.ready, prepared.contexts, prepared.rendered, prepared.built)


def prepare_slice(run: Run, candidates: list[Candidate], decisions: list[Decision], terms: Terms) -> Prepared:
    """Render and claim a slice; record its decisions not to contact (in a thread: nothing shared is changed)."""
    spec, out = run.spec, Prepared()
    out.contexts = _contexts(run, [d.customer_id for d in decisions if d.action != "skip"])
    go, rows_go, skipped = [], [], []
    for decision in decisions:
        if run.budget_spent and decision.action != "skip":  # the budget ran out in a slice before: no more claims
            decision.action, decision.reason = "skip", "budget_exhausted"
            decision.detail = f"the campaign's budget of {spec.budget:g} RUB was spent earlier in this run"
        message = _render_or_skip(run, decision, out.contexts)
        if decision.action == "skip":
            skipped.append(_row(run, decision, "skipped"))
            out.counts[f"skipped:{decision.reason}"] += 1
            continue
        out.rendered[decision.customer_id] = message
        go.append(decision)
        rows_go.append(_row(run, decision, "deferred" if decision.action == "defer" else "claimed", message))
    with write_tx(run.engine) as conn:
        record_decisions(conn, skipped)
    claimed, refused = claim(run.engine, go, rows_go, terms)
    if refused:
        with write_tx(run.engine) as conn:
            record_decisions(conn, refused)
        out.counts.update(f"skipped:{row['reason']}" for row in refused)
        run.budget_spent |= any(row["reason"] == "budget_exhausted" for row in refused)
    out.ready = [c for c in claimed if c.decision.action == "touch"]
    if spec.duplicate_in:
        copies = add_duplicates(run, out.ready, {c.customer_id: c for c in candidates}, out.contexts, out.rendered)
        out.counts[f"duplicated:{spec.duplicate_in}"] += len(copies)
        out.ready += copies
    out.counts.update(f"deferred:{c.decision.channel}" for c in claimed if c.decision.action == "defer")
    return out


def _dry_run(run: Run, candidates: list[Candidate], decisions: list[Decision]) -> None:
    """Render everyone and apply the whole policy read-only, with samples; nothing is claimed or sent."""
    contexts = _contexts(run, [d.customer_id for d in decisions if d.action != "skip"])
    go, rows_go = [], []
    for decision in decisions:
        message = _render_or_skip(run, decision, contexts)
        if decision.action == "skip":
            run.counts[f"skipped:{decision.reason}"] += 1
            continue
        go.append(decision)
        rows_go.append(_row(run, decision, "deferred" if decision.action == "defer" else "claimed", message))
        if len(run.samples) < SAMPLE_SIZE:
            run.samples.append({"customer_id": decision.customer_id, "channel": decision.channel,
                                "address": decision.address, "subject": message.subject, "text": message.text})
    _preview(run, go, rows_go, terms_for(run, candidates, go))


def terms_for(run: Run, candidates: list[Candidate], decisions: list[Decision]) -> Terms:
    """What this batch's decisions to contact claim under: the run's offer, group, policy and priority, and its
    rivals' wants."""
    spec = run.spec
    if run.due_rivals is None:
        run.due_rivals = _due_rivals(run)
    wanted = {d.customer_id for d in decisions if d.action != "skip"}
    rivals = batch_rivals(run.engine, run.due_rivals, [c for c in candidates if c.customer_id in wanted],
                          as_of=run.as_of, now=run.now, base=default_policy(run.settings))
    return Terms(campaign=spec.name, offer=spec.offer, purpose=spec.purpose, policy=run.policy, run_id=run.run_id,
                 now=run.now, priority=spec.priority, group=spec.offer_group, rivals=rivals, journey=run.journey,
                 budget=None if spec.budget is None else Decimal(str(spec.budget)))


def _due_rivals(run: Run) -> list[DueRival]:
    """The plan's campaigns that outrank this run in its gap window (scheduled then, or running now)."""
    if run.spec.purpose != "marketing" or run.policy.min_gap_hours <= 0:
        return []
    live = live_campaigns(run.engine) - {run.spec.name}
    return rivals_due(run.spec, load_plan(campaigns_dir(run.settings)), run.now, run.policy.min_gap_hours, live)


def _preview(run: Run, go: list[Decision], rows: list[dict[str, Any]], terms: Terms) -> None:
    """A dry run's claims: the whole policy (cooldowns, caps, gaps, rivals, open calls, other runs' claims), read-only."""
    if run.simulated is None:
        run.simulated = {person: {} for person in shared_persons(run.engine)}
    would, refused = preview(run.engine, go, rows, terms, simulated=run.simulated)
    if terms.budget is not None:
        would = _dry_budget(run, would, terms.budget)
    for decision, _, _ in would:
        run.counts[f"{'deferred' if decision.action == 'defer' else 'would_send'}:{decision.channel}"] += 1
    for row in refused:
        run.counts[f"skipped:{row['reason']}"] += 1


def _dry_budget(run: Run, would: list, limit: Decimal) -> list:
    """A dry run's claims within the budget: the campaign's spend so far plus what this dry run would have spent."""
    if run.dry_spent is None:
        with run.engine.connect() as conn:
            run.dry_spent = budget.spent(conn, run.spec.name)
    kept = 0 if run.budget_spent else budget.fitting([row.get("cost") for _, row, _ in would], run.dry_spent, limit)
    run.dry_spent += sum((row.get("cost") or 0 for _, row, _ in would[:kept]), Decimal(0))
    run.counts["skipped:budget_exhausted"] += len(would) - kept
    run.budget_spent |= kept < len(would)
    return would[:kept]


def _render_or_skip(run: Run, decision: Decision, contexts: dict[int, dict[str, Any]]) -> Rendered | None:
    """Render the decision's message; a template that fails turns the decision into ``render_failed``."""
    if decision.action == "skip":
        return None
    try:
        return run.render(decision, contexts[decision.customer_id], decision.channel)
    except TemplateError as exc:
        decision.action, decision.reason, decision.detail = "skip", "render_failed", str(exc)[:2000]
        return None


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
    moved = move(run.engine, drop + [{"touch_id": c.touch_id, "status": "claimed", "detail": "quiet hours over"}
                                     for c in ready])
    ready = [c for c in ready if c.touch_id in moved]  # another run may have taken them first
    if ready:
        contexts = _contexts(run, [c.decision.customer_id for c in ready])
        rendered, failed = {}, []
        for c in ready:
            try:
                rendered[c.decision.customer_id] = run.render(c.decision, contexts[c.decision.customer_id],
                                                              c.decision.channel)
            except TemplateError as exc:
                failed.append({"touch_id": c.touch_id, "status": "failed", "error_code": "render_failed",
                               "error_message": str(exc)[:2000]})
        move(run.engine, failed)
        ready = [c for c in ready if c.decision.customer_id in rendered]
        before = Counter(run.counts)
        send_claimed(run, ready, contexts, rendered)
        for key, value in (run.counts - before).items():
            if key.startswith("sent:"):
                run.counts[f"deferred_sent:{key[5:]}"] += value
    return len(ready)

"""Did a campaign work? Conversions by last-touch attribution, revenue, spend, and uplift over its holdout.

Attribution (last touch, the window named): a purchase goes to the person's latest outgoing touch
that left (status ``sent`` or ``delivered``; not skipped, deferred or failed) on a day from the
purchase's date back to that touch's campaign's ``attribution_days`` (spec, default 7) before it.
The person is the customer's (``customers.person_id``), so a purchase by one record of a person
counts for a touch to another. Days are the business's (``default_timezone``).

Uplift: in each run, the people decided as its holdout (touches ``skipped`` with reason
``holdout``) against the people it contacted. An outcome is every purchase of the person from the
run's day to ``attribution_days`` after it; runs whose window has not closed are left out (their
outcomes are not known yet). Conversion uplift is the difference of the two rates with Newcombe's
hybrid score 95 % interval; revenue per person the difference of the means with Welch's
(``flows.stats``). A group smaller than ``min_group`` people gives "not enough data", not a number.

Spend is the sum of ``touches.cost`` (filled when a touch is claimed); cost per lead = spend /
people with an attributed purchase; return on spend = attributed revenue / spend.
Everything is read, nothing written; functions return plain dicts (the CLI and console format).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from statistics import fmean
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Engine

from crm.ledger.engagement import engagement_summary
from crm.models import Customer, Purchase, Touch
from flows.spec import DEFAULT_ATTRIBUTION_DAYS, CampaignSpec
from flows.stats import newcombe, welch, wilson

customers = Customer.__table__
purchases = Purchase.__table__
touches = Touch.__table__
CONTACTED = ("sent", "delivered")
MIN_GROUP = 30  # people in each of contacted and holdout before an uplift is given
person = func.coalesce(customers.c.person_id, customers.c.id)


def _money(value: Any) -> float:
    return round(float(value or 0), 2)


def _ratio(a: Any, b: Any, digits: int = 4) -> float | None:
    return round(float(a) / float(b), digits) if a is not None and b else None


def _day(at: datetime, zone: ZoneInfo) -> date:
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).astimezone(zone).date()


def _campaign_people(campaign: str, statuses: tuple[str, ...]):
    """The persons a campaign's outgoing touches in ``statuses`` reached (a subquery)."""
    return (select(person.label("person")).select_from(touches.join(customers, customers.c.id == touches.c.customer_id))
            .where(touches.c.campaign == campaign, touches.c.status.in_(statuses), touches.c.direction == "out")
            .distinct().subquery())


def attribute(engine: Engine, campaign: str, *, windows: Mapping[str, int], default_window: int =
              DEFAULT_ATTRIBUTION_DAYS, until: date | None = None, zone: str = "UTC") -> list[dict[str, Any]]:
    """The purchases attributed to ``campaign``'s touches (last touch; ``windows`` per campaign, in days).

    Only people the campaign reached can convert for it, but their touches from every campaign
    compete: a later touch of another campaign within its window takes the purchase.
    """
    tz = ZoneInfo(zone)
    people = _campaign_people(campaign, CONTACTED)
    with engine.connect() as conn:
        first = conn.execute(select(func.min(touches.c.created_at)).where(
            touches.c.campaign == campaign, touches.c.status.in_(CONTACTED), touches.c.direction == "out")).scalar()
        if first is None:
            return []
        start = _day(first, tz)
        bought = conn.execute(
            select(purchases.c.id, person.label("person"), purchases.c.customer_id, purchases.c.purchased_on,
                   purchases.c.amount, purchases.c.product, purchases.c.category)
            .select_from(purchases.join(customers, customers.c.id == purchases.c.customer_id))
            .where(person.in_(select(people.c.person)), purchases.c.purchased_on >= start,
                   *([purchases.c.purchased_on <= until] if until else []))).all()
        history = defaultdict(list)
        for row in conn.execute(
                select(person.label("person"), touches.c.id, touches.c.created_at, touches.c.campaign,
                       touches.c.channel)
                .select_from(touches.join(customers, customers.c.id == touches.c.customer_id))
                .where(person.in_(select(people.c.person)), touches.c.status.in_(CONTACTED),
                       touches.c.direction == "out", touches.c.created_at >= datetime.combine(
                           start - timedelta(days=1), datetime.min.time(), timezone.utc))
                .order_by(touches.c.created_at.desc(), touches.c.id.desc())):
            history[row.person].append((_day(row.created_at, tz), row))
    found = []
    for p in bought:
        for day, touch in history.get(p.person, ()):
            window = windows.get(touch.campaign or "", default_window)
            if day <= p.purchased_on and (p.purchased_on - day).days <= window:
                if touch.campaign == campaign:
                    found.append({"purchase": p.id, "person": p.person, "customer_id": p.customer_id,
                                  "purchased_on": p.purchased_on, "amount": _money(p.amount), "product": p.product,
                                  "category": p.category, "touch": touch.id, "channel": touch.channel,
                                  "touched_on": day, "days_after": (p.purchased_on - day).days})
                break
    return found


def spend(engine: Engine, campaign: str) -> dict[str, Any]:
    """The campaign's spend (sum of ``touches.cost``) and contacts, in total and per channel.

    Spend is None (not 0) where no touch has a cost: unknown, so cost per lead and return are too.
    """
    query = (select(touches.c.channel, func.count(), func.sum(touches.c.cost), func.count(touches.c.cost),
                    func.sum(case((touches.c.status.in_(CONTACTED), 1), else_=0)))
             .where(touches.c.campaign == campaign, touches.c.direction == "out", touches.c.status != "skipped")
             .group_by(touches.c.channel))
    channels = {}
    with engine.connect() as conn:
        for channel, count, cost, costed, contacted in conn.execute(query):
            channels[channel or "—"] = {"touches": count, "contacted": int(contacted or 0),
                                        "spend": _money(cost) if costed else None, "without_cost": count - costed}
        people = conn.execute(select(func.count()).select_from(_campaign_people(campaign, CONTACTED))).scalar_one()
    costed = [c["spend"] for c in channels.values() if c["spend"] is not None]
    return {"people_contacted": people, "channels": channels, "spend": round(sum(costed), 2) if costed else None,
            "touches_without_cost": sum(c["without_cost"] for c in channels.values())}



def _observations(engine: Engine, campaign: str, window: int, as_of: date, tz: ZoneInfo) -> tuple[list, int]:
    """(person, run's day, group, region) per person and run whose window closed by ``as_of``; runs still open."""
    held = and_(touches.c.status == "skipped", touches.c.reason == "holdout")
    query = (select(touches.c.run_id, person.label("person"), customers.c.region, touches.c.status,
                    touches.c.created_at)
             .select_from(touches.join(customers, customers.c.id == touches.c.customer_id))
             .where(touches.c.campaign == campaign, touches.c.direction == "out", touches.c.run_id.is_not(None),
                    held | touches.c.status.in_(CONTACTED)))
    runs: dict[str, dict] = defaultdict(lambda: {"day": None, "people": {}})
    with engine.connect() as conn:
        for row in conn.execute(query):
            run = runs[row.run_id]
            day = _day(row.created_at, tz)
            run["day"] = day if run["day"] is None else min(run["day"], day)
            group = "holdout" if row.status == "skipped" else "contacted"
            if run["people"].get(row.person, (None,))[0] != "contacted":  # contacted wins over a repeated decision
                run["people"][row.person] = (group, row.region)
    closed = [(r["day"], r["people"]) for r in runs.values() if r["day"] + timedelta(days=window) <= as_of]
    observations = [(p, day, group, region) for day, people in closed for p, (group, region) in people.items()]
    return observations, len(runs) - len(closed)


def _outcomes(engine: Engine, observations: list, window: int) -> list[float | None]:
    """Each observation's revenue from its run's day to ``window`` days after (None: no purchase)."""
    if not observations:
        return []
    first, last = min(o[1] for o in observations), max(o[1] for o in observations) + timedelta(days=window)
    persons = sorted({o[0] for o in observations})
    bought = defaultdict(list)
    with engine.connect() as conn:
        for chunk in range(0, len(persons), 5000):
            for row in conn.execute(
                    select(person.label("person"), purchases.c.purchased_on, purchases.c.amount)
                    .select_from(purchases.join(customers, customers.c.id == purchases.c.customer_id))
                    .where(person.in_(persons[chunk:chunk + 5000]), purchases.c.purchased_on.between(first, last))):
                bought[row.person].append((row.purchased_on, float(row.amount)))
    result = []
    for p, day, _group, _region in observations:
        amounts = [amount for on, amount in bought.get(p, ()) if day <= on <= day + timedelta(days=window)]
        result.append(sum(amounts) if amounts else None)
    return result


def compare(contacted: list[float | None], holdout: list[float | None], min_group: int = MIN_GROUP) -> dict[str, Any]:
    """Conversion and revenue per person of both groups, and the uplift with 95 % intervals (or why not)."""
    def group(values: list[float | None]) -> dict[str, Any]:
        n, k = len(values), sum(v is not None for v in values)
        low, high = wilson(k, n) if n else (None, None)
        return {"people": n, "converted": k, "conversion": _ratio(k, n), "conversion_ci": [_r(low), _r(high)],
                "revenue": _money(sum(v or 0 for v in values)),
                "revenue_per_person": round(fmean([v or 0 for v in values]), 2) if n else None}
    result = {"contacted": group(contacted), "holdout": group(holdout), "uplift": None}
    small = [f"{name} has {len(v)} {'person' if len(v) == 1 else 'people'}" for name, v in
             (("contacted", contacted), ("holdout", holdout)) if len(v) < max(min_group, 2)]
    if small:
        result["note"] = f"not enough data: {' and '.join(small)} (at least {max(min_group, 2)} in each are needed)"
        return result
    k1, k0 = result["contacted"]["converted"], result["holdout"]["converted"]
    diff, low, high = newcombe(k1, len(contacted), k0, len(holdout))
    money, m_low, m_high, df = welch([v or 0 for v in contacted], [v or 0 for v in holdout])
    result["uplift"] = {"conversion": _r(diff), "conversion_ci": [_r(low), _r(high)],
                        "revenue_per_person": round(money, 2), "revenue_per_person_ci": [round(m_low, 2),
                                                                                         round(m_high, 2)],
                        "welch_df": round(df, 1),
                        "significant": low > 0 or high < 0}
    return result


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def holdout_uplift(engine: Engine, campaign: str, *, window: int = DEFAULT_ATTRIBUTION_DAYS, as_of: date | None = None,
                   zone: str = "UTC", segment: str | None = None, min_group: int = MIN_GROUP) -> dict[str, Any]:
    """Contacted against holdout for the whole campaign (its segment) and per region."""
    tz = ZoneInfo(zone)
    as_of = as_of or datetime.now(tz).date()
    observations, still_open = _observations(engine, campaign, window, as_of, tz)
    outcomes = _outcomes(engine, observations, window)
    slices: dict[str, dict[str, list]] = defaultdict(lambda: {"contacted": [], "holdout": []})
    for (_p, _day, group, region), outcome in zip(observations, outcomes):
        slices[segment or "all"][group].append(outcome)
        slices[f"region: {region or '—'}"][group].append(outcome)
    rows = [{"slice": name, **compare(groups["contacted"], groups["holdout"], min_group)}
            for name, groups in slices.items()]
    return {"window_days": window, "as_of": as_of, "runs_still_open": still_open, "min_group": min_group,
            "method": "conversion: Newcombe hybrid score 95% CI of the difference of two proportions; revenue per "
                      "person: Welch t 95% CI", "slices": rows}


def report(engine: Engine, spec: CampaignSpec, *, windows: Mapping[str, int] | None = None, as_of: date | None = None,
           zone: str = "UTC", min_group: int = MIN_GROUP) -> dict[str, Any]:
    """The campaign's results: conversions and revenue (per channel), spend and its returns, holdout uplift,
    and delivery, opens and clicks per channel (``crm.ledger.engagement``)."""
    windows = {**(windows or {}), spec.name: spec.attribution_days}
    found = attribute(engine, spec.name, windows=windows, until=as_of, zone=zone)
    costs = spend(engine, spec.name)
    by_channel = {name: {**c, "purchases": 0, "buyers": set(), "revenue": 0.0} for name, c in costs["channels"].items()}
    for item in found:
        row = by_channel.setdefault(item["channel"] or "—", {"touches": 0, "contacted": 0, "spend": None,
                                                             "without_cost": 0, "purchases": 0, "buyers": set(),
                                                             "revenue": 0.0})
        row["purchases"] += 1
        row["buyers"].add(item["person"])
        row["revenue"] += item["amount"]
    for row in by_channel.values():
        _returns(row, len(row.pop("buyers")))
    total = {"people_contacted": costs["people_contacted"], "purchases": len(found), "spend": costs["spend"],
             "revenue": sum(item["amount"] for item in found), "touches_without_cost": costs["touches_without_cost"]}
    _returns(total, len({item["person"] for item in found}))
    total["conversion"] = _ratio(total["leads"], total["people_contacted"])
    return {"campaign": spec.name, "segment": spec.segment or "rule", "budget": spec.budget,
            "budget_used": _ratio(costs["spend"], spec.budget),
            "attribution": {"rule": "last touch", "window_days": spec.attribution_days,
                            "counts": "outgoing touches sent or delivered, the person's latest within its own "
                                      "campaign's window before the purchase"},
            "total": total, "channels": dict(sorted(by_channel.items())),
            "holdout": holdout_uplift(engine, spec.name, window=spec.attribution_days, as_of=as_of, zone=zone,
                                      segment=spec.segment or "rule", min_group=min_group),
            "engagement": engagement_summary(engine, campaign=spec.name)["campaigns"].get(spec.name, {})}


def _returns(row: dict[str, Any], leads: int) -> None:
    """Add leads, cost per lead and return on spend to a row holding spend and revenue."""
    row["revenue"] = _money(row["revenue"])
    row["leads"] = leads
    row["cost_per_lead"] = _ratio(row["spend"], leads, 2)
    row["return_on_spend"] = _ratio(row["revenue"], row["spend"])


def project_specs(directory) -> dict[str, CampaignSpec]:
    """The specs of a folder by name (a spec that does not load is left out: `campaign list` names its error)."""
    from flows.spec import SpecError, campaign_files, load_spec

    found = {}
    for path in campaign_files(directory):
        try:
            spec = load_spec(path)
        except SpecError:
            continue
        found[spec.name] = spec
    return found


def campaign_report(engine: Engine, name: str, directory, **kwargs: Any) -> dict[str, Any]:
    """``report`` for the campaign ``name`` of a folder of specs, every spec's window competing for purchases."""
    from touchflow.errors import InputError

    specs = project_specs(directory)
    if name not in specs:
        raise InputError(f"no campaign {name!r} in {directory}: give the name of a spec there "
                         f"(touchflow campaign list)")
    return report(engine, specs[name], windows={n: s.attribution_days for n, s in specs.items()}, **kwargs)

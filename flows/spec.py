"""Campaign specs: YAML files under ``campaigns/``, checked before anything is selected.

    name: business_cards_refill
    segment: business_cards_running_out        # a named segment, or `rule: {...}` inline
    purpose: marketing                         # or service
    offer: business_cards_refill               # the cooldown unit: never the same offer twice in D days
    template: replenishment_reminder
    channels: [email, telegram, sms]           # preference order; or `auto`: ranked per person by results
    use_preferred_channel: true                # the customer's preferred channel first when in the plan
    fallback: true                             # next channel on a permanent failure
    duplicate_in: null                         # also send in this channel (e.g. sms)
    holdout_percent: 10                        # a control group, recorded as decisions
    attribution_days: 7                        # a purchase this many days after a touch is the campaign's (results)
    priority: 50                               # 0–100: who wins a person several campaigns want at once
    offer_group: business_cards                # offers of one group count as one offer for cooldowns
    budget: 5000                               # RUB over all its runs; a run stops contacting when it is spent
    prices: {sms: 2.9}                         # this campaign's prices over the settings' (channels.pricing)
    policy: {cap_max: 3, cap_days: 7, offer_cooldown_days: 30, min_gap_hours: 24, quiet_hours: "21:00-09:00"}
    schedule: {cron: "0 10 * * *", timezone: Europe/Moscow}
    kind: campaign                             # or reminder (run by the daily reminders flow), or journey (steps:)
    document: proposal                         # a .docx per touch: attached to email, put on the call task
    offer_values: {discount_percent: 5, valid_until: end_of_month}
    tracking: {opens: true, clicks: true}      # email opens / clicks (default: on for marketing, off for service)

An offer's ``valid_until`` (in ``offer_values`` or the template's ``meta.yaml`` ``offer``) is a
date, or a rule the run evaluates on its own date (``as_of``): ``end_of_month``, ``end_of_week``
(Sunday), ``+14d`` / ``+2w``; or give ``valid_days: 14`` instead. Templates then see
``offer.valid_until`` as a date, and every touch of the run records it. A fixed date already
past refuses the run (``campaign check`` says so first).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from crm.ledger.policy import Policy, QuietHours
from flows.journey_spec import Step, name_steps
from touchflow.errors import InputError

CHANNELS = ("email", "sms", "voice", "telegram", "call")
DEFAULT_ATTRIBUTION_DAYS = 7  # a campaign's attribution window unless its spec names one


class SpecError(InputError):
    """A campaign spec is wrong; the message names the file and the field."""


VALIDITY_HELP = ("a date (2026-12-31), or a rule evaluated on the day of sending: end_of_month, end_of_week, "
                 "+14d, +2w; or valid_days: 14 instead of valid_until")
_RELATIVE = re.compile(r"^\+\s*(\d{1,4})\s*([dw])$")


def valid_until(value: Any, as_of: date) -> date:
    """The date an offer's ``valid_until`` means for a run on ``as_of``; ValueError when it is neither date nor rule."""
    if isinstance(value, date):
        return value
    text = str(value).strip().lower()
    if text == "end_of_month":
        return as_of.replace(day=calendar.monthrange(as_of.year, as_of.month)[1])
    if text == "end_of_week":
        return as_of + timedelta(days=6 - as_of.weekday())
    relative = _RELATIVE.match(text)
    if relative:
        return as_of + timedelta(days=int(relative[1]) * (7 if relative[2] == "w" else 1))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"valid_until {value!r} is not {VALIDITY_HELP}") from None


def _is_rule(value: Any) -> bool:
    return not isinstance(value, date) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value).strip())


def check_validity(offer: Mapping[str, Any]) -> None:
    """Check an offer's ``valid_until`` / ``valid_days`` without a date (when a spec or template is read)."""
    if "valid_until" in offer and "valid_days" in offer:
        raise ValueError("give valid_until or valid_days, not both")
    if "valid_days" in offer:
        days = offer["valid_days"]
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise ValueError(f"valid_days must be a whole number of days, 0 or more, not {days!r}")
    if "valid_until" in offer:
        valid_until(offer["valid_until"], date.today())


def resolve_offer(template_offer: Mapping[str, Any], spec_values: Mapping[str, Any], as_of: date, *,
                  template: str, campaign: str) -> dict[str, Any]:
    """The offer a run on ``as_of`` shows: the template's ``meta.yaml`` offer under the spec's ``offer_values``.

    A validity given by the spec replaces the template's whole (``valid_until`` or ``valid_days``);
    the result's ``valid_until`` is a date. Raises SpecError naming where a wrong or past date is.
    """
    chosen = spec_values if {"valid_until", "valid_days"} & set(spec_values) else template_offer
    where = (f"campaign {campaign}: offer_values" if chosen is spec_values
             else f"template {template}: meta.yaml offer")
    values = {k: v for k, v in template_offer.items() if k not in ("valid_until", "valid_days") or
              chosen is template_offer}
    values.update(spec_values)
    try:
        check_validity(chosen)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None
    if "valid_days" in values:
        values["valid_until"] = as_of + timedelta(days=values["valid_days"])
    elif "valid_until" in values:
        fixed = not _is_rule(values["valid_until"])
        values["valid_until"] = valid_until(values["valid_until"], as_of)
        if fixed and values["valid_until"] < as_of:
            raise SpecError(
                f"{where}.valid_until: {values['valid_until']:%Y-%m-%d} is before the run's date {as_of:%Y-%m-%d}: "
                f"the messages would promise an offer that has already ended. Give a later date, or a rule "
                f"evaluated on the day of sending (end_of_month, end_of_week, +14d) or valid_days: 14")
    return values


class PolicySpec(BaseModel):
    """Overrides of the contact policy."""

    model_config = ConfigDict(extra="forbid")
    cap_max: int | None = Field(None, ge=1)
    cap_days: int | None = Field(None, ge=1)
    offer_cooldown_days: int | None = Field(None, ge=0)
    min_gap_hours: float | None = Field(None, ge=0)  # between any two marketing touches to a person; 0 = off
    quiet_hours: str | None = None  # "21:00-09:00" or "off"

    @field_validator("quiet_hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is None or value == "off":
            return value
        try:
            start, end = value.split("-")
            time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
        except ValueError:
            raise ValueError("write quiet hours as 21:00-09:00, or off") from None
        return value


class PriceSpec(BaseModel):
    """A campaign's own prices (RUB), over the settings' (``channels.pricing``)."""

    model_config = ConfigDict(extra="forbid")
    email: float | None = Field(None, ge=0)
    sms: float | None = Field(None, ge=0)          # per segment
    voice: float | None = Field(None, ge=0)        # per started minute
    telegram: float | None = Field(None, ge=0)
    call: float | None = Field(None, ge=0)         # per minute of a rep's call
    call_minutes: float | None = Field(None, gt=0)


AUTO_CHANNELS = ("email", "sms", "telegram", "voice")  # `channels: auto` ranks these (the template's parts of them)


class TrackingSpec(BaseModel):
    """Email open and click tracking (``channels.tracking``); unset means on for marketing, off for service.

    Off for service messages by default: a receipt or a reminder of an appointment is sent because
    the person needs it, and measuring how they read it is not part of that purpose (nor a reason
    to route their click through us); a campaign may still switch it on.
    """

    model_config = ConfigDict(extra="forbid")
    opens: bool | None = None
    clicks: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _switches(cls, value: Any) -> Any:
        if isinstance(value, bool):  # tracking: false  ==  both off
            return {"opens": value, "clicks": value}
        if not isinstance(value, dict):
            raise ValueError(f"write tracking as {{opens: true, clicks: false}} or true / false, not {value!r}")
        for name in ("opens", "clicks"):
            if name in value and value[name] is not None and not isinstance(value[name], bool):
                raise ValueError(f"tracking.{name} is {value[name]!r}: write true or false")
        return value


class Schedule(BaseModel):
    """When the campaign runs as a Prefect deployment."""

    model_config = ConfigDict(extra="forbid")
    cron: str
    timezone: str = "Europe/Moscow"


class CampaignSpec(BaseModel):
    """A campaign: who, why, what, how, with which limits."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    description: str = ""
    kind: Literal["campaign", "reminder", "journey"] = "campaign"
    segment: str | None = None
    rule: dict[str, Any] | None = None
    purpose: Literal["marketing", "service"]
    offer: str = Field(min_length=1, max_length=200)
    template: str
    channels: list[Literal["email", "sms", "voice", "telegram", "call"]] = Field(min_length=1)
    use_preferred_channel: bool = True
    fallback: bool = True
    duplicate_in: Literal["email", "sms", "voice", "telegram", "call"] | None = None
    holdout_percent: float = Field(0, ge=0, le=100)
    # results (flows.results): a purchase up to this many days after the person's last touch is attributed to it
    attribution_days: int = Field(DEFAULT_ATTRIBUTION_DAYS, ge=0, le=366)
    priority: int = Field(50, ge=0, le=100)  # the higher wins when several campaigns want a person at once
    offer_group: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    budget: float | None = Field(None, ge=0)  # RUB, kept across all the campaign's runs (crm.ledger.budget)
    prices: PriceSpec = Field(default_factory=PriceSpec)
    channel_choice: Literal["order", "auto"] = "order"  # `channels: auto` sets it: ranked per person by results
    offer_values: dict[str, Any] = Field(default_factory=dict)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    schedule: Schedule | None = None
    keep_body: bool = True
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)  # email opens and clicks
    document: str | None = None  # a templates/documents/<name>.docx to generate per touch (attached / on the task)
    steps: list[Step] | None = None  # a journey's steps (flows.journey_spec)

    @model_validator(mode="before")
    @classmethod
    def _auto(cls, data: Any) -> Any:
        """``channels: auto`` (email, sms, telegram, voice) or ``channels: {auto: [email, sms]}``: ranked per person."""
        if isinstance(data, dict):
            channels = data.get("channels")
            if channels == "auto" or (isinstance(channels, dict) and set(channels) == {"auto"}):
                listed = channels["auto"] if isinstance(channels, dict) else list(AUTO_CHANNELS)
                data = {**data, "channels": listed, "channel_choice": "auto"}
            elif isinstance(channels, (str, dict)):
                raise ValueError("channels: a list in order of preference ([email, sms]), or auto (ranked per person "
                                 "by their response and cost), or {auto: [email, sms]}")
        return data

    @field_validator("offer_values")
    @classmethod
    def _validity(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_validity(value)
        return value

    @model_validator(mode="after")
    def _who(self) -> CampaignSpec:
        if (self.segment is None) == (self.rule is None):
            raise ValueError("give exactly one of segment (a name) or rule (inline)")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels lists a channel twice")
        if (self.kind == "journey") != bool(self.steps):
            raise ValueError("a journey (kind: journey) has steps, and only a journey has them")
        if self.steps:
            self.steps = name_steps(self.steps)
        return self

    def step_spec(self, step: Step) -> CampaignSpec:
        """A journey's send step as a campaign of its own (its channels and template), run under the journey's name."""
        return self.model_copy(update={"kind": "campaign", "steps": None, "channels": list(step.send.channels),
                                       "template": step.send.template or self.template, "holdout_percent": 0,
                                       "duplicate_in": None, "schedule": None})

    def for_template(self, parts: list[str]) -> CampaignSpec:
        """``channels: auto`` narrowed to the channels the template has a part for (a run ranks those)."""
        if self.channel_choice != "auto":
            return self
        kept = [c for c in self.channels if c in parts]
        return self.model_copy(update={"channels": kept}) if kept and kept != self.channels else self

    def tracks(self, what: Literal["opens", "clicks"]) -> bool:
        """Whether this campaign's emails track ``what``: as its spec says, else on for marketing, off for service."""
        chosen = getattr(self.tracking, what)
        return self.purpose == "marketing" if chosen is None else chosen

    def contact_policy(self, base: Policy) -> Policy:
        """The default policy with this spec's overrides."""
        values = {k: v for k, v in self.policy.model_dump().items() if v is not None and k != "quiet_hours"}
        quiet = base.quiet_hours
        if self.policy.quiet_hours == "off":
            quiet = None
        elif self.policy.quiet_hours:
            start, end = (time.fromisoformat(p.strip()) for p in self.policy.quiet_hours.split("-"))
            quiet = QuietHours(start, end)
        return Policy(**{**base.__dict__, **values, "quiet_hours": quiet})


def load_spec(path: Path | str) -> CampaignSpec:
    """Read and check a spec; raise SpecError naming the file and each wrong field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: no such campaign file") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a campaign spec is a mapping (name, segment, purpose, offer, template, channels)")
    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
                             for err in exc.errors())
        raise SpecError(f"{path}: {problems}") from None


def campaign_files(directory: Path) -> list[Path]:
    """The spec files of a directory."""
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def check_spec(path: Path | str, as_of: date | None = None) -> CampaignSpec:
    """Load a spec and check what it names: the segment (and the segments it uses), a template part per channel,
    and the offer's validity on ``as_of`` (default today: a fixed ``valid_until`` already past is refused).

    Raises SpecError naming the file and the field, before anything is selected or sent.
    """
    from channels.render import TemplateError, channels_of, meta
    from segments import SegmentError, load_library, resolve

    spec = load_spec(path)
    try:
        resolve(spec.rule if spec.rule is not None else spec.segment, load_library())
    except SegmentError as exc:
        raise SpecError(f"{path}: {exc}") from None
    parts = [("channels", spec.template, spec.channels)] + [
        (f"steps.{step.id}", step.send.template or spec.template, step.send.channels)
        for step in spec.steps or [] if step.send]
    for where, template, channels in parts:
        try:
            missing = [c for c in channels if c not in channels_of(template)]
        except TemplateError as exc:
            raise SpecError(f"{path}: {where}: template: {exc}") from None
        if missing and spec.channel_choice == "auto" and where == "channels":
            if len(missing) == len(channels):
                raise SpecError(f"{path}: channels: auto: template {template!r} has no part for any of "
                                f"{', '.join(channels)}")
            continue
        if missing:
            raise SpecError(f"{path}: {where}: template {template!r} has no part for {', '.join(missing)}")
    try:
        resolve_offer(meta(spec.template).get("offer", {}), spec.offer_values, as_of or date.today(),
                      template=spec.template, campaign=spec.name)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    return spec.for_template(channels_of(spec.template))  # channels: auto ranks the template's channels

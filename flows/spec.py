"""Campaign specs: YAML files under ``campaigns/``, checked before anything is selected.

    name: business_cards_refill
    segment: business_cards_running_out        # a named segment, or `rule: {...}` inline
    purpose: marketing                         # or service
    offer: business_cards_refill               # the cooldown unit: never the same offer twice in D days
    template: replenishment_reminder
    channels: [email, telegram, sms]           # preference order
    use_preferred_channel: true                # the customer's preferred channel first when in the plan
    fallback: true                             # next channel on a permanent failure
    duplicate_in: null                         # also send in this channel (e.g. sms)
    holdout_percent: 10                        # a control group, recorded as decisions
    budget: 5000
    policy: {cap_max: 3, cap_days: 7, offer_cooldown_days: 30, quiet_hours: "21:00-09:00"}
    schedule: {cron: "0 10 * * *", timezone: Europe/Moscow}
    kind: campaign                             # or reminder (run by the daily reminders flow)
    document: proposal                         # a .docx per touch: attached to email, put on the call task
"""

from __future__ import annotations

from datetime import time
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

from crm.policy import Policy, QuietHours

CHANNELS = ("email", "sms", "voice", "telegram", "call")


class SpecError(ValueError):
    """A campaign spec is wrong; the message names the file and the field."""


class PolicySpec(BaseModel):
    """Overrides of the contact policy."""

    model_config = ConfigDict(extra="forbid")
    cap_max: int | None = Field(None, ge=1)
    cap_days: int | None = Field(None, ge=1)
    offer_cooldown_days: int | None = Field(None, ge=0)
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
    kind: Literal["campaign", "reminder"] = "campaign"
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
    budget: float | None = Field(None, ge=0)
    offer_values: dict[str, Any] = Field(default_factory=dict)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    schedule: Schedule | None = None
    keep_body: bool = True
    document: str | None = None  # a templates/documents/<name>.docx to generate per touch (attached / on the task)

    @model_validator(mode="after")
    def _who(self) -> CampaignSpec:
        if (self.segment is None) == (self.rule is None):
            raise ValueError("give exactly one of segment (a name) or rule (inline)")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels lists a channel twice")
        return self

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

"""The steps of a journey: send, wait, branch — a campaign spec of ``kind: journey`` lists them under ``steps``.

    kind: journey
    steps:
      - {id: first_email, send: {channels: [email]}}          # the spec's template and offer, or its own template
      - {id: three_days, wait: {days: 3, at: "10:00"}}          # then the next 10:00 in the customer's zone
      - {branch: {purchased: exit, opted_out: exit}}            # the first that holds: exit, or go to a step
      - {id: sms, send: {channels: [sms]}}
      - {wait: {days: 7}}
      - {branch: {purchased: exit}}
      - {id: call, send: {channels: [call], template: car_service_reminder}}

A step without ``id`` is named ``step<N>`` (from 1); after a step comes the next one (or ``next:``
another step's id); after the last one the person is done. A branch names what happened since the
person entered the journey: ``delivered`` (the last message), ``opened``, ``clicked``, ``replied``
(when such events are known), ``purchased``, ``opted_out``; its value is ``exit`` or a step id.
Every loop back must pass a wait, so that a run never turns in circles.
"""

from __future__ import annotations

from datetime import date, time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONDITIONS = ("delivered", "opened", "clicked", "replied", "purchased", "opted_out")
EXIT = "exit"


class SendStep(BaseModel):
    """Send through the contact policy: the first usable channel of ``channels``."""

    model_config = ConfigDict(extra="forbid")
    channels: list[Literal["email", "sms", "voice", "telegram", "call"]] = Field(min_length=1)
    template: str | None = None  # default: the journey's template


class WaitStep(BaseModel):
    """Wait ``days`` (and/or ``hours``), then until the time of day ``at`` in the customer's zone; or ``until`` a date."""

    model_config = ConfigDict(extra="forbid")
    days: int = Field(0, ge=0, le=3650)
    hours: int = Field(0, ge=0, le=24 * 365)
    at: time | None = None
    until: date | None = None

    @model_validator(mode="after")
    def _something(self) -> WaitStep:
        if not (self.days or self.hours or self.at or self.until):
            raise ValueError("a wait needs days, hours, at (a time of day) or until (a date)")
        return self


class Step(BaseModel):
    """One step: exactly one of ``send``, ``wait``, ``branch``."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=60)
    send: SendStep | None = None
    wait: WaitStep | None = None
    branch: dict[str, str] | None = None
    next: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if sum(part is not None for part in (self.send, self.wait, self.branch)) != 1:
            raise ValueError("a step is exactly one of send, wait or branch")
        return self

    @field_validator("branch")
    @classmethod
    def _conditions(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for condition in value or {}:
            if condition not in CONDITIONS:
                raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")
        return value

    @property
    def kind(self) -> str:
        return "send" if self.send else "wait" if self.wait else "branch"


def name_steps(steps: list[Step]) -> list[Step]:
    """Give every step an id (``step<N>``) and check the ids a step points to; ValueError naming the step."""
    named = [step if step.id else step.model_copy(update={"id": f"step{i + 1}"}) for i, step in enumerate(steps)]
    ids = [step.id for step in named]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two steps have the same id: {sorted({i for i in ids if ids.count(i) > 1})}")
    for step in named:
        for target in [step.next, *(step.branch or {}).values()]:
            if target is not None and target != EXIT and target not in ids:
                raise ValueError(f"step {step.id}: no step {target!r} (steps: {', '.join(ids)}; or exit)")
    _no_loop_without_wait(named)
    return named


def following(steps: list[Step], index: int) -> int | None:
    """The index of the step after ``steps[index]`` (its ``next``, else the one below); None after the last."""
    step = steps[index]
    if step.next is not None:
        return None if step.next == EXIT else position(steps, step.next)
    return index + 1 if index + 1 < len(steps) else None


def position(steps: list[Step], step_id: str) -> int:
    return next(i for i, step in enumerate(steps) if step.id == step_id)


def _no_loop_without_wait(steps: list[Step]) -> None:
    """Every way back to an earlier step passes a wait (else one run could loop forever)."""
    for start in range(len(steps)):
        seen, frontier = set(), [start]
        while frontier:
            index = frontier.pop()
            step = steps[index]
            if step.kind == "wait" or index in seen:
                continue
            seen.add(index)
            targets = [following(steps, index)] + [position(steps, t) for t in (step.branch or {}).values()
                                                     if t != EXIT]
            for target in targets:
                if target == start:
                    raise ValueError(f"step {steps[start].id} can come back to itself without a wait")
                if target is not None:
                    frontier.append(target)

"""Render messages in a second process, so rendering overlaps sending on a two-core machine.

    with RenderPool() as pool:
        pending = pool.submit("replenishment_reminder", "email", contexts)   # a Future
        ... send the previous chunk ...
        rendered = pending.result()

The worker keeps its own compiled templates (one Jinja environment per process).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from channels.base import Message
from channels.transports.mime import build_email
from channels.render.templates import Rendered, TemplateError, render


def _render_many(name: str, channel: str, contexts: list[dict[str, Any]], root: str | None, options: dict[str, Any]
                 ) -> list[Rendered | TemplateError]:
    results: list[Rendered | TemplateError] = []
    for context in contexts:
        try:
            results.append(render(name, channel, context, root=Path(root) if root else None, **options))
        except TemplateError as exc:
            results.append(exc)
    return results


def _email_messages(name: str, items: list[tuple[dict[str, Any], Message]], from_address: str, root: str | None,
                    options: dict[str, Any]) -> list[Message | TemplateError]:
    results: list[Message | TemplateError] = []
    for context, message in items:
        try:
            rendered = render(name, "email", context, root=Path(root) if root else None, **options)
        except TemplateError as exc:
            results.append(exc)
            continue
        message.subject, message.text, message.html = rendered.subject, rendered.text, rendered.html
        try:
            message.prebuilt = build_email(message, from_address)
        except Exception:  # noqa: BLE001 - the SMTP channel builds it again and rejects that message alone
            message.prebuilt = None
        results.append(message)
    return results


class RenderPool:
    """A process pool for rendering batches of messages (spawned: safe beside threads and event loops)."""

    def __init__(self, workers: int = 1, *, root: Path | None = None, sms_max_segments: int = 3,
                 sms_over_limit: str = "refuse") -> None:
        self.root = str(root) if root else None
        self.options = {"sms_max_segments": sms_max_segments, "sms_over_limit": sms_over_limit}
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, name: str, channel: str, contexts: list[dict[str, Any]]) -> Future:
        """Render ``contexts`` with template ``name`` for ``channel``; each result is Rendered or a TemplateError."""
        return self.pool.submit(_render_many, name, channel, contexts, self.root, self.options)

    def submit_emails(self, name: str, items: list[tuple[dict[str, Any], Message]], from_address: str) -> Future:
        """Render and build whole emails (addressed ``Message`` skeletons in, ready messages out)."""
        return self.pool.submit(_email_messages, name, items, from_address, self.root, self.options)

    def close(self) -> None:
        """Stop the worker."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

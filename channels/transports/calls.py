"""Manager calls as a channel: sending a "call" creates a task for a sales rep instead of a message.

The task itself (assignment, one open task per person, outcomes) is the sales capability; this
module is the channel contract: a ``TaskSink`` receives the rendered call script and returns the
task's id, which becomes the touch's provider id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from channels.base import Delivery, Message

TaskSink = Callable[[Message], Awaitable[str]]


class CallTaskChannel:
    """The ``call`` channel: hands each message (the call script) to a task sink."""

    name = "call"
    transport = "tasks"

    def __init__(self, sink: TaskSink) -> None:
        self.sink = sink

    async def open(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release."""

    async def send(self, message: Message) -> Delivery:
        """Create the call task; the task id is the provider id."""
        task_id = await self.sink(message)
        return Delivery(provider_id=task_id, status="queued", detail="call task created")

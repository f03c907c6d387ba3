"""Jobs admitted before they reach their queue: a held job is not published at all.

A job that may not run yet (its ordered group busy, its concurrency limit full) waits in
a lane of the state store instead of on its queue (`state.lanes`, decided by
`middleware.admission`), so it keeps its place and costs nothing while it waits. The
broker asks its gatekeeper at every enqueue of a job that is due (no delay: a delayed
job is asked when its time comes and the delay queue enqueues it), and publishes only
what is let through; `publish_admitted` publishes, later, what a lane lets through when
a holder lets go. A held job gets its enqueue hooks like a published one (its history
says it is queued).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import dramatiq
from dramatiq.common import q_name


class Gatekeeper(Protocol):
    def hold(self, broker: dramatiq.Broker, message: dramatiq.Message[Any]) -> bool:
        """Admit `message` through its gates (False: publish it now), or keep it waiting
        in its lane (True: it is stored there, body and all, and must not be published)."""

    def hold_many(self, broker: dramatiq.Broker,
                  messages: Sequence[dramatiq.Message[Any]]) -> list[bool]:
        """`hold` for each of `messages`, in order (in one round trip)."""


class Admitting:
    """Broker mixin: enqueue publishes only what the gatekeeper admits (see above)."""

    emit_before: Any
    emit_after: Any

    def __init__(self, *, gatekeeper: Gatekeeper | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gatekeeper = gatekeeper

    def asks(self, message: dramatiq.Message[Any], delay: int | None) -> bool:
        """Whether the gatekeeper is asked about `message`: a due job, not on a delay
        queue (a delayed one is asked when it comes due)."""
        return delay is None and self.gatekeeper is not None \
            and q_name(message.queue_name) == message.queue_name

    def held(self, message: dramatiq.Message[Any], delay: int | None) -> bool:
        """Whether the gatekeeper keeps `message` (prepared: see `prepare_held`) back."""
        if not self.asks(message, delay):
            return False
        assert self.gatekeeper is not None
        return self.gatekeeper.hold(self, message)  # type: ignore[arg-type]

    def held_many(self, messages: Sequence[dramatiq.Message[Any]],
                  delay: int | None) -> list[bool]:
        """`held` for each of `messages` (prepared), asked of the gatekeeper together."""
        asked = [i for i, message in enumerate(messages) if self.asks(message, delay)]
        held = [False] * len(messages)
        if asked:
            assert self.gatekeeper is not None
            answers = self.gatekeeper.hold_many(self, [messages[i] for i in asked])  # type: ignore[arg-type]
            for index, answer in zip(asked, answers, strict=True):
                held[index] = answer
        return held

    def prepare_held(self, message: dramatiq.Message[Any]) -> dramatiq.Message[Any]:
        """`message` as this broker stores it (the Redis broker's own id in its options)."""
        return message

    def another_delivery(self, message: dramatiq.Message[Any]) -> dramatiq.Message[Any]:
        """`message` to publish again (by a lane) while this delivery of it is still to be
        acked: on Redis it needs an id of its own, or the ack would delete the copy."""
        return message

    def enqueue(self, message: dramatiq.Message[Any], *,
                delay: int | None = None) -> dramatiq.Message[Any]:
        if delay is None and self.gatekeeper is not None:
            prepared = self.prepare_held(message)
            if self.held(prepared, delay):
                self.emit_before("enqueue", prepared, None)
                self.emit_after("enqueue", prepared, None)
                return prepared
        return super().enqueue(message, delay=delay)  # type: ignore[misc, no-any-return]

    def publish_admitted(self, bodies: Sequence[tuple[str, bytes]]) -> None:
        """Publish encoded messages a lane let through, on their queues (no enqueue hooks:
        they had theirs when they were held)."""
        raise NotImplementedError

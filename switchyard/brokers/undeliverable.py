"""Messages that cannot run reach Switchyard's dead letters at once, with their reason.

`AnswerEveryActor.get_actor` answers a name no family declares with a `StandIn` actor
that raises `UnknownJob` when run, and the stand-in for an undecodable body
(`switchyard.base.decoding`) with one that raises `Undecodable`: both fail permanently
through the normal pipeline (history, dead letters, metrics, one alert), on both brokers.
"""

from __future__ import annotations

from typing import Any

from switchyard.base.decoding import UNDECODABLE, Undecodable
from switchyard.base.errors import UnknownJob


class StandIn:
    """An actor for a name no family declares: running it dead-letters the message."""

    priority = 0

    def __init__(self, actor_name: str) -> None:
        self.actor_name = actor_name
        self.queue_name = ""
        self.options: dict[str, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        if self.actor_name == UNDECODABLE:
            raise Undecodable(str(kwargs.get("reason", "undecodable")), code="undecodable")
        raise UnknownJob(self.actor_name)


class AnswerEveryActor:
    """Broker mixin: `get_actor` answers unknown names with a `StandIn`."""

    actors: dict[str, Any]

    def get_actor(self, actor_name: str) -> Any:
        # Dramatiq's own looks the name up the same way (raising ActorNotFound), and
        # its middleware ask several times per job.
        actor = self.actors.get(actor_name)
        return actor if actor is not None else StandIn(actor_name)

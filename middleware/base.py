"""The base of every Switchyard middleware: Dramatiq's hooks and the ones Switchyard's
brokers add, each declared here with its contract.

A middleware overrides only the hooks it needs, declares the options it reads in
`actor_options`, and looks each up the Dramatiq way (`switchyard.base.outcome.option`:
message options, then actor options, then its default). It keeps its state in a store
of `state/` and holds only the hook. The brokers call a hook only on the middleware
that override it (`switchyard.brokers.dispatch`), so a declared hook costs nothing.
"""

from __future__ import annotations

import dramatiq
from dramatiq.broker import MessageProxy

from switchyard.base.hooks import declared_only


class Middleware(dramatiq.Middleware):
    """Dramatiq's middleware, plus the batch hooks of Switchyard's brokers (both brokers).

    Every hook runs on the thread that sends it; one that raises is logged and the
    middleware after it still run (as Dramatiq does for its after-hooks).
    """

    @declared_only
    def after_fetch(self, broker: dramatiq.Broker, messages: list[MessageProxy]) -> None:
        """A consumer fetched `messages` (in queue order) and will hand them to worker
        threads one at a time; none has started. On the consumer's thread, so it must
        not wait long: prepare per batch what would cost a round trip per job (the
        idempotency keys of the batch are taken here in one). The consumer sends it
        within `one_round_trip`: a lookup made with `switchyard.base.redis_client.later`
        travels with the other middleware's, its answer arriving once the hooks all ran
        (and before any of `messages` starts). Whatever it takes for a
        message it must give back in `after_unfetch`, or when that message's own
        after-hooks run."""

    @declared_only
    def after_unfetch(self, broker: dramatiq.Broker, messages: list[MessageProxy]) -> None:
        """Fetched `messages` go back to the broker without having started (the consumer
        closes, or requeues them): give back what `after_fetch` took for them. They are
        delivered again later, to this worker or another."""

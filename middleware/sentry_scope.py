"""Sentry scope per job: each run's breadcrumbs (its log lines, its HTTP calls) are its
own, so the event of a dead letter carries what that job did, and nothing of another's.

What sentry-sdk's Dramatiq integration did that Switchyard uses, and only that: it also
started an (unsampled) transaction for every message and put trace headers in every
message it enqueued, work and bytes on every job's path for events Switchyard drops
(`integrations.sentry.before_send`: the one event of a dead letter is
`middleware.dead_letter`'s). In the pipeline only when SENTRY_DSN is set.
"""

from __future__ import annotations

import sys
from typing import Any

from dramatiq import Broker
from dramatiq.broker import MessageProxy

from middleware.base import Middleware

#: Where a run's scope manager waits for the run's end, on the message proxy.
SCOPE = "_switchyard_sentry_scope"


class SentryScope(Middleware):
    """An isolation scope around each run (see the module doc)."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        sentry_sdk = sys.modules.get("sentry_sdk")
        if sentry_sdk is None:
            return
        manager = sentry_sdk.isolation_scope()
        scope = manager.__enter__()
        scope.clear_breadcrumbs()
        scope.set_tag("message_id", message.message_id)
        scope.set_tag("actor", message.actor_name)
        setattr(message, SCOPE, manager)

    def after_process_message(self, broker: Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        self._end(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._end(message)

    @staticmethod
    def _end(message: MessageProxy) -> None:
        manager = getattr(message, SCOPE, None)
        if manager is not None:
            delattr(message, SCOPE)
            manager.__exit__(None, None, None)

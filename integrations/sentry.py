"""Sentry: one event per dead letter, none per retried attempt, no payloads.

Dramatiq's Sentry integration stays on for its scopes and breadcrumbs, but the events
it sends for every failed attempt are dropped in `before_send`; the dead-letter
middleware sends the one event that matters. Message arguments and frame locals are kept
out of every event, since payloads hold personal data.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.integrations.logging import ignore_logger

from settings import Settings


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    for value in event.get("exception", {}).get("values", []):
        if value.get("mechanism", {}).get("type") == "dramatiq":
            return None  # a retried (or about to be dead-lettered) attempt
    data = event.get("contexts", {}).get("dramatiq", {}).get("data")
    if isinstance(data, dict):
        for name in ("args", "kwargs", "options"):
            data.pop(name, None)
    return event


def init(settings: Settings) -> bool:
    """Start Sentry when SENTRY_DSN is set; returns whether it did."""
    if settings.sentry_dsn is None:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment or settings.switchyard_env,
        release=settings.release,
        integrations=[DramatiqIntegration()],
        before_send=before_send,  # type: ignore[arg-type]
        # Frame locals hold job arguments (the worker's `args`, the actor's parameters).
        include_local_variables=False,
        max_request_body_size="never",
    )
    # The dead-letter middleware reports through capture_exception; its log line
    # must not become a second event.
    ignore_logger("switchyard.dead_letter")
    return True

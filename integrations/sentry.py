"""Sentry: one event per dead letter, none per retried attempt, no secrets, no payloads.

sentry-sdk's Dramatiq integration is not used: it started a transaction for every
message and put trace headers in every message enqueued, on every job's path, for the
events of failed attempts that Switchyard does not send. Each run gets its own scope
(`middleware.sentry_scope`, so a dead letter's event carries that job's breadcrumbs), and
the dead-letter middleware sends the one event that matters; `before_send` still drops
an event of a failed attempt and any message data, should one come. Frame locals are
kept out of every event, since payloads hold personal data.

Every event and breadcrumb then goes through `switchyard.base.redaction.scrub`: values under
secret or body keys (authorization, token, password, body, text, phone, email, ...) are
blanked, and tokens (the Telegram bot token in Bot API URLs, bearer tokens, provider
keys), email addresses and phone numbers are masked wherever they appear in text:
exception messages, log lines, the URLs of HTTP breadcrumbs.

Redis commands (the broker's and the state store's own traffic) are not recorded.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.integrations.redis import RedisIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

from switchyard.base.redaction import SECRET_KEYS, scrub
from switchyard.base.settings import Settings


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    for value in event.get("exception", {}).get("values", []):
        if value.get("mechanism", {}).get("type") == "dramatiq":
            return None  # a retried (or about to be dead-lettered) attempt
    data = event.get("contexts", {}).get("dramatiq", {}).get("data")
    if isinstance(data, dict):
        for name in ("args", "kwargs", "options"):
            data.pop(name, None)
    scrubbed: dict[str, Any] = scrub(event)
    return scrubbed


def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    scrubbed: dict[str, Any] = scrub(crumb)
    return scrubbed


def init(settings: Settings) -> bool:
    """Start Sentry when SENTRY_DSN is set; returns whether it did."""
    if settings.sentry_dsn is None:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment or settings.switchyard_env,
        release=settings.release,
        # Enabled by default, it records (and `before_breadcrumb` scrubs) a breadcrumb for
        # every Redis command: the broker's and the state store's own traffic, a dozen per
        # job, which halved a worker's rate and tells an error's reader nothing.
        disabled_integrations=[RedisIntegration()],
        before_send=before_send,  # type: ignore[arg-type]
        before_breadcrumb=before_breadcrumb,  # type: ignore[arg-type]
        event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + sorted(SECRET_KEYS),
                                     recursive=True),
        # Frame locals hold job arguments (the worker's `args`, the actor's parameters).
        include_local_variables=False,
        max_request_body_size="never",
    )
    # The dead-letter middleware reports through capture_exception; its log line
    # must not become a second event.
    ignore_logger("switchyard.dead_letter")
    return True

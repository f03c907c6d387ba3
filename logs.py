"""Logging for every Switchyard process: ids in logs, never payloads.

Dramatiq prints a message as `actor(args...)`, and payloads hold phone numbers, emails
and tokens; `redact_messages` makes it print `actor[message_id]` instead. Dramatiq's
worker also logs an ERROR with a traceback for every failed attempt; the retry policy
logs one WARNING per retry and the dead letter one ERROR with the traceback, so the
worker's per-attempt lines are dropped.
"""

from __future__ import annotations

import logging

import dramatiq

#: Records of Dramatiq's worker thread that Switchyard's own lines replace.
_REPLACED = ("Failed to process message", "Message %s was skipped.")


def _message_label(self: dramatiq.Message) -> str:  # type: ignore[type-arg]
    return f"{self.actor_name}[{self.message_id}]"


class _DropPerAttemptLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_REPLACED))


def redact_messages() -> None:
    """Make Dramatiq log message ids instead of message arguments."""
    dramatiq.Message.__str__ = _message_label  # type: ignore[method-assign]


def quiet_worker_failures() -> None:
    worker_logger = logging.getLogger("dramatiq.worker.WorkerThread")
    if not any(isinstance(f, _DropPerAttemptLines) for f in worker_logger.filters):
        worker_logger.addFilter(_DropPerAttemptLines())


def quiet_http_clients() -> None:
    """httpx logs every request's URL at INFO, and Bot API URLs carry the bot token."""
    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)


def setup(level: int | None = None) -> None:
    """Install the redaction and filters; with `level`, also log to stderr at that level."""
    redact_messages()
    quiet_worker_failures()
    quiet_http_clients()
    if level is not None:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

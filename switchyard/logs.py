"""Logging for every Switchyard process: ids in logs, never payloads.

Dramatiq formats a message as `actor(args...)` wherever it logs one, and each actor
logs its arguments at DEBUG; payloads hold phone numbers, emails and tokens. A log
record factory (the standard library's public hook) replaces every message in a
record's arguments by `actor[message_id]`, and an actor's argument line by a note, in
every logger, before any handler sees the record. Dramatiq's worker also logs an ERROR
with a traceback for every failed attempt; the retry policy logs one WARNING per retry
and the dead letter one ERROR with the traceback, so the worker's lines are dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

from switchyard.compat import ACTOR_ARGUMENTS_LINE, WORKER_FAILURE_LINES


def label(message: dramatiq.Message[Any] | MessageProxy) -> str:
    """How a message appears in logs: `actor[message_id]`."""
    return f"{message.actor_name}[{message.message_id}]"


def redact_record(record: logging.LogRecord) -> None:
    """Replace the messages and job arguments a record would print."""
    if isinstance(record.msg, str) and record.msg.startswith(ACTOR_ARGUMENTS_LINE):
        record.msg, record.args = "Received a job (its arguments are not logged).", ()
    elif isinstance(record.args, tuple) and any(
            isinstance(arg, dramatiq.Message | MessageProxy) for arg in record.args):
        record.args = tuple(label(arg) if isinstance(arg, dramatiq.Message | MessageProxy)
                            else arg for arg in record.args)


def install_record_factory() -> None:
    """Make every log record of this process go through `redact_record` (once)."""
    base = logging.getLogRecordFactory()
    if getattr(base, "redacts_payloads", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        redact_record(record)
        return record

    factory.redacts_payloads = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class _DropPerAttemptLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(WORKER_FAILURE_LINES))


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
    install_record_factory()
    quiet_worker_failures()
    quiet_http_clients()
    if level is not None:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

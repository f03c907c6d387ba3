"""Logging for every Switchyard process: ids in logs, never payloads.

Dramatiq formats a message as `actor(args...)` wherever it logs one, and each actor
logs its arguments at DEBUG; payloads hold phone numbers, emails and tokens. A log
record factory (the standard library's public hook) replaces every message in a
record's arguments by `actor[message_id]`, and an actor's argument line by a note, in
every logger, before any handler sees the record. Dramatiq's worker also logs an ERROR
with a traceback for every failed attempt; the retry policy logs one WARNING per retry
and the dead letter one ERROR with the traceback, so the worker's lines are dropped.

A loop that fails the same way (every consumer restarting against a Redis that stopped
answering, a heartbeat, a flusher) would log the same line many times a second.
`Repeats`, a filter on the root logger's handlers (those added later too) and on
`logging.lastResort`, lets one record per logger, level and message template through
per interval; the next one after it says how many were held back. Records logged
while a job runs name that job (its retries, its dead letter) and always pass.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage

from switchyard.compat import ACTOR_ARGUMENTS_LINE, WORKER_FAILURE_LINES

#: How often (ms) a repeated log line is let through, with the count of those held back.
DEFAULT_REPEAT_INTERVAL = 60_000
#: Distinct lines remembered at most; past it, those whose interval is over are forgotten.
MAX_REMEMBERED = 1_000
#: Dramatiq's warning that an actor's result "has been discarded": Switchyard's history
#: keeps every result, and its worker misses our Results middleware (it checks the
#: exact class, not a subclass), so the line is wrong here.
RESULT_DISCARDED_LINE = "returned a value that is not None"
#: The loggers that warn so: the worker thread and the Results middleware.
RESULT_DISCARDED_LOGGERS = ("dramatiq.worker.WorkerThread", "dramatiq.results.middleware.Results")
#: A logger name's per-instance part, as in Dramatiq's `ConsumerThread(<queue>)`.
_INSTANCE = re.compile(r"\(.*\)$")
#: The record attribute that holds a `Repeats` decision (True: held back).
_HELD = "switchyard_held_back"


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
        hold_back_repeats()  # on root handlers added since the last record, too
        return record

    factory.redacts_payloads = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


@dataclass
class _Seen:
    since: float
    held: int = 0


class Repeats(logging.Filter):
    """Lets a line through once per `interval_ms`; decides once per record, however many
    handlers it has. Lines logged while a job runs always pass."""

    def __init__(self, interval_ms: int = DEFAULT_REPEAT_INTERVAL) -> None:
        super().__init__()
        self.interval = interval_ms / 1000
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        held = getattr(record, _HELD, None)
        if held is None:
            held = not self.admit(record)
            setattr(record, _HELD, held)
        return not held

    def admit(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or CurrentMessage.get_current_message() is not None:
            return True
        key = (_INSTANCE.sub("", record.name), record.levelno, record.msg)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.since < self.interval:
                seen.held += 1
                return False
            if len(self._seen) >= MAX_REMEMBERED:
                self._forget(now)
            self._seen[key] = _Seen(now)
        if seen is not None and seen.held:
            record.msg += (f" [{seen.held} more like this in the last "
                           f"{now - seen.since:.0f}s not shown]")
        return True

    def _forget(self, now: float) -> None:
        self._seen = {k: v for k, v in self._seen.items() if now - v.since < self.interval}
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen.clear()


#: The process's one `Repeats`, shared by every handler it is installed on.
repeats = Repeats()


def hold_back_repeats() -> None:
    """Install `repeats` on the root logger's handlers and on `logging.lastResort` (where
    records go when there are none). A handler that writes to memory is left alone: a
    flood costs nothing there, and tests count what it holds."""
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for handler in handlers:
        if handler is None or repeats in handler.filters:
            continue
        if isinstance(getattr(handler, "stream", None), io.StringIO):
            continue
        handler.addFilter(repeats)


class _DropPerAttemptLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(WORKER_FAILURE_LINES))


class _DropResultDiscarded(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and RESULT_DISCARDED_LINE in record.msg)


def quiet_worker_failures() -> None:
    worker_logger = logging.getLogger("dramatiq.worker.WorkerThread")
    if not any(isinstance(f, _DropPerAttemptLines) for f in worker_logger.filters):
        worker_logger.addFilter(_DropPerAttemptLines())


def quiet_result_warnings() -> None:
    """Drop the "value has been discarded" warnings (see `RESULT_DISCARDED_LINE`)."""
    for name in RESULT_DISCARDED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropResultDiscarded) for f in logger.filters):
            logger.addFilter(_DropResultDiscarded())


def quiet_http_clients() -> None:
    """httpx logs every request's URL at INFO, and Bot API URLs carry the bot token."""
    for name in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)


def setup(level: int | None = None) -> None:
    """Install the redaction and filters; with `level`, also log to stderr at that level."""
    install_record_factory()
    quiet_worker_failures()
    quiet_result_warnings()
    quiet_http_clients()
    if level is not None:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    hold_back_repeats()

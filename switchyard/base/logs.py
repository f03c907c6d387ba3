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

With LOG_FORMAT=json every line is one JSON object (`JsonFormatter`, python-json-logger's
formatter with a fixed set of fields): time, level, logger, message, the job's fields
while one runs (`job_fields`), and `exc`. It formats the records the factory already
redacted, behind the same filters, and also masks secrets and personal data in the
message and the traceback (`switchyard.base.redaction.scrub_text`); a record's extra
attributes are never written, since a caller could pass a payload there.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import CurrentMessage
from pythonjsonlogger.json import JsonFormatter as LibraryJsonFormatter

from switchyard.base import tracecontext
from switchyard.base.compat import ACTOR_ARGUMENTS_LINE, WORKER_FAILURE_LINES
from switchyard.base.outcome import running
from switchyard.base.redaction import scrub, scrub_text

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
#: LOG_FORMAT's values.
LogFormat = Literal["text", "json"]
#: Loggers that write through handlers of their own instead of the root's: gunicorn's,
#: and uvicorn's (gunicorn's uvicorn workers give them gunicorn's handlers).
SERVER_LOGGERS = ("gunicorn.error", "gunicorn.access", "uvicorn", "uvicorn.error",
                  "uvicorn.access")


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
        if _json_formatter is not None:
            format_as_json()
        return record

    factory.redacts_payloads = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def job_fields() -> dict[str, Any]:
    """What a line logged while a job runs says about it (nothing outside a job): its
    message id, actor, queue and attempt (retries + 1), and with tracing on the id of
    the trace its run belongs to. The one place a line's context is gathered."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return {}
    outcome = running(message.message_id)  # the attempt as it began (see Outcome)
    attempt = outcome.attempt if outcome else int(message.options.get("retries") or 0) + 1
    fields: dict[str, Any] = {"message_id": message.message_id, "actor": message.actor_name,
                              "queue": q_name(message.queue_name), "attempt": attempt}
    trace_id = tracecontext.trace_id()
    if trace_id is not None:
        fields["trace_id"] = trace_id
    return fields


class JsonFormatter(LibraryJsonFormatter):
    """One JSON object per line: `time` (ISO 8601, UTC), `level`, `logger`, `message`,
    `job_fields()`, and `exc` (the traceback) when there is one; secrets masked."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        created = datetime.fromtimestamp(record.created, UTC)
        text = str(scrub(record.msg)) if isinstance(record.msg, dict) else record.getMessage()
        log_data.update(time=created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                        level=record.levelname, logger=record.name, message=scrub_text(text))
        log_data.update(job_fields())
        for field, name in (("exc_info", "exc"), ("stack_info", "stack")):
            if message_dict.get(field):
                log_data[name] = scrub_text(str(message_dict[field]))


#: Handlers given the JSON formatter, with the formatter each had before.
_adopted: weakref.WeakKeyDictionary[logging.Handler, logging.Formatter | None] = (
    weakref.WeakKeyDictionary())
_json_formatter: JsonFormatter | None = None


def _output_handlers() -> list[logging.Handler]:
    """The handlers that write this process's lines: the root logger's, the servers'
    (`SERVER_LOGGERS`) and `logging.lastResort`. One writing to memory is not an output
    (tests count what it holds)."""
    found = [*logging.getLogger().handlers, logging.lastResort]
    found += [h for name in SERVER_LOGGERS for h in logging.getLogger(name).handlers]
    return [h for h in dict.fromkeys(found)
            if h is not None and not isinstance(getattr(h, "stream", None), io.StringIO)]


def format_as_json() -> None:
    """Give every output handler the JSON formatter (those added since, too: the record
    factory calls this while JSON is on)."""
    global _json_formatter
    if _json_formatter is None:
        _json_formatter = JsonFormatter()
    for handler in _output_handlers():
        if handler not in _adopted:
            _adopted[handler] = handler.formatter
            handler.setFormatter(_json_formatter)


def format_as_text() -> None:
    """Give the handlers `format_as_json` changed their formatters back."""
    global _json_formatter
    for handler, formatter in list(_adopted.items()):
        handler.setFormatter(formatter)
    _adopted.clear()
    _json_formatter = None


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


def setup(level: int | None = None, log_format: LogFormat = "text") -> None:
    """Install the redaction and filters, and the lines' format (LOG_FORMAT); with
    `level`, also log to stderr at that level."""
    install_record_factory()
    quiet_worker_failures()
    quiet_result_warnings()
    quiet_http_clients()
    if level is not None:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    if log_format == "json":
        format_as_json()
    else:
        format_as_text()
    hold_back_repeats()

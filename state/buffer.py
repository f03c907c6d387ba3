"""Buffered state-store writes, flushed in one pipeline per interval.

History and metrics do not need to be synchronous: each hook appends a small function
that adds commands to a pipeline, or keeps its own aggregate that a *source* drains
into one write at flush time, and one background thread flushes them every
`interval_ms` (and on shutdown). A *lazy* source, whose writes lose nothing by waiting
(the metrics' and the timeline's counts, retention's trims), is drained by that thread
and by `flush()`, not by the flushes a caller waits on (a worker's acks and releases, an
enqueue's record): a busy process sends them once per interval, not with every job.
A failed flush keeps the writes for the next one, up to `max_pending`, so a Redis blip
delays them instead of losing them.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from switchyard.base.perprocess import PerProcess
from switchyard.base.redis_client import execute_loading

logger = logging.getLogger(__name__)

#: Adds its commands to a pipeline. One with an `answer` attribute has it called with
#: the replies of those commands once they are written (never when Redis did not answer).
Write = Callable[[Any], None]
#: Called at each flush; returns one write covering everything it aggregated, or None.
Source = Callable[[], Write | None]

#: Writes kept while the state store does not answer; older ones are dropped past this.
DEFAULT_MAX_PENDING = 100_000


@dataclass
class _Ticket:
    """A caller of `flush_or_raise`: its staged commands, then its replies or error."""

    staged: Any
    replies: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


def _append(pipe: Any, staged: Any) -> None:
    """`staged`'s commands (and its scripts, for `execute_loading`) onto `pipe`."""
    offset = len(pipe.command_stack)
    scripts = staged.__dict__.get("switchyard_scripts")
    if scripts:
        mine = pipe.__dict__.setdefault("switchyard_scripts", {})
        for index, script in scripts.items():
            mine[offset + index] = script
    pipe.command_stack.extend(staged.command_stack)


class WriteBuffer:
    """Collects pipeline writes and flushes them from one thread per process."""

    def __init__(
        self, client: redis.Redis, *, interval_ms: int, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self.client = client
        self.interval = interval_ms / 1000
        self.max_pending = max_pending
        self._pending: list[Write] = []
        #: Callers of `flush_or_raise` waiting for the next flush (group commit).
        self._tickets: list[_Ticket] = []
        self._sources: list[Source] = []
        #: Lazy sources: drained by the interval's flush and `flush()` only.
        self._lazy_sources: list[Source] = []
        self._lock = threading.Lock()
        # One flush at a time: two threads flushing at once (the flusher and a caller of
        # flush()) could write a job's later update before its earlier one.
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        # A forked child inherits the buffer but not its thread: one flusher per process.
        self._thread = PerProcess(self._start_thread)
        self._closed = False

    def add(self, write: Write) -> None:
        with self._lock:
            self._pending.append(write)
            if len(self._pending) > self.max_pending:
                del self._pending[: len(self._pending) - self.max_pending]
                logger.warning("State store writes backing up; dropped the oldest.")
        self._ensure_thread()

    def add_source(self, source: Source, *, lazy: bool = False) -> None:
        """`source` is drained at each flush; a `lazy` one (its writes lose nothing by
        waiting) only at the interval's and at `flush()` (see the module docstring)."""
        (self._lazy_sources if lazy else self._sources).append(source)

    def wake_soon(self) -> None:
        """A source has something: make sure the flushing thread runs in this process."""
        self._ensure_thread()

    def flush(self, *, everything: bool = True) -> None:
        """Write everything pending now; keep it for the next flush if Redis fails.
        Not `everything`: the lazy sources wait for the interval's flush."""
        with self._flushing:
            self._flush(everything=everything)

    def flush_or_raise(self, then: Write | None = None) -> list[Any]:
        """`flush`, raising Redis's error when it does not answer (the writes are kept):
        for a caller that must not go on until they are written. `then` adds the
        caller's own commands after the writes, in the same round trip (a fetch's acks,
        a release): their replies are returned, errors among them as values.

        Group commit: callers that come while a flush is on the wire are served
        together by the next one, each one's commands (queued by `then` in its own
        thread) after the writes, so N threads finishing at once cost one round trip
        more, not N."""
        staged = None
        if then is not None:
            staged = self.client.pipeline(transaction=False)
            then(staged)  # in the caller's thread: its thread-locals apply
        ticket = _Ticket(staged)
        with self._lock:
            self._tickets.append(ticket)
        with self._flushing:
            if not ticket.done:
                with self._lock:
                    tickets, self._tickets = self._tickets, []
                self._serve(tickets)
        if ticket.error is not None:
            raise ticket.error
        return ticket.replies

    def _serve(self, tickets: list[_Ticket]) -> None:
        """One flush for `tickets`, each given its replies or the error."""
        try:
            replies = self._flush(strict=True, staged=[t.staged for t in tickets],
                                  everything=False)
        except Exception as error:
            for ticket in tickets:
                ticket.error, ticket.done = error, True
            return
        for ticket, own in zip(tickets, replies, strict=True):
            ticket.replies, ticket.done = own, True

    def _take(self, everything: bool) -> list[Write]:
        with self._lock:
            pending, self._pending = self._pending, []
        for source in (*self._sources, *self._lazy_sources) if everything else self._sources:
            write = source()
            if write is not None:
                pending.append(write)
        return pending

    def _flush(self, *, strict: bool = False, staged: Sequence[Any | None] = (),
               everything: bool = True) -> list[list[Any]]:
        """Write what is pending (the lazy sources' too if `everything`), then each of
        `staged` (pipelines holding a caller's commands), in one round trip; the replies
        of each of `staged`."""
        pending = self._take(everything)
        if not pending and not any(s is not None and s.command_stack for s in staged):
            return [[] for _ in staged]
        bounds: list[tuple[int, int]] = []
        try:
            pipe = self.client.pipeline(transaction=False)
            answers: list[tuple[Callable[[list[Any]], None], int, int]] = []
            for write in pending:
                start = len(pipe.command_stack)
                write(pipe)
                answer = getattr(write, "answer", None)
                if answer is not None:
                    answers.append((answer, start, len(pipe.command_stack)))
            own = len(pipe.command_stack)
            for commands in staged:
                start = len(pipe.command_stack)
                if commands is not None:
                    _append(pipe, commands)
                bounds.append((start, len(pipe.command_stack)))
            replies = execute_loading(pipe, raise_on_error=False)
        except redis.RedisError as error:  # Redis did not answer: keep them for the next
            if pending:
                logger.warning("Could not flush %d state writes: %s", len(pending), error)
                with self._lock:
                    self._pending[:0] = pending
            if strict:
                raise
            return [[] for _ in staged]
        # A write Redis refused is reported, not kept: it ran with the others, and
        # sending them again would apply those twice.
        failed = [r for r in replies[:own] if isinstance(r, Exception)]
        if failed:
            logger.warning("%d state writes failed: %s", len(failed), failed[0])
        for answer, start, end in answers:
            try:
                answer(replies[start:end])
            except Exception:  # a reader's bug must not undo the flush
                logger.exception("A state write's answer could not be read.")
        return [replies[start:end] for start, end in bounds]

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.reset(lambda thread: thread.join(timeout=5))
        self.flush()

    def _ensure_thread(self) -> None:
        if not self._closed:
            self._thread.get()

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="switchyard-flush", daemon=True)
        thread.start()
        atexit.register(self.flush)
        return thread

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            try:
                self.flush()
            except Exception:  # a bug here must not kill the flusher
                logger.exception("State store flush failed.")

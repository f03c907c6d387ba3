"""Run now: a scheduled or retrying job a user asked to run now is made due at once.

The marks and their announcement are `state.run_now`'s. Each worker process listens: the
one holding the delayed message in a consumer's delay queue makes it due there
(`switchyard.base.compat.make_due`), and its consumer enqueues it at its next turn, as
any message whose time came (the job's history says `queued`). A request heard while
the message is between the broker and the delay queue is tried again once a moment
later; a message fetched after the request meets its mark (`after_fetch`, one round
trip per fetched batch holding delayed messages). Either way the mark is taken away:
the job's next retry keeps its own delay.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import redis
from dramatiq import Broker, Worker
from dramatiq.broker import MessageProxy

from middleware.base import Middleware
from state.run_now import RunNow as RunNowMarks
from switchyard.base import compat

logger = logging.getLogger("switchyard.run_now")

#: How long after a request heard before its message reached a delay queue the worker
#: looks again (s).
LOOK_AGAIN_S = 0.25


class RunNow(Middleware):
    """Hurry delayed jobs asked to run now (see the module doc)."""

    def __init__(self, store: RunNowMarks) -> None:
        self.store = store
        self._worker: Any = None
        self._stop = threading.Event()

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._worker = worker
        self._stop.clear()
        self.store.announcements.start(lambda data: self._heard(_text(data)), self._stop,
                                       "switchyard-run-now")

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()

    def after_fetch(self, broker: Broker, messages: list[MessageProxy]) -> None:
        delayed = [m for m in messages if m.options.get("eta") is not None]
        if not delayed:
            return
        try:
            hurried = self.store.take([m.message_id for m in delayed])
        except redis.RedisError as error:  # the announcement, or its own time, runs it
            logger.debug("Could not look delayed jobs up for run-now requests: %s", error)
            return
        now = int(time.time() * 1000)
        for message in delayed:
            if message.message_id in hurried:
                message.options["eta"] = now
                logger.info("Running %s (%s) now, as asked.", message.message_id,
                            message.actor_name)

    def _heard(self, message_id: str, again: bool = True) -> None:
        if self._worker is not None and compat.make_due(self._worker, message_id,
                                                        int(time.time() * 1000)):
            logger.info("Running %s now, as asked.", message_id)
            with contextlib.suppress(redis.RedisError):
                self.store.taken(message_id)
        elif again:  # it may be on its way from the broker to a delay queue
            timer = threading.Timer(LOOK_AGAIN_S, self._heard, args=(message_id, False))
            timer.daemon = True
            timer.start()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

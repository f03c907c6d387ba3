"""Leases held in Redis by running jobs, renewed while the job runs.

Idempotency locks and concurrency slots are leases: they expire `lease_ms` after the
last renewal, so a worker that dies (SIGKILL, lost host) frees them within one lease.
One thread per process renews every held lease each `lease_ms / 3`, in one pipeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from switchyard.base.perprocess import PerProcess
from switchyard.base.redis_client import execute_loading

logger = logging.getLogger(__name__)

Renew = Callable[[Any], None]


class LeaseKeeper:
    """Renews registered leases in one pipeline per tick until they are dropped."""

    def __init__(self, client: redis.Redis, *, lease_ms: int) -> None:
        self.client = client
        self.lease_ms = lease_ms
        self._held: dict[str, Renew] = {}
        self._lock = threading.Lock()
        self._thread = PerProcess(self._start_thread)

    def hold(self, name: str, renew: Renew) -> None:
        """Renew `name` with `renew(pipe)` until it is dropped."""
        with self._lock:
            self._held[name] = renew
        self._thread.get()

    def drop(self, name: str) -> None:
        with self._lock:
            self._held.pop(name, None)

    def renew_all(self) -> None:
        with self._lock:
            renewals = list(self._held.values())
        if not renewals:
            return
        pipe = self.client.pipeline(transaction=False)
        for renew in renewals:
            renew(pipe)
        execute_loading(pipe)

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="switchyard-leases", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.lease_ms / 3000):
            try:
                self.renew_all()
            except redis.RedisError as error:
                logger.warning("Could not renew job leases: %s", error)

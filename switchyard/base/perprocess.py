"""A value that belongs to one process: rebuilt in a forked child, never shared with it.

Pooled clients, database engines and background threads do not survive a fork: the
child inherits the parent's sockets (sharing them corrupts both) and none of its
threads. `PerProcess` builds the value on first use in each process and closes it only
in the process that built it.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: This process's pid, refreshed in a forked child before it runs anything: `get()`,
#: on every job's hot path, compares it instead of making a getpid system call.
_pid = os.getpid()
#: Random per process (a forked child draws its own), for `unique()`.
_nonce = uuid.uuid4().hex[:10]
_sequence = itertools.count()


def _forked() -> None:
    global _pid, _nonce, _sequence
    _pid, _nonce, _sequence = os.getpid(), uuid.uuid4().hex[:10], itertools.count()


def unique() -> str:
    """A string no other call returns, in any process on any host: this process's random
    nonce and a counter (no system call, unlike `uuid4`, on every job's path)."""
    return f"{_nonce}{next(_sequence):x}"


os.register_at_fork(after_in_child=_forked)


class PerProcess(Generic[T]):
    """`get()` builds the value once per process with `build`; `reset()` drops it."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is not None and self._pid == _pid:  # the common case, lock-free
            return value
        with self._lock:
            if self._value is None or self._pid != os.getpid():
                self._value = self._build()
                self._pid = os.getpid()
            return self._value

    def reset(self, close: Callable[[T], None] | None = None) -> None:
        """Forget the value, closing it with `close` if this process built it."""
        with self._lock:
            value, self._value = self._value, None
            if value is not None and close is not None and self._pid == os.getpid():
                close(value)

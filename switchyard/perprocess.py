"""A value that belongs to one process: rebuilt in a forked child, never shared with it.

Pooled clients, database engines and background threads do not survive a fork: the
child inherits the parent's sockets (sharing them corrupts both) and none of its
threads. `PerProcess` builds the value on first use in each process and closes it only
in the process that built it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """`get()` builds the value once per process with `build`; `reset()` drops it."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is not None and self._pid == os.getpid():  # the common case, lock-free
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

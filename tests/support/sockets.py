"""Waiting on sockets without `select.select`, which refuses descriptors above 1023 (a
long test session in one process opens more than that)."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterable

EVENTS = select.POLLIN | select.POLLHUP | select.POLLERR


def readable(sockets: Iterable[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets of `sockets` with something to read (or closed), within `timeout` s."""
    poller = select.poll()
    by_fd: dict[int, socket.socket] = {}
    for sock in sockets:
        fd = sock.fileno()
        if fd >= 0:  # closed meanwhile: nothing to wait for
            poller.register(fd, EVENTS)
            by_fd[fd] = sock
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000) if fd in by_fd]

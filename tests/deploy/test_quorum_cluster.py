"""RabbitMQ quorum queues on a three-node cluster: a node lost mid-stream loses nothing.

A cluster started here (three independent nodes on loopback, one Erlang cookie); a
worker process and a producer in this process with RABBITMQ_QUEUE_TYPE=quorum and a
BROKER_URL naming every node. The node they are connected to, which leads the job
queue, is SIGKILLed while jobs flow: the other two elect a new leader, the producer
and the worker reconnect to them, and every job the producer saw confirmed runs, none
twice (each run counted in a ledger on the suite's Redis, by message id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest
import redis

from switchyard import boot as runtime
from switchyard.ingress import bridge
from switchyard.ingress import dead_copies as ingress_dead
from tests.support.cluster import Producer, RabbitCluster, ledger_runs
from tests.support.jobs import send
from tests.support.processes import WorkerProcesses
from tests.support.waiting import wait_for

#: Jobs in the stream; the node is killed after a third of them.
JOBS = 300
#: Longest the test waits for the stream to settle after the kill (s).
SETTLE_TIMEOUT = 90


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    nodes = RabbitCluster(3)
    try:
        yield nodes
    finally:
        nodes.stop()


def test_the_job_queues_are_quorum_queues_on_every_node(
    cluster: RabbitCluster, make_settings: Callable[..., Any], queue: str,
) -> None:
    # given a Switchyard on the cluster with RABBITMQ_QUEUE_TYPE=quorum
    sy = runtime.build(make_settings(broker_url=cluster.broker_url,
                                     rabbitmq_queue_type="quorum"))
    try:
        # when it sends a job (Dramatiq declares a queue at its first use)
        send(sy, queue, "record")

        # then the queue, its delay queue and its dead-letter queue are quorum queues
        # with the delivery limit, seen from another node
        listed = cluster.listing(1, "name", "type", "arguments")
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            assert f"{name}\tquorum" in listed, listed
        main_line = next(line for line in listed.splitlines() if line.startswith(f"{queue}\t"))
        assert '{"x-delivery-limit",20}' in main_line
    finally:
        sy.close()


def test_the_bridge_declares_quorum_ingress_queues_that_dead_letter_to_their_family(
    cluster: RabbitCluster,
) -> None:
    # given the bridge's declarations with RABBITMQ_QUEUE_TYPE=quorum
    connection = pika.BlockingConnection(pika.URLParameters(cluster.url(0)))
    try:
        channel = connection.channel()
        bridge.declare(connection, channel, "quorum", 20)

        # then each ingress queue is a quorum queue that dead-letters past the limit
        # to its family's `<family>.dead`, itself a quorum queue
        listed = cluster.listing(2, "name", "type", "arguments")
        media = next(line for line in listed.splitlines()
                     if line.startswith("switchyard.ingress.media\t"))
        assert "\tquorum\t" in media
        assert '{"x-dead-letter-routing-key","media.dead"}' in media
        assert '{"x-delivery-limit",20}' in media
        assert "media.dead\tquorum" in listed

        # and a dead letter published there later declares it alike (no 406)
        channel.confirm_delivery()
        record = {"message_id": "m-1", "actor": "process_image", "failed_at": 1,
                  "reason": {"message": "bad"}, "message": {"kwargs": {}}}
        ingress_dead.publish(channel, "media.image", record, "quorum")
        assert channel.queue_declare("media.dead", passive=True).method.message_count == 1
    finally:
        connection.close()


def test_a_node_lost_mid_stream_loses_nothing_and_runs_nothing_twice(
    cluster: RabbitCluster, test_env: dict[str, str], redis_url: str, state: redis.Redis,
    make_settings: Callable[..., Any], prefix: str, queue: str,
) -> None:
    # given a worker and a producer on quorum queues, connected to node 0 first
    quorum = {"BROKER_URL": cluster.broker_url, "RABBITMQ_QUEUE_TYPE": "quorum",
              "IDEMPOTENCY_LEASE_MS": "1000"}
    workers = WorkerProcesses({**test_env, **quorum, "TEST_QUEUE": queue,
                               "LEDGER_URL": redis_url, "LEDGER_PREFIX": prefix},
                              module="tests.support.cluster")
    sy = runtime.build(make_settings(**{k.lower(): v for k, v in quorum.items()}))
    runs_key = f"{prefix}:runs"
    try:
        workers.start(THREADS="4")
        producer = Producer(sy, queue, JOBS, timeout=SETTLE_TIMEOUT)
        producer.start()
        wait_for(lambda: len(producer.acknowledged) >= JOBS // 3, timeout=60,
                 what="a third of the stream sent")

        # when node 0 is SIGKILLed mid-stream
        cluster.kill_node(0)
        sent_before_kill = len(producer.acknowledged)

        # then the producer carries on against the other nodes
        producer.join(SETTLE_TIMEOUT)
        assert not producer.is_alive() and len(producer.acknowledged) == JOBS
        assert len(producer.acknowledged) > sent_before_kill

        # and every confirmed job ran exactly once
        wait_for(lambda: all(state.hexists(runs_key, i) for i in producer.acknowledged),
                 timeout=SETTLE_TIMEOUT, interval=0.2, what="every confirmed job to run")
        runs = ledger_runs(state, runs_key, timeout=SETTLE_TIMEOUT)
        lost = [i for i in producer.acknowledged if i not in runs]
        twice = [i for i, n in runs.items() if n > 1]
        print(f"\nQuorum queues, node 0 of 3 killed: {JOBS} enqueues confirmed "
              f"({producer.failures} failed sends retried), {len(lost)} lost, "
              f"{len(twice)} run twice")
        assert (lost, twice) == ([], [])
    finally:
        workers.stop_all()
        sy.close()

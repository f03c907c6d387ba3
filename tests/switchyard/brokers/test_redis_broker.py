"""The Redis broker's doorbell: idle workers start jobs at once, and nothing is lost."""

from __future__ import annotations

import itertools
import logging
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from switchyard.brokers.redis_broker import DoorbellRedisBroker
from switchyard.runtime.app import App
from tests.support.jobs import send
from tests.support.processes import WorkerProcesses, stop
from tests.support.waiting import wait_for

REDIS_ONLY = pytest.mark.parametrize("broker_kind", ["redis"])
#: Dramatiq's default worker timeout: the longest its Redis consumer sleeps between polls.
POLL_INTERVAL = 1.0
#: A worker timeout long enough that a job found by polling alone would be seconds late.
LONG_POLL_MS = 4_000


def doorbell_of(sy: App) -> DoorbellRedisBroker:
    assert isinstance(sy.broker, DoorbellRedisBroker)
    return sy.broker


def waiting_on_doorbell(sy: App, queue: str) -> bool:
    """Some consumer of `queue` is blocked on its doorbell right now (per CLIENT LIST)."""
    name = doorbell_of(sy).doorbell_key(queue)
    return any(client.get("name") == name and "b" in client.get("flags", "")
               for client in sy.state.client.client_list())


def stored_messages(sy: App, queue: str) -> int:
    """Messages Redis still holds for `queue`: waiting, delayed, or fetched but not acked."""
    broker = doorbell_of(sy)
    return sum(int(broker.client.hlen(f"{broker.namespace}:{name}.msgs"))
               for name in (queue, f"{queue}.DQ"))


@pytest.fixture
def default_worker(build_switchyard: Any) -> Iterator[Any]:
    """Start an in-process Worker with Dramatiq's default worker timeout (1 s)."""
    workers: list[dramatiq.Worker] = []

    def start(sy: App, *, worker_timeout: int = 1_000) -> dramatiq.Worker:
        worker = dramatiq.Worker(sy.broker, worker_threads=2, worker_timeout=worker_timeout)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=10_000)


@REDIS_ONLY
def test_idle_worker_starts_a_job_within_milliseconds(build_switchyard, default_worker, queue):
    # given a worker whose queue has been empty for longer than its poll interval
    sy = build_switchyard()
    started: dict[int, float] = {}

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def probe(n: int) -> None:
        started[n] = time.monotonic()

    # (a long worker timeout: a job found by polling alone would start seconds late; how
    # soon the doorbell starts it is measured by bench/latency.py, not here)
    default_worker(sy, worker_timeout=LONG_POLL_MS)
    latencies = []
    for n in range(5):
        wait_for(lambda: waiting_on_doorbell(sy, queue), what="the consumer waiting")
        time.sleep(POLL_INTERVAL)  # the scenario: idle long enough for polling to back off

        # when a job is sent
        sent = time.monotonic()
        probe.send(n)

        # then it starts long before the consumer's next poll
        wait_for(lambda: n in started, what=f"job {n}")  # noqa: B023 (waited on at once)
        latencies.append(started[n] - sent)
    assert max(latencies) < LONG_POLL_MS / 1000 / 5, latencies


@REDIS_ONLY
def test_delayed_message_runs_at_its_eta_not_at_the_next_poll(build_switchyard, default_worker,
                                                              queue):
    # given an idle worker
    sy = build_switchyard()
    started: dict[int, float] = {}

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def probe(n: int) -> None:
        started[n] = time.time() * 1000

    default_worker(sy, worker_timeout=LONG_POLL_MS)

    # when messages are sent with delays shorter and longer than Dramatiq's poll interval
    delays = [150, 400, 650, 1300]
    messages = [probe.send_with_options(args=(n,), delay=d) for n, d in enumerate(delays)]

    # then each runs no earlier than its eta, and long before the consumer's next poll
    # (how late, in ms, is bench/latency.py's to measure)
    wait_for(lambda: len(started) == len(delays), what="all delayed jobs")
    lateness = [started[n] - m.options["eta"] for n, m in enumerate(messages)]
    assert all(0 <= late < LONG_POLL_MS / 5 for late in lateness), lateness


@REDIS_ONLY
def test_idle_worker_keeps_its_broker_heartbeat_fresh(build_switchyard, default_worker):
    # given a broker that declares a worker dead after 3 s without a heartbeat
    timeout_ms = 3_000
    sy = build_switchyard(redis_heartbeat_timeout_ms=timeout_ms)
    broker = doorbell_of(sy)
    beats = f"{broker.namespace}:__heartbeats__"
    broker.declare_queue("idle")

    # when its worker waits on an empty queue, with a worker timeout longer than that
    # (the doorbell wait must end in time to beat, whatever the worker timeout)
    default_worker(sy, worker_timeout=LONG_POLL_MS)

    def last_beat() -> float | None:
        score = broker.client.zscore(beats, broker.broker_id)
        return None if score is None else float(score)

    wait_for(last_beat, what="a first heartbeat")

    # then, for several heartbeat timeouts, it never looks dead to the others
    ages = []
    until = time.monotonic() + 2 * timeout_ms / 1000
    while time.monotonic() < until:
        ages.append(time.time() * 1000 - (last_beat() or 0))
        time.sleep(0.05)  # sampling the heartbeat's age, not waiting for the worker
    assert max(ages) < timeout_ms, max(ages)


@REDIS_ONLY
def test_doorbell_keeps_few_short_lived_tokens_when_nobody_listens(build_switchyard, queue):
    # given no worker
    sy = build_switchyard()
    broker = doorbell_of(sy)

    # when many messages are sent
    for n in range(3 * broker.doorbell_cap):
        send(sy, queue, "record", key=str(n))

    # then the doorbell holds at most its cap of tokens, and expires
    bell = broker.doorbell_key(queue)
    assert broker.client.llen(bell) == broker.doorbell_cap
    assert 0 < broker.client.pttl(bell) <= broker.doorbell_ttl
    assert sy.queues.depth(queue) == 3 * broker.doorbell_cap


@REDIS_ONLY
def test_broken_doorbell_never_fails_an_enqueue(build_switchyard, queue, caplog):
    # given a doorbell key that is not a list
    sy = build_switchyard()
    broker = doorbell_of(sy)
    broker.client.set(broker.doorbell_key(queue), "not a list")

    # when a message is sent
    with caplog.at_level(logging.WARNING, logger="switchyard.redis_broker"):
        send(sy, queue, "record", key="k")

    # then it is queued all the same, and the failure is logged
    assert sy.queues.depth(queue) == 1
    assert "Could not ring the doorbell" in caplog.text


class WakeupWorkers(WorkerProcesses):
    """Worker subprocesses running tests/support/wakeup_app.py."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env, module="tests.support.wakeup_app")

    def stop(self, proc: subprocess.Popen[str]) -> None:
        stop([proc], grace=30)


@pytest.fixture
def wakeup_workers(process_env: dict[str, str], queue: str) -> Iterator[WakeupWorkers]:
    procs = WakeupWorkers({**process_env, "TEST_QUEUE": queue})
    yield procs
    procs.stop_all()


class Producers:
    """Threads sending `record` jobs at a random pace until stopped; every fifth delayed."""

    def __init__(self, sy: App, queue: str, count: int = 4) -> None:
        self.sy, self.queue = sy, queue
        self.sent: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.produce, args=(n,)) for n in range(count)]
        for thread in self.threads:
            thread.start()

    def produce(self, number: int) -> None:
        rng = random.Random(number)
        for n in itertools.count():
            if self.stopping.is_set():
                return
            key = f"p{number}-{n}"
            kwargs = {"key": key, "sleep": rng.uniform(0, 0.03)}
            message: dramatiq.Message[Any] = dramatiq.Message(
                queue_name=self.queue, actor_name="record", args=(), kwargs=kwargs, options={})
            self.sy.broker.enqueue(message, delay=rng.randint(50, 300) if n % 5 == 0 else None)
            self.sent.append(key)
            time.sleep(rng.uniform(0, 0.06))  # the producers' pace, not a wait

    def stop(self) -> list[str]:
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        return self.sent


@REDIS_ONLY
def test_no_job_lost_or_run_twice_while_workers_start_stop_and_die(
    build_switchyard, wakeup_workers, queue, state, prefix
):
    # given four producer threads sending jobs, some delayed, to one worker process
    sy = build_switchyard()
    sy.broker.declare_queue(queue)

    def ran() -> int:
        return sum(1 for _ in state.scan_iter(f"{prefix}:runs:*", count=1000))

    def progress(jobs: int) -> None:
        target = ran() + jobs
        wait_for(lambda: ran() >= target, timeout=30, what=f"{target} jobs run")

    first = wakeup_workers.start()
    producers = Producers(sy, queue)

    # when, meanwhile, workers start, stop gracefully and are SIGKILLed
    progress(50)
    second = wakeup_workers.start()
    progress(50)
    wakeup_workers.kill(first)
    third = wakeup_workers.start()
    progress(50)
    wakeup_workers.stop(second)
    progress(50)
    wakeup_workers.kill(third)
    wakeup_workers.start()
    progress(50)
    keys = producers.stop()

    # then every job runs, and only a job whose worker was killed may run again
    wait_for(lambda: ran() == len(keys), timeout=60, what="every job")
    wait_for(lambda: not stored_messages(sy, queue), what="every job acked")
    runs = {key: [pid.decode() for pid in state.lrange(f"{prefix}:runs:{key}", 0, -1)]
            for key in keys}
    killed = {str(first.pid), str(third.pid)}
    assert killed <= {pid for pids in runs.values() for pid in pids}  # both ran jobs
    for key, pids in runs.items():
        assert set(pids[:-1]) <= killed, (key, pids)

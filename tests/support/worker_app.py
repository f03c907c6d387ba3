"""A worker process for tests that need several processes or a SIGKILL.

Run as `python -m tests.support.worker_app` with the test's settings in the
environment; it boots Switchyard as the worker's entry module does, declares the actors
below, prints `ready` and works until SIGTERM.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import dramatiq
from dramatiq.middleware import CurrentMessage

from switchyard import entry
from tests.support import batch_jobs
from tests.support.processes import serve

sy = entry.boot()  # the product's actors too, e.g. ping

QUEUE = os.environ["TEST_QUEUE"]
PREFIX = sy.settings.key_prefix


def record_run(name: str) -> int:
    """The side effect: one run of `name`, counted once however often the client resends
    it (a command resent after a lost reply must not look like a second run)."""
    run_id = uuid.uuid4().hex
    runs = f"{PREFIX}:runs:{name}"
    message = CurrentMessage.get_current_message()
    about = json.dumps({"message_id": message.message_id if message else None,
                        "retries": message.options.get("retries", 0) if message else None,
                        "rid": message.options.get("redis_message_id") if message else None,
                        "deliveries": message.options.get("deliveries") if message else None,
                        "pid": os.getpid(), "at": time.time()})
    return int(RECORD_RUN(keys=[runs, f"{PREFIX}:effects:{name}"], args=[run_id, about]))


# One command: a run is recorded, and counted, or not at all (a second command could fail
# after the first landed, and the job retried with its effect done).
RECORD_RUN = sy.state.client.register_script("""
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
local n = redis.call('hlen', KEYS[1])
redis.call('set', KEYS[2], n)
return n
""")


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=100)
def effect(name: str, sleep: float = 0.0) -> int:
    """Sleep (the job is "mid-run" now), then perform the side effect: a counted run."""
    time.sleep(sleep)
    return record_run(name)


@dramatiq.actor(queue_name=QUEUE, max_retries=50, min_backoff=100, max_backoff=500)
def steady(name: str, sleep: float = 0.0) -> int:
    """`effect` with retries enough to outlast a broker restart."""
    time.sleep(sleep)
    return record_run(name)


@dramatiq.actor(queue_name=QUEUE, concurrency=1, max_retries=0)
def exclusive(sleep: float) -> None:
    """Record when it ran, to show runs never overlap."""
    started = time.time()
    time.sleep(sleep)
    sy.state.client.rpush(f"{PREFIX}:intervals", json.dumps([started, time.time(), os.getpid()]))


@dramatiq.actor(queue_name=QUEUE, group_key=lambda group, **_: group, max_retries=3,
                min_backoff=100, max_backoff=200)
def ordered(group: str, n: int, sleep: float = 0.0) -> None:
    """Record its start and end: a group's runs must never overlap or reorder."""
    log = f"{PREFIX}:order"
    sy.state.client.rpush(log, f"start {group} {n} {os.getpid()}")
    time.sleep(sleep)
    sy.state.client.rpush(log, f"end {group} {n} {os.getpid()}")


@dramatiq.actor(queue_name=f"{QUEUE}-one", concurrency=1, concurrency_key=f"{QUEUE}-one",
                max_retries=0)
def one_at_a_time(n: int, sleep: float = 0.0) -> None:
    """A channel-ops-like queue: one job at a time across every worker, in order."""
    log = f"{PREFIX}:order"
    sy.state.client.rpush(log, f"start one {n} {os.getpid()}")
    time.sleep(sleep)
    sy.state.client.rpush(log, f"end one {n} {os.getpid()}")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def break_a_consumer() -> None:
    """Make one of this process's consumer threads stop as if it had died."""
    import threading

    from dramatiq.worker import ConsumerThread

    victim = next(t for t in threading.enumerate() if isinstance(t, ConsumerThread))
    victim.running = False


sy.declare(batch_jobs.jobs(QUEUE, sy.state.client, PREFIX))


def main() -> None:
    serve(sy, threads=int(os.environ.get("THREADS", "4")))


if __name__ == "__main__":
    main()

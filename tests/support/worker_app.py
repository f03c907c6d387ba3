"""A worker process for tests that need several processes or a SIGKILL.

Run as `python -m tests.support.worker_app` with the test's settings in the
environment; it boots Switchyard as the worker's entry module does, declares the actors
below, prints `ready` and works until SIGTERM.
"""

from __future__ import annotations

import json
import os
import time

import dramatiq

from switchyard import entry
from tests.support.processes import serve

sy = entry.boot()  # the product's actors too, e.g. ping

QUEUE = os.environ["TEST_QUEUE"]
PREFIX = sy.settings.key_prefix


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=100)
def effect(name: str, sleep: float = 0.0) -> int:
    """Sleep (the job is "mid-run" now), then perform the side effect: a counter."""
    time.sleep(sleep)
    return int(sy.state.client.incr(f"{PREFIX}:effects:{name}"))


@dramatiq.actor(queue_name=QUEUE, max_retries=50, min_backoff=100, max_backoff=500)
def steady(name: str, sleep: float = 0.0) -> int:
    """`effect` with retries enough to outlast a broker restart."""
    time.sleep(sleep)
    return int(sy.state.client.incr(f"{PREFIX}:effects:{name}"))


@dramatiq.actor(queue_name=QUEUE, concurrency=1, max_retries=0)
def exclusive(sleep: float) -> None:
    """Record when it ran, to show runs never overlap."""
    started = time.time()
    time.sleep(sleep)
    sy.state.client.rpush(f"{PREFIX}:intervals", json.dumps([started, time.time(), os.getpid()]))


def main() -> None:
    serve(sy, threads=int(os.environ.get("THREADS", "4")))


if __name__ == "__main__":
    main()

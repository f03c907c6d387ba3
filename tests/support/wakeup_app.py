"""A worker process for the Redis doorbell tests (tests/test_redis_broker.py).

Run as `python -m tests.support.wakeup_app` with the test's settings in the
environment; it boots Switchyard as the worker's entry module does, declares `record`, prints
`ready` and works until SIGTERM. `record` appends this process's pid to a list per
key, so a test can tell which process ran each job, and how many times.
"""

from __future__ import annotations

import os
import time

import dramatiq

from switchyard import entry
from tests.support.processes import serve

sy = entry.boot()

QUEUE = os.environ["TEST_QUEUE"]
PREFIX = sy.settings.key_prefix


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def record(key: str, sleep: float = 0.0) -> None:
    time.sleep(sleep)
    sy.state.client.rpush(f"{PREFIX}:runs:{key}", os.getpid())


def main() -> None:
    serve(sy, threads=int(os.environ.get("THREADS", "4")),
          worker_timeout=int(os.environ.get("WORKER_TIMEOUT", "1000")))


if __name__ == "__main__":
    main()

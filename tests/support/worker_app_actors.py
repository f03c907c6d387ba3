"""The ordering actors of `tests.support.worker_app`, declared on a test's own app so
the test can send them (same names, queues and options as the worker process's)."""

from __future__ import annotations

from typing import Any

import dramatiq

from switchyard.boot import App


def declare(sy: App, queue: str) -> tuple[Any, Any]:
    @dramatiq.actor(broker=sy.broker, queue_name=queue, actor_name="ordered",
                    group_key=lambda group, **_: group, max_retries=3, min_backoff=100,
                    max_backoff=200)
    def ordered(group: str, n: int, sleep: float = 0.0) -> None:
        raise AssertionError("runs in the worker process")

    @dramatiq.actor(broker=sy.broker, queue_name=f"{queue}-one", actor_name="one_at_a_time",
                    concurrency=1, concurrency_key=f"{queue}-one", max_retries=0)
    def one_at_a_time(n: int, sleep: float = 0.0) -> None:
        raise AssertionError("runs in the worker process")

    return ordered, one_at_a_time

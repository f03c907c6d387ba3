"""Seed 004's queues, declared by their producer after the bridge started, are consumed
within about BRIDGE_QUEUE_LOOK_MS (1 s) by default: an interaction dies after 3 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from switchyard import boot as runtime
from switchyard.ingress import bridge as ingress_bridge
from switchyard.ingress import routes
from tests.support.waiting import wait_for
from tests.switchyard.ingress.test_bridge import own_vhost, publisher

#: How soon a queue must be consumed with the default look every 1 s, with room for a
#: loaded machine (the old default looked every 30 s).
WITHIN_S = 3.0


@pytest.fixture(params=["redis"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def running_bridge(build_switchyard: Callable[..., runtime.App]) -> Iterator[str]:
    """A bridge with the default settings on a vhost of its own, where seed 004's
    producer has not declared its queues yet; the vhost's URL."""
    sy = build_switchyard()  # BRIDGE_QUEUE_LOOK_MS: the default, not a test's
    with own_vhost() as url:
        ready = threading.Event()
        bridge = ingress_bridge.Bridge(sy, url, ready=ready.set)
        thread = threading.Thread(target=bridge.run, daemon=True)
        thread.start()
        try:
            assert ready.wait(30), "the bridge did not start"
            yield url
        finally:
            bridge.stop()
            thread.join(30)


def consumers(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.consumer_count)


@pytest.mark.parametrize("queue, arguments", [
    (routes.INTERACTIONS, {"x-max-priority": 10}),
    (routes.GUILD_EVENTS, {}),
])
def test_a_queue_declared_after_the_bridge_started_is_consumed_within_a_second_or_so(
        running_bridge: str, queue: str, arguments: dict[str, Any]) -> None:
    with publisher(running_bridge) as channel:
        time.sleep(0.3)  # not just after the bridge's own first look
        # when the producer declares its queue, with its own arguments
        channel.queue_declare(queue, durable=True, arguments=arguments)
        declared = time.monotonic()
        # then the bridge consumes it soon after
        wait_for(lambda: consumers(channel, queue) == 1, timeout=40, interval=0.01,
                 what=f"the bridge to consume {queue}")  # measured past 3 s: 30 s before
        took = time.monotonic() - declared
        print(f"{queue} consumed {took * 1000:.0f} ms after it was declared")
        assert took < WITHIN_S
        assert consumers(channel, queue) == 1  # the passive look did not replace it


def test_a_queue_not_there_is_looked_for_quietly_and_never_declared(
        running_bridge: str, caplog: pytest.LogCaptureFixture) -> None:
    # given a bridge looking every second for queues nobody declares
    with caplog.at_level("INFO", logger="switchyard.bridge"):
        time.sleep(2.5)
        with publisher(running_bridge) as channel, pytest.raises(
                pika.exceptions.ChannelClosedByBroker):
            channel.queue_declare(routes.GUILD_EVENTS, passive=True)  # it declared nothing
        # when one appears
        with publisher(running_bridge) as channel:
            channel.queue_declare(routes.GUILD_EVENTS, durable=True)
        wait_for(lambda: any("now exists" in r.getMessage() for r in caplog.records),
                 timeout=10, what="the bridge to say it found the queue")
    # then it had said nothing while looking (it warned once, at start, before the capture)
    assert [r for r in caplog.records if "does not exist" in r.getMessage()] == []

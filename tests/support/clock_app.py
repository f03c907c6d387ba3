"""A clock process for tests: the real `Clock` on one schedule (CLOCK_TEST_CRON, on
`cleanup_stories`), its time read from Redis (`<KEY_PREFIX>:faketime`, epoch seconds)
so the test moves it. Prints `ready`, ticks every 10 ms until SIGTERM."""

from __future__ import annotations

import datetime
import os
import signal
import threading

from actors import cleanup
from schedules import Schedule
from switchyard import boot as runtime
from switchyard.base import settings
from switchyard.clock import Clock

sy = runtime.build(settings.load(), [cleanup])
FAKETIME = f"{sy.settings.key_prefix}:faketime"


def now() -> datetime.datetime:
    value = sy.state.client.get(FAKETIME)
    assert value is not None, "the test sets the time first"
    return datetime.datetime.fromtimestamp(float(value), datetime.UTC)


def main() -> None:
    schedule = Schedule("every_5", "cleanup_stories", os.environ["CLOCK_TEST_CRON"],
                        payload={"type": "stories"})
    clock = Clock(sy, [schedule], now=now)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    clock.run(stop, tick_ms=10)
    sy.close()


if __name__ == "__main__":
    main()

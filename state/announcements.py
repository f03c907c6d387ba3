"""Announcements over Redis pub/sub: what every worker must hear at once (a cancellation
of a job one of them may hold, a request to run a delayed job now).

A `Channel` gives a subscription Redis confirmed (what is published from then on is
heard), and listens on a thread of its own until told to stop, subscribing again after
the state store was away. What is published while nobody is subscribed is not heard:
each user says what then happens (a cancellation's mark still meets the job when it is
fetched; a run-now mark likewise).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

logger = logging.getLogger("switchyard.announcements")


class Channel:
    """One pub/sub channel of the state store."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.name = name

    def subscribe(self) -> Any:
        """A subscription to the channel, confirmed by the state store."""
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(self.name)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                said = pubsub.get_message(timeout=0.5)
                if said is not None and said["type"] == "subscribe":
                    return pubsub
            raise redis.TimeoutError("the state store did not confirm the subscription")
        except BaseException:
            pubsub.close()
            raise

    def listen(self, heard: Callable[[bytes], None], stop: threading.Event,
               pubsub: Any = None) -> None:
        """Call `heard(data)` for each announcement until `stop` is set (on `pubsub`, from
        `subscribe`, or a subscription of its own); one `heard` cannot read is skipped."""
        while not stop.is_set():
            try:
                pubsub = pubsub or self.subscribe()
                while not stop.is_set():
                    said = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if said is None:
                        continue
                    try:
                        heard(said["data"])
                    except (ValueError, KeyError, TypeError) as error:
                        logger.warning("Skipped an unreadable announcement on %s: %s",
                                       self.name, type(error).__name__)
            except (redis.RedisError, OSError):
                stop.wait(1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        pubsub.close()
                pubsub = None

    def start(self, heard: Callable[[bytes], None], stop: threading.Event,
              thread_name: str) -> None:
        """Subscribe now when the state store answers (so what is announced from here on
        is heard), then listen on a daemon thread until `stop` is set."""
        try:
            pubsub = self.subscribe()
        except redis.RedisError:
            pubsub = None  # the listener subscribes once it can
        threading.Thread(target=self.listen, args=(heard, stop, pubsub), daemon=True,
                         name=thread_name).start()

"""Which queue each consumer thread reads, for the decoding that never fails."""

from __future__ import annotations

from typing import Any

import dramatiq

from middleware.base import Middleware
from switchyard.base.decoding import consuming


class ConsumingQueue(Middleware):
    """Tells `SafeEncoder` which queue each consumer thread reads."""

    def after_consumer_thread_boot(self, broker: dramatiq.Broker, thread: Any) -> None:
        consuming.queue = thread.queue_name

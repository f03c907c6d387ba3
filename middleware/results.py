"""Results: Dramatiq's result backend, plus the failure of a dead-lettered job.

Dramatiq stores a failed job's exception only when the message is nacked, but the
dead-letter middleware acks what it records. Without this, a caller waiting on
`message.get_result()` for a job that failed for good would wait out its timeout
instead of getting the reason.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.results import Results as DramatiqResults

from middleware.base import Middleware
from switchyard.base.compat import result_options
from switchyard.base.outcome import DEAD, current


class Results(Middleware, DramatiqResults):
    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        super().after_process_message(broker, message, result=result, exception=exception)
        if exception is None or current(message).status != DEAD:
            return
        store_results, result_ttl = result_options(self, broker, message)
        if store_results:
            self.backend.store_exception(message, exception, result_ttl)

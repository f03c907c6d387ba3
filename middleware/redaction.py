"""Keep payloads out of logs: actors' loggers drop Dramatiq's `Received args=...` line.

Each Dramatiq actor logs its arguments at DEBUG when it is called; payloads hold phone
numbers, emails and tokens, so the line is dropped from every declared actor's logger.
(Messages themselves print as `actor[message_id]`: see `logs.redact_messages`.)
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Actor, Broker, Middleware


class _DropArguments(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Received args="))


_FILTER = _DropArguments()


class RedactPayloads(Middleware):
    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        actor.logger.addFilter(_FILTER)

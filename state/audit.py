"""The audit trail in the state store: who did what sensitive thing to which job, and when.

Today one kind of entry: an operator revealed a job's arguments. Entries are kept per
job (`audit:<id>`, newest first, at most KEEP_PER_JOB) and in one list of the newest
(`audit`, at most `keep`), each list expiring `ttl` ms after its last entry; the web
process logs each entry too (`switchyard.audit`). An entry never holds a value of the
job's payload.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

#: Entries kept per job.
KEEP_PER_JOB = 50


class AuditTrail:
    def __init__(self, client: redis.Redis, *, prefix: str, keep: int, ttl: int) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.prefix = prefix
        self.keep = keep
        self.ttl = ttl

    def record(self, action: str, message_id: str, *, by: str) -> dict[str, Any]:
        entry = {"action": action, "job": message_id, "by": by,
                 "at": int(time.time() * 1000)}
        raw = json.dumps(entry)
        pipe = self.client.pipeline(transaction=True)
        for key, keep in ((self._job_key(message_id), KEEP_PER_JOB),
                          (f"{self.prefix}:audit", self.keep)):
            pipe.lpush(key, raw)
            pipe.ltrim(key, 0, keep - 1)
            pipe.pexpire(key, self.ttl)
        pipe.execute()
        return entry

    def of(self, message_id: str) -> list[dict[str, Any]]:
        """The job's entries, newest first."""
        return [json.loads(raw) for raw in self.client.lrange(self._job_key(message_id), 0, -1)]

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in
                self.client.lrange(f"{self.prefix}:audit", 0, max(0, limit - 1))]

    def _job_key(self, message_id: str) -> str:
        return f"{self.prefix}:audit:{message_id}"

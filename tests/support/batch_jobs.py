"""Batch jobs that a test and its worker processes both declare (same names, queue and
models): members that record their runs, a callback that records its counts."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from switchyard.runtime.jobs import Context, job


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int
    sleep: float = 0.0


class Counts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batchId: str  # noqa: N815 (camelCase on the wire)
    successCount: int  # noqa: N815
    failureCount: int  # noqa: N815
    total: int


def jobs(queue: str, redis_client: Any, prefix: str) -> list[Any]:
    @job(Member, actor_name="slow_member", queue_name=queue, max_retries=3, min_backoff=100)
    def slow_member(ctx: Context, payload: Member) -> dict[str, Any]:
        time.sleep(payload.sleep)
        redis_client.hset(f"{prefix}:member-runs", f"{payload.n}:{time.time()}", os.getpid())
        return {"ok": payload.n % 10 != 0}  # every tenth is a refusal: a failure

    @job(Counts, actor_name="count_callback", queue_name=queue, max_retries=3)
    def count_callback(ctx: Context, payload: Counts) -> None:
        redis_client.rpush(f"{prefix}:callbacks", json.dumps(payload.model_dump()))

    return [slow_member, count_callback]

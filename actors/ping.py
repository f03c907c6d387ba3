"""`ping`: a no-op job that proves the path producer -> broker -> worker -> history."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from switchyard.runtime.jobs import Context, job


class Ping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    echo: str | None = Field(None, max_length=256, description="Returned as is.")


@job(Ping, queue_name="default", max_retries=0)
def ping(ctx: Context, payload: Ping) -> dict[str, object]:
    return {"pong": True, "echo": payload.echo, "at": int(time.time() * 1000)}

"""`POST /api/channels`: seed 000's API-side producer.

The API finds or creates the SourceChannel for a username and, when it is new (or its
last join failed, or it was left), enqueues its `join_channel` job, then answers at
once: the worker marks the channel active, or failed with the reason. Asking again
while a join is pending answers the same channel and job.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.channels import USERNAME_OR_LINK, find_or_create_channel
from processing.channels import normalize
from switchyard.base.errors import PermanentError
from switchyard.runtime.app import App
from web.validation import CROSS_SITE, CheckedRoute

#: What a username must be (the value itself is never repeated back).
USERNAME_RULE = ("not a Telegram username (4-32 letters, digits and underscores, starting "
                 "with a letter; @name and t.me/name work too) or t.me/+ invite link")


class ChannelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=128,
                          description="@username, t.me link or t.me/+invite link",
                          examples=["@durov", "https://t.me/+AbCdEf123"],
                          json_schema_extra={"pattern": USERNAME_OR_LINK})

    @field_validator("username")
    @classmethod
    def _telegram_name(cls, value: str) -> str:
        """The schema's pattern, answered with the rule in words."""
        try:
            if not re.search(USERNAME_OR_LINK, value):
                raise ValueError(USERNAME_RULE)
            normalize(value)
        except PermanentError:
            raise ValueError(USERNAME_RULE) from None
        return value


class ChannelAccepted(BaseModel):
    id: str = Field(description="The SourceChannel's id")
    status: str = Field(description="pending (join queued), active, failed or left")
    message_id: str | None = Field(description="The join job's message id "
                                   "(follow it at /api/jobs/<message_id>)")


def router(sy: App) -> APIRouter:
    routes = APIRouter(tags=["channels"], route_class=CheckedRoute)

    @routes.post("/api/channels", status_code=202, response_model=ChannelAccepted,
                 responses=CROSS_SITE)
    def join_channel(body: ChannelRequest) -> dict[str, Any]:
        """Find or create the channel's SourceChannel and queue its join; answers at once."""
        channel = find_or_create_channel(sy, body.username)
        return {"id": channel.id, "status": channel.status, "message_id": channel.join_job_id}

    return routes

"""Channel join and leave on queue `channel-ops` (seed 000).

One at a time across every worker (concurrency 1, to respect Telegram's limits), no
retries: a failure is final at once and its reason is readable through `switchyard
jobs show`, the jobs API and the results backend. A FLOOD_WAIT is not a failure: the
job runs again after the server's wait (up to a day), spending no attempt.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from processing import channels
from store.models import SourceChannel
from switchyard.base.settings import DAY_MS
from switchyard.runtime.app import App
from switchyard.runtime.enqueue import enqueue
from switchyard.runtime.jobs import Context, Payload, job

QUEUE = "channel-ops"
OPTIONS: dict[str, Any] = {
    "queue_name": QUEUE, "concurrency": 1, "concurrency_key": QUEUE, "max_retries": 0,
    "store_results": True, "max_deferral": 2 * DAY_MS,
}


#: What a payload's strings lose at both ends before they are checked (pydantic's
#: `str_strip_whitespace`: Unicode White_Space, which Python's `\s` is not quite). The
#: patterns below allow it there, so the OpenAPI document accepts what the model does.
_BLANK = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: A string holding more than blanks (`min_length=1` alone would take "  ", then strip it).
NOT_BLANK = rf"[^{_BLANK}]"
_NAME = r"[A-Za-z][A-Za-z0-9_]{3,31}"
#: What `processing.channels.normalize` accepts, as a JSON schema pattern (the OpenAPI
#: document says it, and a name it would refuse is a 422 at enqueue, not a failed job).
USERNAME_OR_LINK = (rf"^[{_BLANK}]*(?:@?{_NAME}|(?:https?://)?(?:t|telegram)\.me/"
                    rf"(?:{_NAME}|(?:\+|joinchat/)[A-Za-z0-9_-]+)/?)[{_BLANK}]*$")


class JoinChannel(Payload):
    operation: Literal["join"] | None = None
    channel_id: str = Field(min_length=1, max_length=64, pattern=NOT_BLANK,
                            description="SourceChannel id")
    username: str = Field(min_length=1, max_length=128, pattern=USERNAME_OR_LINK,
                          description="@username, t.me link or t.me/+invite link")


class LeaveChannel(Payload):
    operation: Literal["leave"] | None = None
    channel_id: str | None = Field(None, max_length=64)
    telegram_id: int = Field(description="The channel's Telegram id (-100...)")


@job(JoinChannel, actor_name="join_channel", **OPTIONS)
def join_channel(ctx: Context, payload: JoinChannel) -> dict[str, Any]:
    return channels.join(ctx.database, ctx.providers.telegram_user(), payload.channel_id,
                         payload.username)


@job(LeaveChannel, actor_name="leave_channel", **OPTIONS)
def leave_channel(ctx: Context, payload: LeaveChannel) -> dict[str, Any]:
    return channels.leave(ctx.database, ctx.providers.telegram_user(), payload.telegram_id)


def find_or_create_channel(app: App, username: str) -> SourceChannel:
    """The API side (seed 000): the SourceChannel for `username`, joining it if new.

    Returns at once; the worker marks the channel active (or failed) when the join is
    done. A channel whose last join failed, or that was left, is joined again.
    """
    def enqueue_join(channel_id: str, username: str) -> str:
        payload = {"operation": "join", "channelId": channel_id, "username": username}
        return enqueue(app, "join_channel", payload).message_id

    return channels.find_or_create(app.database, username, enqueue_join)

"""Bot operations on queue `bot-operations` (seed 001): invite, remove, verify.

Backoff 1 s, 2 s, 4 s, 8 s ... capped at 15 minutes, 5 retries; up to 10 at once
across every worker. Rate limits (429) wait the server's delay without spending an
attempt; permission errors, unknown users and chats are final at once. Each job is
deduplicated per (operation, subscription) for 5 minutes, like the seed's SQS FIFO
deduplication id, both when enqueued (the producers below) and when run (the key).
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from pydantic import Field

from processing import bot
from switchyard.app import App
from switchyard.enqueue import enqueue
from switchyard.jobs import Context, Payload, job

QUEUE = "bot-operations"
#: SQS FIFO's deduplication interval, which the seed's producer relied on.
DEDUPLICATION_MS = 5 * 60_000
OPTIONS: dict[str, Any] = {
    "queue_name": QUEUE, "concurrency": 10, "concurrency_key": QUEUE,
    "min_backoff": 1_000, "max_backoff": 15 * 60_000, "max_retries": 5,
    "idempotency_ttl": DEDUPLICATION_MS,
}

class InviteUser(Payload):
    operation: Literal["INVITE_USER"] | None = None
    user_id: str = Field(min_length=1, max_length=64)
    channel_id: int = Field(description="The channel's Telegram chat id (-100...)")
    subscription_id: str = Field(min_length=1, max_length=64)
    order_id: str | None = Field(None, max_length=64)


class RemoveUser(Payload):
    operation: Literal["REMOVE_USER"] | None = None
    user_id: str = Field(min_length=1, max_length=64)
    channel_id: int
    subscription_id: str = Field(min_length=1, max_length=64)
    reason: Literal["expiry", "refund"]


class VerifyPermissions(Payload):
    operation: Literal["VERIFY_PERMISSIONS"] | None = None
    channel_id: int
    listing_id: str | None = Field(None, max_length=64)


def _key(operation: str) -> Any:
    def key(**payload: Any) -> str:
        target = payload.get("subscriptionId") or payload.get("listingId") \
            or payload.get("channelId")
        return f"{operation}:{target}"
    return key


@job(InviteUser, actor_name="invite_user", idempotency_key=_key("invite"), **OPTIONS)
def invite_user(ctx: Context, payload: InviteUser) -> dict[str, Any]:
    ttl = datetime.timedelta(milliseconds=ctx.settings.invite_link_ttl_ms)
    return bot.invite_user(ctx.database, ctx.providers.telegram_bot(), user_id=payload.user_id,
                           channel_id=payload.channel_id, subscription_id=payload.subscription_id,
                           order_id=payload.order_id, link_ttl=ttl)


@job(RemoveUser, actor_name="remove_user", idempotency_key=_key("remove"), **OPTIONS)
def remove_user(ctx: Context, payload: RemoveUser) -> dict[str, Any]:
    return bot.remove_user(ctx.database, ctx.providers.telegram_bot(), user_id=payload.user_id,
                           channel_id=payload.channel_id, subscription_id=payload.subscription_id,
                           reason=payload.reason)


@job(VerifyPermissions, actor_name="verify_permissions", idempotency_key=_key("verify"),
     **OPTIONS)
def verify_permissions(ctx: Context, payload: VerifyPermissions) -> dict[str, Any]:
    return bot.verify_permissions(ctx.database, ctx.providers.telegram_bot(),
                                  channel_id=payload.channel_id, listing_id=payload.listing_id)


# Producers: the seed's four integration points. Each returns the message id of the job
# that has the key: a new one, or the same operation enqueued in the last 5 minutes.

def _send(app: App, name: str, target: str, payload: Payload) -> str:
    operation = name.split("_")[0]
    return enqueue(app, name, payload, key=f"{operation}:{target}",
                   on_duplicate="existing").message_id


def on_subscription_activated(app: App, user_id: str, channel_id: int, subscription_id: str,
                              order_id: str | None = None) -> str:
    """Invite the subscriber."""
    payload = InviteUser(operation="INVITE_USER", user_id=user_id, channel_id=channel_id,
                         subscription_id=subscription_id, order_id=order_id)
    return _send(app, "invite_user", subscription_id, payload)


def on_subscription_expired(app: App, user_id: str, channel_id: int,
                            subscription_id: str) -> str:
    payload = RemoveUser(operation="REMOVE_USER", user_id=user_id, channel_id=channel_id,
                         subscription_id=subscription_id, reason="expiry")
    return _send(app, "remove_user", subscription_id, payload)


def on_refund_approved(app: App, user_id: str, channel_id: int, subscription_id: str) -> str:
    payload = RemoveUser(operation="REMOVE_USER", user_id=user_id, channel_id=channel_id,
                         subscription_id=subscription_id, reason="refund")
    return _send(app, "remove_user", subscription_id, payload)


def on_listing_created(app: App, channel_id: int, listing_id: str | None = None) -> str:
    """Check the bot's rights before the listing goes live (the result lands on it)."""
    payload = VerifyPermissions(operation="VERIFY_PERMISSIONS", channel_id=channel_id,
                                listing_id=listing_id)
    return _send(app, "verify_permissions", listing_id or str(channel_id), payload)

"""Bot operations on queue `bot-operations` (seed 001): invite, remove, verify.

Backoff 1 s, 2 s, 4 s, 8 s ... capped at 15 minutes, 5 retries; up to 10 at once
across every worker. The operations of one subscription run one at a time in the order
they were sent (an ordered group, like the seed's SQS FIFO message group), retries
included: a removal sent after an invite waits for the invite's last retry. Bot API
calls keep to Telegram's published limits (30 a second overall, one message a second
to a chat); a 429 still waits the server's delay, without spending an attempt.
Permission errors, unknown users and chats are final at once. Each job is deduplicated
per (operation, subscription) for 5 minutes (an invite per subscription and order, so a
renewal is not taken for a duplicate), like the seed's SQS FIFO deduplication id, both
when enqueued (the producers below) and when run (the key). An invite checks when it
runs that the subscription still entitles the user, against the order the operations
were sent in (`processing.bot`): a refund, or an expiry it does not renew, stops it.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from dramatiq.middleware import CurrentMessage
from pydantic import Field

from processing import bot
from switchyard.base.rates import RateLimit
from switchyard.runtime.app import App
from switchyard.runtime.enqueue import enqueue
from switchyard.runtime.jobs import Context, Payload, job

QUEUE = "bot-operations"
#: SQS FIFO's deduplication interval, which the seed's producer relied on.
DEDUPLICATION_MS = 5 * 60_000
#: Telegram's Bot API limits (core.telegram.org/bots/faq): about 30 messages a second
#: overall, and one a second to any one chat.
TELEGRAM_BOT = RateLimit("telegram-bot", 30, 1_000)
TELEGRAM_CHAT = RateLimit("telegram-chat", 1, 1_000, key=lambda **p: p.get("userId"))


def _subscription(**payload: Any) -> str | None:
    """The ordered group of a bot operation: its subscription (none for a verify)."""
    return payload.get("subscriptionId")


OPTIONS: dict[str, Any] = {
    "queue_name": QUEUE, "concurrency": 10, "concurrency_key": QUEUE,
    "group_key": _subscription, "rate_limit": [TELEGRAM_BOT],
    "min_backoff": 1_000, "max_backoff": 15 * 60_000, "max_retries": 5,
    "idempotency_ttl": DEDUPLICATION_MS,
    # A run that passes its time limit (a hung call) is retried like a 5xx; an invite
    # retried after its subscription closed finds that out itself (processing.bot).
    "on_time_limit": "retry",
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
        order = payload.get("orderId") if operation == "invite" else None
        return f"{operation}:{target}" + (f":{order}" if order else "")
    return key


def _sent_at() -> datetime.datetime:
    """When the running job was first sent: its message's timestamp, which retries and
    delays keep (the order the operations were produced in)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        raise RuntimeError("a bot operation runs only as a job (CurrentMessage)")
    return datetime.datetime.fromtimestamp(message.message_timestamp / 1000, datetime.UTC)


@job(InviteUser, actor_name="invite_user", idempotency_key=_key("invite"),
     **{**OPTIONS, "rate_limit": [TELEGRAM_BOT, TELEGRAM_CHAT]})
def invite_user(ctx: Context, payload: InviteUser) -> dict[str, Any]:
    ttl = datetime.timedelta(milliseconds=ctx.settings.invite_link_ttl_ms)
    return bot.invite_user(ctx.database, ctx.providers.telegram_bot(), user_id=payload.user_id,
                           channel_id=payload.channel_id, subscription_id=payload.subscription_id,
                           order_id=payload.order_id, sent_at=_sent_at(), link_ttl=ttl)


@job(RemoveUser, actor_name="remove_user", idempotency_key=_key("remove"), **OPTIONS)
def remove_user(ctx: Context, payload: RemoveUser) -> dict[str, Any]:
    return bot.remove_user(ctx.database, ctx.providers.telegram_bot(), user_id=payload.user_id,
                           channel_id=payload.channel_id, subscription_id=payload.subscription_id,
                           reason=payload.reason, sent_at=_sent_at())


@job(VerifyPermissions, actor_name="verify_permissions", idempotency_key=_key("verify"),
     **OPTIONS)
def verify_permissions(ctx: Context, payload: VerifyPermissions) -> dict[str, Any]:
    return bot.verify_permissions(ctx.database, ctx.providers.telegram_bot(),
                                  channel_id=payload.channel_id, listing_id=payload.listing_id)


# Producers: the seed's four integration points. Each returns the message id of the job
# that has the key: a new one, or the same operation enqueued in the last 5 minutes.

def _send(app: App, name: str, payload: Payload) -> str:
    key = _key(name.split("_")[0])(**payload.model_dump(by_alias=True, exclude_none=True))
    return enqueue(app, name, payload, key=key, on_duplicate="existing").message_id


def on_subscription_activated(app: App, user_id: str, channel_id: int, subscription_id: str,
                              order_id: str | None = None) -> str:
    """Invite the subscriber."""
    payload = InviteUser(operation="INVITE_USER", user_id=user_id, channel_id=channel_id,
                         subscription_id=subscription_id, order_id=order_id)
    return _send(app, "invite_user", payload)


def on_subscription_expired(app: App, user_id: str, channel_id: int,
                            subscription_id: str) -> str:
    payload = RemoveUser(operation="REMOVE_USER", user_id=user_id, channel_id=channel_id,
                         subscription_id=subscription_id, reason="expiry")
    return _send(app, "remove_user", payload)


def on_refund_approved(app: App, user_id: str, channel_id: int, subscription_id: str) -> str:
    payload = RemoveUser(operation="REMOVE_USER", user_id=user_id, channel_id=channel_id,
                         subscription_id=subscription_id, reason="refund")
    return _send(app, "remove_user", payload)


def on_listing_created(app: App, channel_id: int, listing_id: str | None = None) -> str:
    """Check the bot's rights before the listing goes live (the result lands on it)."""
    payload = VerifyPermissions(operation="VERIFY_PERMISSIONS", channel_id=channel_id,
                                listing_id=listing_id)
    return _send(app, "verify_permissions", payload)

"""Notifications on queue `notification` (seed 003): push, email, SMS, and batches.

At most 5 run at once across every worker; FCM sends share the FCM_RATE_LIMIT budget
(default 500/s) through Redis. Every delivery is recorded (status, provider id, error,
attempts); a dead push token is marked and not used again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import EmailStr, Field

from integrations.messages import Push
from processing import notifications
from processing.notifications import Target
from switchyard.jobs import Context, Payload, job

QUEUE = "notification"
OPTIONS: dict[str, Any] = {"queue_name": QUEUE, "concurrency": 5, "concurrency_key": QUEUE}

Data = dict[str, str]


class SendPush(Payload):
    type: Literal["push"] | None = None
    user_id: str = Field(min_length=1, max_length=64)
    fcm_token: str = Field(min_length=1, max_length=4096)
    title: str = Field(max_length=256)
    body: str = Field(max_length=2048)
    data: Data = Field(default_factory=dict, description="String values only (FCM)")


class SendEmailNotification(Payload):
    type: Literal["email"] | None = None
    user_id: str = Field(min_length=1, max_length=64)
    email: EmailStr
    title: str = Field(min_length=1, max_length=256)
    body: str = Field(max_length=20_000)
    data: Data = Field(default_factory=dict)


class SendSms(Payload):
    type: Literal["sms"] | None = None
    user_id: str = Field(min_length=1, max_length=64)
    phone_number: str = Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164")
    title: str | None = Field(None, max_length=256)
    body: str = Field(min_length=1, max_length=1600)


class SendBatch(Payload):
    user_ids: list[str] = Field(min_length=1, max_length=10_000)
    title: str = Field(max_length=256)
    body: str = Field(max_length=2048)
    data: Data = Field(default_factory=dict)


def _target(ctx: Context, channel: str, user_id: str) -> Target:
    return Target(str(ctx.key), channel, ctx.message_id, user_id)


@job(SendPush, actor_name="send_push", **OPTIONS)
def send_push(ctx: Context, payload: SendPush) -> dict[str, Any]:
    push = Push(token=payload.fcm_token, title=payload.title, body=payload.body,
                data=payload.data)
    return notifications.send_push(ctx.database, ctx.providers.push(),
                                   _target(ctx, "push", payload.user_id), push)


@job(SendEmailNotification, actor_name="send_email_notification", **OPTIONS)
def send_email_notification(ctx: Context, payload: SendEmailNotification) -> dict[str, Any]:
    return notifications.send_email(
        ctx.database, ctx.providers.email(), _target(ctx, "email", payload.user_id),
        to=str(payload.email), title=payload.title, body=payload.body, data=payload.data,
        app_name=ctx.settings.app_name)


@job(SendSms, actor_name="send_sms", **OPTIONS)
def send_sms(ctx: Context, payload: SendSms) -> dict[str, Any]:
    return notifications.send_sms(ctx.database, ctx.providers.sms(),
                                  _target(ctx, "sms", payload.user_id), to=payload.phone_number,
                                  body=payload.body)


@job(SendBatch, actor_name="send_batch_notifications", **OPTIONS)
def send_batch_notifications(ctx: Context, payload: SendBatch) -> dict[str, Any]:
    return notifications.send_batch(ctx.database, ctx.providers.push(), ctx.message_id,
                                    str(ctx.key), user_ids=payload.user_ids,
                                    title=payload.title, body=payload.body, data=payload.data)

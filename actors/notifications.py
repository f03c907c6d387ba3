"""Notifications on queue `notification` (seed 003): push, email, SMS, and batches.

At most 5 run at once across every worker. Pushes keep to FCM_RATE_LIMIT (default
500/s) and SMS to TWILIO_RATE_LIMIT per sending number, shared by every process (declared
rate limits: a push over the limit waits its turn once, spending no attempt). Every
delivery is recorded (status, provider id, error, attempts); a dead push token is
marked and not used again.

`send_batch_notifications` is a batch (`switchyard.runtime.batches`) of one push job per
live device of its users (`send_batch_push`), whose callback
(`record_batch_notifications`) runs once every push ended and records seed 003's
`{successCount, failureCount}`: exact under retries, duplicates and a killed worker. A
device's push is sent once however often the batch job runs, a transient failure
retries that device only, and a user with no live device counts as a failure.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import EmailStr, Field, ValidationInfo, field_validator

from integrations.fcm import build_message
from integrations.messages import Push
from processing import notifications
from processing.notifications import Target
from switchyard.base.errors import PermanentError
from switchyard.base.rates import RateLimit
from switchyard.runtime.batches import send_batch
from switchyard.runtime.jobs import Context, Payload, job

QUEUE = "notification"
#: A run that passes its time limit (a hung connection) is retried with the usual
#: backoff: a retried job finds its deliveries' rows, and what was sent is not sent again.
OPTIONS: dict[str, Any] = {"queue_name": QUEUE, "concurrency": 5, "concurrency_key": QUEUE,
                           "on_time_limit": "retry"}

#: FCM's send budget and a Twilio number's, shared by every process.
FCM = RateLimit("fcm", "fcm_rate_limit", 1_000)
TWILIO = RateLimit("twilio-sender", "twilio_rate_limit", 1_000)

Data = dict[str, str]
#: What FCM allows a message (notification, data and platform blocks), as it says when
#: refused: checked at enqueue, so an API caller gets a 422 rather than a dead letter.
PUSH_DATA = ("String values only. With the title and body, at most 4096 bytes as FCM "
             "measures a message (FCM's limit).")


def fits_fcm(data: Data, info: ValidationInfo) -> Data:
    """`data`, if the push it makes with the title and body is within FCM's size."""
    title, body = info.data.get("title"), info.data.get("body")
    if title is None or body is None:
        return data  # the title or body is refused already
    try:
        build_message(Push(token="-", title=title, body=body, data=data))
    except PermanentError as error:
        raise ValueError(f"{error.message} (title, body and data together)") from None
    return data


class SendPush(Payload):
    type: Literal["push"] | None = None
    user_id: str = Field(min_length=1, max_length=64)
    fcm_token: str = Field(min_length=1, max_length=4096)
    title: str = Field(max_length=256)
    body: str = Field(max_length=2048)
    data: Data = Field(default_factory=dict, validate_default=True, description=PUSH_DATA)

    _fits_fcm = field_validator("data")(fits_fcm)


class SendEmailNotification(Payload):
    type: Literal["email"] | None = None
    user_id: str = Field(min_length=1, max_length=64)
    email: EmailStr
    title: str = Field(min_length=1, max_length=256, pattern=r"^[^\r\n]*$",
                       description="The email's subject: one line.")
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
    data: Data = Field(default_factory=dict, validate_default=True, description=PUSH_DATA)

    _fits_fcm = field_validator("data")(fits_fcm)


class SendBatchPush(Payload):
    """One device's push of a batch (made by `send_batch_notifications`)."""

    batch_key: str = Field(min_length=1, max_length=256)
    user_id: str = Field(min_length=1, max_length=64)
    device_id: str = Field(min_length=1, max_length=64)
    fcm_token: str = Field(min_length=1, max_length=4096)
    title: str = Field(max_length=256)
    body: str = Field(max_length=2048)
    data: Data = Field(default_factory=dict)


class BatchCounts(Payload):
    """A batch's counts, as its callback gets them."""

    batch_id: str = Field(min_length=1, max_length=200)
    success_count: int = Field(ge=0)
    failure_count: int = Field(ge=0)
    total: int = Field(ge=0)
    parent_id: str | None = Field(None, max_length=64)


def _target(ctx: Context, channel: str, user_id: str) -> Target:
    return Target(str(ctx.key), channel, ctx.message_id, user_id)


@job(SendPush, actor_name="send_push", **OPTIONS, rate_limit=FCM)
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


@job(SendSms, actor_name="send_sms", **OPTIONS, rate_limit=TWILIO)
def send_sms(ctx: Context, payload: SendSms) -> dict[str, Any]:
    return notifications.send_sms(ctx.database, ctx.providers.sms(),
                                  _target(ctx, "sms", payload.user_id), to=payload.phone_number,
                                  body=payload.body)


@job(SendBatch, actor_name="send_batch_notifications", **OPTIONS)
def send_batch_notifications(ctx: Context, payload: SendBatch) -> dict[str, Any]:
    key = str(ctx.key)
    devices, without = notifications.batch_devices(ctx.database, ctx.message_id, key,
                                                   user_ids=payload.user_ids)
    pushes = [("send_batch_push", SendBatchPush(
        batch_key=key, user_id=user, device_id=device, fcm_token=token, title=payload.title,
        body=payload.body, data=payload.data)) for device, user, token in devices]
    # The batch's id is the job's key: a run of this job again sends the same batch.
    sent = send_batch(ctx.app, pushes, callback=(
        "record_batch_notifications", {"parentId": ctx.message_id}),
        batch_id=batch_id_of(key), failed=without)
    return {"batchId": sent.batch_id, "callbackId": sent.callback_id,
            "userCount": len(set(payload.user_ids)), "deviceCount": len(devices),
            "withoutDevice": without}


@job(SendBatchPush, actor_name="send_batch_push", **OPTIONS, rate_limit=FCM)
def send_batch_push(ctx: Context, payload: SendBatchPush) -> dict[str, Any]:
    push = Push(token=payload.fcm_token, title=payload.title, body=payload.body,
                data=payload.data)
    target = Target(f"{payload.batch_key}:{payload.device_id}", "push", ctx.message_id,
                    payload.user_id, batch_id=payload.batch_key, device_id=payload.device_id)
    return notifications.send_batch_push(ctx.database, ctx.providers.push(), target, push)


@job(BatchCounts, actor_name="record_batch_notifications", queue_name=QUEUE, max_retries=3,
     store_results=True, on_time_limit="retry")
def record_batch_notifications(ctx: Context, payload: BatchCounts) -> dict[str, Any]:
    """Seed 003's answer for a batch: how many pushes went out, how many did not."""
    return {"successCount": payload.success_count, "failureCount": payload.failure_count,
            "total": payload.total, "batchId": payload.batch_id, "parentId": payload.parent_id}


def batch_id_of(key: str) -> str:
    """A batch id for a job key (ids may not hold ':')."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard:batch:{key}"))

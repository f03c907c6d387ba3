"""Notifications (seed 003): push, email and SMS to one recipient, and push in batches
(a batch of one push job per device: `actors.notifications`).

Every delivery has a row keyed by the job's idempotency key (a batch adds the device),
written `pending` before the provider is called and `sent`, `failed` or `skipped`
after, with its attempts counted. A retried job finds its rows: what was sent is not
sent again. A push to a token FCM called dead marks the device dead, and dead tokens
are skipped from then on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from integrations.fcm import DeadToken
from integrations.messages import EmailSender, Push, PushSender, Sent, Sms, SmsSender
from processing import email as templates
from store import notifications as deliveries
from store.db import Database
from switchyard.base.errors import JobError, PermanentError


@dataclass(frozen=True)
class Target:
    """Who a delivery is for, and under which key it is recorded."""

    key: str
    channel: str
    job_id: str
    user_id: str | None
    batch_id: str | None = None
    device_id: str | None = None


def deliver(db: Database, target: Target, send: Callable[[], Sent], *,
            retry_failed: bool = True) -> dict[str, Any]:
    """Send once per key: record the attempt, call `send`, record what came of it."""
    with db.session() as session:
        row = deliveries.get_or_create(
            session, target.key, channel=target.channel, job_id=target.job_id,
            user_id=target.user_id, batch_id=target.batch_id, device_id=target.device_id)
        if row.status == deliveries.SENT or (row.status != deliveries.PENDING
                                             and not retry_failed):
            return _outcome(row.id, row.status, row.provider, row.provider_id, row.error)
        row.attempts += 1
        row_id = row.id
    try:
        sent = send()
    except JobError as error:
        final = isinstance(error, PermanentError)
        _record(db, row_id, status=deliveries.FAILED if final else deliveries.PENDING,
                error=str(error), error_code=error.code)
        raise
    _record(db, row_id, status=deliveries.SENT, provider=sent.provider, provider_id=sent.id)
    return _outcome(row_id, deliveries.SENT, sent.provider, sent.id, None)


def skip(db: Database, target: Target, reason: str) -> dict[str, Any]:
    with db.session() as session:
        row = deliveries.get_or_create(
            session, target.key, channel=target.channel, job_id=target.job_id,
            user_id=target.user_id, batch_id=target.batch_id, device_id=target.device_id)
        if row.status != deliveries.SENT:
            deliveries.finish(session, row, status=deliveries.SKIPPED, error=reason)
        return _outcome(row.id, row.status, row.provider, row.provider_id, row.error)


def _record(db: Database, row_id: str, *, status: str, **fields: Any) -> None:
    with db.session() as session:
        row = session.get(deliveries.NotificationDelivery, row_id)
        if row is not None:
            deliveries.finish(session, row, status=status, **fields)


def _outcome(row_id: str, status: str, provider: str | None, provider_id: str | None,
             error: str | None) -> dict[str, Any]:
    return {"deliveryId": row_id, "status": status, "provider": provider, "id": provider_id,
            **({"error": error} if error else {})}


def send_push(db: Database, sender: PushSender, target: Target, push: Push) -> dict[str, Any]:
    """One push; a token already known dead is skipped, a newly dead one marked."""
    with db.session() as session:
        dead = deliveries.is_dead_token(session, push.token)
    if dead:
        return skip(db, target, "the device token is dead (FCM said UNREGISTERED)")
    return _push(db, sender, target, push)


def send_email(db: Database, sender: EmailSender, target: Target, *, to: str, title: str,
               body: str, data: dict[str, str], app_name: str) -> dict[str, Any]:
    mail = templates.notification(to, title, body, data, app_name=app_name)
    return deliver(db, target, lambda: sender.send(mail, idempotency_key=target.key))


def send_sms(db: Database, sender: SmsSender, target: Target, *, to: str,
             body: str) -> dict[str, Any]:
    return deliver(db, target, lambda: sender.send(Sms(to=to, body=body),
                                                   idempotency_key=target.key))


def batch_devices(db: Database, job_id: str, key: str, *,
                  user_ids: list[str]) -> tuple[list[tuple[str, str, str]], int]:
    """A batch's devices (id, user, token), every live device of these users; a user
    with none is recorded as skipped, and counted (the second value) as a failure."""
    with db.session() as session:
        devices = [(d.id, d.user_id, d.push_token)
                   for d in deliveries.live_devices(session, user_ids)]
    without = sorted(set(user_ids) - {user for _, user, _ in devices})
    for user_id in without:
        skip(db, Target(f"{key}:{user_id}", "push", job_id, user_id, batch_id=key),
             "no live device")
    return devices, len(without)


def send_batch_push(db: Database, sender: PushSender, target: Target,
                    push: Push) -> dict[str, Any]:
    """One device's push of a batch: sent once per device however often the batch runs;
    a refusal (dead token, refused message) is a failure of the batch (`ok: false`),
    not a dead letter; a transient error retries this device only."""
    try:
        outcome = send_push(db, sender, target, push)
    except PermanentError as error:
        return {"ok": False, "status": deliveries.FAILED, "error": error.message}
    return {**outcome, "ok": outcome["status"] == deliveries.SENT}


def _push(db: Database, sender: PushSender, target: Target, push: Push, *,
          retry_failed: bool = True) -> dict[str, Any]:
    """Deliver one push; a token FCM calls dead is marked so it is not used again."""
    try:
        return deliver(db, target, lambda: sender.send(push, idempotency_key=target.key),
                       retry_failed=retry_failed)
    except DeadToken as error:
        with db.session() as session:
            deliveries.mark_token_dead(session, push.token, error.message)
        raise



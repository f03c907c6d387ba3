"""Devices and notification deliveries (seed 003).

Each delivery (one push, email or SMS to one recipient) has a row keyed by its
idempotency key. It is written `pending` before the provider is called and `sent`,
`failed` or `skipped` after, so a retried job can tell what it already delivered, and
every attempt is counted.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import Device, NotificationDelivery, utcnow

#: A delivery's states.
PENDING, SENT, FAILED, SKIPPED = "pending", "sent", "failed", "skipped"


def live_devices(session: Session, user_ids: Iterable[str]) -> list[Device]:
    """The devices of these users whose push tokens FCM has not declared dead."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return []
    return list(session.scalars(
        select(Device).where(Device.user_id.in_(ids), Device.dead_at.is_(None))
        .order_by(Device.user_id, Device.created_at)))


def is_dead_token(session: Session, token: str) -> bool:
    found = session.scalars(select(Device.dead_at).where(Device.push_token == token)).first()
    return found is not None


def mark_token_dead(session: Session, token: str, reason: str) -> int:
    """Mark the device with this token dead so it is not used again; rows changed."""
    result = session.execute(
        update(Device).where(Device.push_token == token, Device.dead_at.is_(None))
        .values(dead_at=utcnow(), dead_reason=reason[:255]))
    return int(getattr(result, "rowcount", 0) or 0)


def get_or_create(session: Session, key: str, *, channel: str, job_id: str | None,
                  user_id: str | None, batch_id: str | None = None,
                  device_id: str | None = None) -> NotificationDelivery:
    """The delivery with this key, created pending if new."""
    delivery = session.scalars(
        select(NotificationDelivery).where(NotificationDelivery.key == key)).first()
    if delivery is not None:
        return delivery
    delivery = NotificationDelivery(
        key=key, channel=channel, job_id=job_id, user_id=user_id, batch_id=batch_id,
        device_id=device_id, status=PENDING, attempts=0)
    try:
        with session.begin_nested():
            session.add(delivery)
    except IntegrityError:  # the same delivery began elsewhere just now
        found = session.scalars(
            select(NotificationDelivery).where(NotificationDelivery.key == key)).first()
        assert found is not None
        return found
    return delivery


def finish(session: Session, delivery: NotificationDelivery, *, status: str,
           provider: str | None = None, provider_id: str | None = None,
           error: str | None = None, error_code: str | int | None = None) -> None:
    delivery.status = status
    delivery.provider = provider or delivery.provider
    delivery.provider_id = provider_id or delivery.provider_id
    delivery.error = error[:2000] if error else None
    delivery.error_code = str(error_code)[:64] if error_code is not None else None
    if status == SENT:
        delivery.sent_at = utcnow()


def for_batch(session: Session, batch_id: str) -> list[NotificationDelivery]:
    return list(session.scalars(
        select(NotificationDelivery).where(NotificationDelivery.batch_id == batch_id)))

"""Source channels: the Telegram channels the user account joins (seed 000)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import SourceChannel

#: A SourceChannel's lifecycle.
PENDING, ACTIVE, FAILED, LEFT = "pending", "active", "failed", "left"


def get(session: Session, channel_id: str) -> SourceChannel | None:
    return session.get(SourceChannel, channel_id)


def by_username(session: Session, username: str) -> SourceChannel | None:
    return session.scalars(
        select(SourceChannel).where(SourceChannel.username == username)).first()


def by_telegram_id(session: Session, telegram_id: int) -> SourceChannel | None:
    return session.scalars(
        select(SourceChannel).where(SourceChannel.telegram_id == telegram_id)).first()


def find_or_create(session: Session, username: str) -> tuple[SourceChannel, bool]:
    """The channel with this username, created pending if new; and whether it was created."""
    found = by_username(session, username)
    if found is not None:
        return found, False
    channel = SourceChannel(username=username, status=PENDING, is_active=False)
    try:
        with session.begin_nested():  # another producer may create it at the same time
            session.add(channel)
    except IntegrityError:
        found = by_username(session, username)
        assert found is not None
        return found, False
    return channel, True


def mark_joined(channel: SourceChannel, info: dict[str, Any]) -> None:
    """The join succeeded: the channel is active with what Telegram says of it."""
    channel.telegram_id = info["telegram_id"]
    channel.title = info.get("title")
    if info.get("username"):
        channel.username = info["username"]
    channel.participants = info.get("participants")
    channel.is_active = True
    channel.status = ACTIVE
    channel.last_error = None


def mark_failed(channel: SourceChannel, reason: str) -> None:
    channel.is_active = False
    channel.status = FAILED
    channel.last_error = reason[:2000]


def mark_left(channel: SourceChannel) -> None:
    channel.is_active = False
    channel.status = LEFT

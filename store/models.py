"""The tables the workers read and write, and nothing more.

Ids are strings (UUIDs made here, or the id another service gave), Telegram ids are
64-bit integers, and every time is stored and returned in UTC. The schema itself is
owned by the Alembic migrations in `store/migrations`; a model change needs one.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class UtcDateTime(TypeDecorator[datetime.datetime]):
    """A timezone-aware UTC datetime on every database (SQLite keeps none)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime.datetime | None,
                           dialect: Any) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: give it a timezone")
        return value.astimezone(datetime.UTC)

    def process_result_value(self, value: datetime.datetime | None,
                             dialect: Any) -> datetime.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value


class Base(DeclarativeBase):
    type_annotation_map = {datetime.datetime: UtcDateTime, dict[str, Any]: JSON}


class Timestamps:
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SourceChannel(Timestamps, Base):
    """A Telegram channel the user account reads from (seed 000)."""

    __tablename__ = "source_channels"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    title: Mapped[str | None] = mapped_column(String(255))
    participants: Mapped[int | None] = mapped_column(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    #: pending (join queued), active, failed (join failed: see last_error), left
    status: Mapped[str] = mapped_column(String(16), default="pending")
    last_error: Mapped[str | None] = mapped_column(Text)
    join_job_id: Mapped[str | None] = mapped_column(String(64))


class User(Timestamps, Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    telegram_user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    name: Mapped[str | None] = mapped_column(String(255))


class Device(Timestamps, Base):
    """A device's push token; `dead_at` is set once FCM says the token is gone."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    push_token: Mapped[str] = mapped_column(String(512), unique=True)
    platform: Mapped[str | None] = mapped_column(String(16))  # android, ios, web
    dead_at: Mapped[datetime.datetime | None] = mapped_column()
    dead_reason: Mapped[str | None] = mapped_column(String(255))


class Listing(Timestamps, Base):
    """A paid channel listing; the bot's rights in it are verified before it goes live."""

    __tablename__ = "listings"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    channel_id: Mapped[int] = mapped_column(BigInteger, index=True)  # Telegram chat id
    title: Mapped[str | None] = mapped_column(String(255))
    bot_verified: Mapped[bool | None] = mapped_column(Boolean)
    bot_permissions: Mapped[dict[str, Any] | None] = mapped_column()
    verification_error: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime.datetime | None] = mapped_column()


class Subscription(Timestamps, Base):
    """A user's paid access to a listing's channel (seed 001's integration points)."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    listing_id: Mapped[str | None] = mapped_column(
        ForeignKey("listings.id", ondelete="SET NULL"), index=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)  # Telegram chat id
    order_id: Mapped[str | None] = mapped_column(String(64))
    #: active, expired, refunded (final: `store.subscriptions.not_entitled`)
    status: Mapped[str] = mapped_column(String(16), default="active")
    invite_link: Mapped[str | None] = mapped_column(String(255))
    invite_expires_at: Mapped[datetime.datetime | None] = mapped_column()
    invited_at: Mapped[datetime.datetime | None] = mapped_column()
    #: When the removal that closed it was sent (its job's first enqueue): an invite sent
    #: before it is superseded by it.
    removed_at: Mapped[datetime.datetime | None] = mapped_column()
    removal_reason: Mapped[str | None] = mapped_column(String(16))  # expiry, refund


class NotificationDelivery(Timestamps, Base):
    """One push, email or SMS to one recipient, and what became of it."""

    __tablename__ = "notification_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    #: The delivery's idempotency key: a retried job finds its own row here.
    key: Mapped[str] = mapped_column(String(255), unique=True)
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(8))  # push, email, sms
    #: pending, sent, failed, skipped
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime.datetime | None] = mapped_column()


class Message(Timestamps, Base):
    """A chat message as far as the workers need it: its media and what became of it.

    `media_key` is the uploaded original (seed 003's `s3Key`); media jobs fill the
    processed and thumbnail keys, the metadata and the status; the old-messages cleanup
    clears the media fields (`media_removed_at`) and keeps the rest.
    """

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    chat_id: Mapped[str | None] = mapped_column(String(64), index=True)
    body: Mapped[str | None] = mapped_column(Text)
    media_type: Mapped[str | None] = mapped_column(String(16))  # image, video, audio
    media_key: Mapped[str | None] = mapped_column(String(512))
    media_original_name: Mapped[str | None] = mapped_column(String(255))
    media_url: Mapped[str | None] = mapped_column(String(1024))
    thumbnail_url: Mapped[str | None] = mapped_column(String(1024))
    media_metadata: Mapped[dict[str, Any] | None] = mapped_column()
    #: pending, processing, done, failed
    media_status: Mapped[str | None] = mapped_column(String(16))
    media_error: Mapped[str | None] = mapped_column(Text)
    media_processed_at: Mapped[datetime.datetime | None] = mapped_column()
    media_removed_at: Mapped[datetime.datetime | None] = mapped_column()


class MediaObject(Base):
    """Every object a job wrote to storage, so the orphaned-media cleanup can tell the
    referenced from the orphaned."""

    __tablename__ = "media_objects"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    content_type: Mapped[str | None] = mapped_column(String(128))
    owner_user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    #: original, processed, thumbnail, other
    kind: Mapped[str] = mapped_column(String(16), default="other")
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow, index=True)


class Story(Base):
    """A story: its media is deleted and the row soft-deleted once it has expired."""

    __tablename__ = "stories"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    media_key: Mapped[str | None] = mapped_column(String(512))
    thumbnail_key: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    #: Set by the stories cleanup (the media keys are cleared in the same commit).
    deleted_at: Mapped[datetime.datetime | None] = mapped_column()

    __table_args__ = (Index("ix_stories_live", "deleted_at", "created_at"),
                      Index("ix_stories_media_key", "media_key"),
                      Index("ix_stories_thumbnail_key", "thumbnail_key"))


class UserStats(Base):
    """Per-user counters the cleanup jobs keep up to date."""

    __tablename__ = "user_stats"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    stories_expired: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UserSession(Base):
    """A signed-in session of a user on a device; idle ones are deleted."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    last_active_at: Mapped[datetime.datetime] = mapped_column(default=utcnow, index=True)


class TempFile(Base):
    """A temporary object in storage (an upload in progress, an export...)."""

    __tablename__ = "temp_files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(512), unique=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    user_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow, index=True)


class Prekey(Base):
    """A one-time Signal prekey: its id and public key only (the key server's share)."""

    __tablename__ = "prekeys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key_id: Mapped[int] = mapped_column(Integer)
    public_key: Mapped[str] = mapped_column(String(64))  # X25519, base64
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    #: When a client fetched it: a used prekey is never handed out again.
    used_at: Mapped[datetime.datetime | None] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("user_id", "key_id", name="uq_prekeys_user_key"),)


class CleanupRun(Base):
    """One run of a cleanup job: what it removed, how many bytes, how long it took."""

    __tablename__ = "cleanup_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job: Mapped[str] = mapped_column(String(32), index=True)
    #: `cleanup_records` deletes runs by it (migration 0005).
    started_at: Mapped[datetime.datetime] = mapped_column(default=utcnow, index=True)
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    objects: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Rows made or updated besides: prekeys generated, devices signed out.
    created: Mapped[int] = mapped_column(BigInteger, default=0)
    #: True when the run stopped at its time budget with work left for the next one.
    more: Mapped[bool] = mapped_column(Boolean, default=False)


class DiscordGuild(Timestamps, Base):
    """A Discord guild's configuration for the Discord jobs (seed 004): registered on
    `guild.create`, removed on `guild.delete`."""

    __tablename__ = "discord_guilds"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)  # the guild's snowflake
    name: Mapped[str | None] = mapped_column(String(100))
    #: Sent as a DM to each member who joins; None: no welcome.
    welcome_message: Mapped[str | None] = mapped_column(Text)
    #: Given to each member who joins (once past membership screening).
    default_role_id: Mapped[str | None] = mapped_column(String(20))
    #: Given when a member completes the verification flow.
    verified_role_id: Mapped[str | None] = mapped_column(String(20))
    #: Role ids members may give themselves with the role command.
    self_roles: Mapped[list[str]] = mapped_column(JSON, default=list)


#: The cleanup jobs look messages up by age and by what their media fields name
#: (migration 0003): without these, each batch would read the whole table.
for _column in ("created_at", "media_key", "media_url", "thumbnail_url"):
    Index(f"ix_messages_{_column}", Message.__table__.c[_column])
#: `cleanup_records` deletes deliveries past their retention by age (migration 0005).
Index("ix_notification_deliveries_created_at", NotificationDelivery.__table__.c.created_at)

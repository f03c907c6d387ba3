"""The cleanup jobs' queries (seed 003): each picks one bounded batch, oldest first.

Every "pick" query selects rows that still match the job's rule, so a run killed
halfway is continued by the next one: what was committed no longer matches, what was
not is picked again. Keys are collected before the reference to them is cleared in the
same commit; the objects are deleted after it.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from store.models import (
    CleanupRun,
    Device,
    MediaObject,
    Message,
    NotificationDelivery,
    Prekey,
    Story,
    TempFile,
    User,
    UserSession,
    UserStats,
)

#: What the sessions cleanup writes on a device left with no session.
SIGNED_OUT = "signed out: every session of this device was idle too long"
#: Switchyard's own records, each with its id and the indexed time its age is told by
#: (`cleanup_records`): the notification deliveries and the cleanup log.
RECORDS = {
    "notification_deliveries": (NotificationDelivery.id, NotificationDelivery.created_at),
    "cleanup_runs": (CleanupRun.id, CleanupRun.started_at),
}


def expired_stories(session: Session, before: datetime.datetime,
                    limit: int) -> list[tuple[str, str, list[str]]]:
    """Live stories created before `before`: (id, user id, media keys), oldest first."""
    rows = session.execute(
        select(Story.id, Story.user_id, Story.media_key, Story.thumbnail_key)
        .where(Story.deleted_at.is_(None), Story.created_at < before)
        .order_by(Story.created_at, Story.id).limit(limit))
    return [(id_, user, [k for k in (media, thumb) if k]) for id_, user, media, thumb in rows]


def soft_delete_stories(session: Session, ids: Sequence[str], when: datetime.datetime) -> None:
    session.execute(update(Story).where(Story.id.in_(ids))
                    .values(deleted_at=when, media_key=None, thumbnail_key=None))


def count_expired(session: Session, per_user: Counter[str]) -> None:
    """Add each user's newly expired stories to their statistics row (made if missing)."""
    found = {stats.user_id: stats for stats in session.scalars(
        select(UserStats).where(UserStats.user_id.in_(list(per_user))))}
    for user_id, count in per_user.items():
        stats = found.get(user_id)
        if stats is None:
            session.add(UserStats(user_id=user_id, stories_expired=count))
        else:
            stats.stories_expired += count


def idle_sessions(session: Session, before: datetime.datetime,
                  limit: int) -> list[tuple[str, str | None]]:
    """Sessions last active before `before`: (id, device id), oldest first."""
    rows = session.execute(
        select(UserSession.id, UserSession.device_id)
        .where(UserSession.last_active_at < before)
        .order_by(UserSession.last_active_at, UserSession.id).limit(limit))
    return [(id_, device) for id_, device in rows]


def delete_sessions(session: Session, ids: Sequence[str]) -> int:
    result = session.execute(delete(UserSession).where(UserSession.id.in_(ids)))
    return int(getattr(result, "rowcount", 0) or 0)


def sign_out_devices(session: Session, device_ids: Iterable[str],
                     when: datetime.datetime) -> int:
    """Mark the devices that have no session left, so no push goes to them."""
    ids = sorted(set(device_ids))
    if not ids:
        return 0
    still = select(UserSession.device_id).where(UserSession.device_id.in_(ids))
    result = session.execute(
        update(Device).where(Device.id.in_(ids), Device.id.not_in(still),
                             Device.dead_at.is_(None))
        .values(dead_at=when, dead_reason=SIGNED_OUT))
    return int(getattr(result, "rowcount", 0) or 0)


def old_message_media(session: Session, before: datetime.datetime,
                      limit: int) -> list[tuple[str, list[str]]]:
    """Messages created before `before` that still have media: (id, the values of their
    media fields), oldest first."""
    rows = session.execute(
        select(Message.id, Message.media_key, Message.media_url, Message.thumbnail_url)
        .where(Message.media_removed_at.is_(None), Message.created_at < before,
               or_(Message.media_key.is_not(None), Message.media_url.is_not(None),
                   Message.thumbnail_url.is_not(None)))
        .order_by(Message.created_at, Message.id).limit(limit))
    return [(id_, [v for v in values if v]) for id_, *values in rows]


def objects_of_messages(session: Session, message_ids: Sequence[str]) -> list[str]:
    """The keys recorded as written for these messages (processed files, thumbnails)."""
    return list(session.scalars(
        select(MediaObject.key).where(MediaObject.message_id.in_(message_ids))))


def clear_message_media(session: Session, ids: Sequence[str], when: datetime.datetime) -> None:
    """Clear the media references and keep the rest of each message (its metadata)."""
    session.execute(update(Message).where(Message.id.in_(ids)).values(
        media_key=None, media_url=None, thumbnail_url=None, media_removed_at=when))


def old_temp_files(session: Session, before: datetime.datetime,
                   limit: int) -> list[tuple[str, str, int]]:
    rows = session.execute(
        select(TempFile.id, TempFile.key, TempFile.size).where(TempFile.created_at < before)
        .order_by(TempFile.created_at, TempFile.id).limit(limit))
    return [(id_, key, int(size or 0)) for id_, key, size in rows]


def delete_temp_files(session: Session, ids: Sequence[str]) -> None:
    session.execute(delete(TempFile).where(TempFile.id.in_(ids)))


def old_used_prekeys(session: Session, before: datetime.datetime, limit: int) -> list[str]:
    return list(session.scalars(
        select(Prekey.id).where(Prekey.used_at < before).order_by(Prekey.used_at, Prekey.id)
        .limit(limit)))


def delete_prekeys(session: Session, ids: Sequence[str]) -> None:
    session.execute(delete(Prekey).where(Prekey.id.in_(ids)))


def users_short_of(session: Session, minimum: int, limit: int) -> list[str]:
    """A page of users with fewer than `minimum` unused prekeys, in id order; a user
    topped up no longer matches, so a run stopped halfway is continued by the next."""
    unused = (select(Prekey.user_id, func.count(Prekey.id).label("n"))
              .where(Prekey.used_at.is_(None)).group_by(Prekey.user_id).subquery())
    return list(session.scalars(
        select(User.id).outerjoin(unused, unused.c.user_id == User.id)
        .where(func.coalesce(unused.c.n, 0) < minimum).order_by(User.id).limit(limit)))


def prekey_counts(session: Session,
                  user_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per user: (unused prekeys, highest key id of any prekey)."""
    unused = func.count(Prekey.id).filter(Prekey.used_at.is_(None))
    rows = session.execute(
        select(Prekey.user_id, unused, func.max(Prekey.key_id))
        .where(Prekey.user_id.in_(user_ids)).group_by(Prekey.user_id))
    return {user: (int(count or 0), int(top or 0)) for user, count, top in rows}


def key_sizes(session: Session, keys: Sequence[str]) -> dict[str, int]:
    """The recorded size of each of these objects that has a record."""
    rows = session.execute(select(MediaObject.key, MediaObject.size)
                           .where(MediaObject.key.in_(keys)))
    return {key: int(size or 0) for key, size in rows}


def forget_objects(session: Session, keys: Sequence[str]) -> None:
    """Drop the records of objects that were deleted."""
    session.execute(delete(MediaObject).where(MediaObject.key.in_(keys)))


def referenced(session: Session, keys: Sequence[str]) -> set[str]:
    """Which of these keys a row still refers to: a story, a message (by a media field,
    or by its recorded objects while its media is kept) or a temporary file."""
    keys = list(keys)
    columns = (Story.media_key, Story.thumbnail_key, Message.media_key, Message.media_url,
               Message.thumbnail_url, TempFile.key)
    found: set[str] = set()
    for column in columns:
        found.update(session.scalars(select(column).where(column.in_(keys))))
    live = select(Message.id).where(Message.media_removed_at.is_(None))
    found.update(session.scalars(select(MediaObject.key).where(
        MediaObject.key.in_(keys), MediaObject.message_id.in_(live))))
    return found


def recorded_objects(session: Session, prefix: str, after: str, before: datetime.datetime,
                     limit: int) -> list[tuple[str, int]]:
    """Recorded objects under `prefix` written before `before`, a page after key `after`
    (key order)."""
    rows = session.execute(
        select(MediaObject.key, MediaObject.size)
        .where(MediaObject.key.startswith(prefix, autoescape=True), MediaObject.key > after,
               MediaObject.created_at < before)
        .order_by(MediaObject.key).limit(limit))
    return [(key, int(size or 0)) for key, size in rows]


def record_run(session: Session, run: CleanupRun) -> None:
    session.add(run)


def old_records(session: Session, table: str, before: datetime.datetime,
                limit: int) -> list[str]:
    """Ids of `table`'s records (one of `RECORDS`) from before `before`, oldest first."""
    id_, when = RECORDS[table]
    return list(session.scalars(select(id_).where(when < before)
                                .order_by(when, id_).limit(limit)))


def delete_records(session: Session, table: str, ids: Sequence[str]) -> int:
    id_, _ = RECORDS[table]
    result = session.execute(delete(id_.class_).where(id_.in_(ids)))
    return int(getattr(result, "rowcount", 0) or 0)

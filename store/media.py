"""The message record a media job updates, and the `media_objects` it writes (seed 003).

A message goes `processing` when a job starts on it, then `done` (URLs, metadata and
the time, written once) or `failed` (the reason). Every object a job writes has a
`media_objects` row keyed by its storage key, so a retried job that writes the same
keys updates the same rows, and the orphaned-media cleanup can tell referenced from
orphaned objects.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import MediaObject, Message, utcnow

#: A message's media states.
PROCESSING, DONE, FAILED = "processing", "done", "failed"


def finished(session: Session, message_id: str, media_key: str) -> Message | None:
    """The message if its media from `media_key` is already processed (a duplicate)."""
    message = session.get(Message, message_id)
    if message is not None and message.media_status == DONE \
            and message.media_key == media_key:
        return message
    return None


def start(session: Session, message_id: str, *, user_id: str, media_type: str,
          media_key: str, original_name: str | None) -> None:
    """Mark the message's media `processing`, creating the message if it is new here."""
    message = session.get(Message, message_id)
    if message is None:
        message = Message(id=message_id, user_id=user_id)
        try:
            with session.begin_nested():
                session.add(message)
        except IntegrityError:  # the same message began elsewhere just now
            message = session.get(Message, message_id)
            assert message is not None
    message.media_type = media_type
    message.media_key = media_key
    message.media_original_name = original_name
    message.media_status = PROCESSING
    message.media_error = None


def record_object(session: Session, key: str, *, size: int, content_type: str,
                  owner_user_id: str, message_id: str, kind: str) -> None:
    """Insert the object's row, or bring it up to date when a retry rewrote the key."""
    row = session.get(MediaObject, key)
    if row is None:
        row = MediaObject(key=key)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            row = session.get(MediaObject, key)
            assert row is not None
    row.size, row.content_type, row.kind = size, content_type, kind
    row.owner_user_id, row.message_id = owner_user_id, message_id


def finish(session: Session, message_id: str, *, key: str, thumbnail_key: str | None,
           metadata: dict[str, Any]) -> Message:
    """Record the processed media once: a message already done keeps what it has.

    `media_url` and `thumbnail_url` hold storage keys, never URLs: a client is given
    a signed, expiring URL for them when it asks (web/media.py)."""
    message = session.get(Message, message_id)
    assert message is not None, "start() creates the message first"
    if message.media_status != DONE:
        message.media_url = key
        message.thumbnail_url = thumbnail_key
        message.media_metadata = metadata
        message.media_status = DONE
        message.media_error = None
        message.media_processed_at = utcnow()
    return message


def fail(session: Session, message_id: str, reason: str) -> None:
    """Record why the media cannot be processed (our reason, never the file's content)."""
    message = session.get(Message, message_id)
    if message is not None and message.media_status != DONE:
        message.media_status = FAILED
        message.media_error = reason[:2000]

"""Cleanup processors (seed 003) on SQLite and PostgreSQL, with moto's S3 and local disk:
each deletes exactly what its rule says, and a run killed mid-batch is finished by the
next one without a row ever naming a missing object."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from integrations.storage import LocalStorage, S3Storage, Storage
from processing import cleanup
from store.db import Database
from store.models import (
    CleanupRun,
    Device,
    MediaObject,
    Message,
    Prekey,
    Story,
    TempFile,
    User,
    UserSession,
    UserStats,
    new_id,
    utcnow,
)
from tests.fakes.s3 import ACCESS_KEY, SECRET_KEY

DAY = datetime.timedelta(days=1)
MINUTE = datetime.timedelta(minutes=1)
LIMITS: dict[str, Any] = {"batch": 10, "budget_ms": 60_000}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture(params=["s3", "local"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "storage")
        return
    moto = request.getfixturevalue("moto_s3")
    bucket = moto.new_bucket()
    yield S3Storage(bucket, endpoint_url=moto.url, access_key_id=ACCESS_KEY,
                    secret_access_key=SECRET_KEY)
    moto.drop_bucket(bucket)


def add(db: Database, *rows: Any) -> None:
    with db.session() as session:
        session.add_all(rows)


def user(db: Database) -> str:
    user_id = new_id()
    add(db, User(id=user_id))
    return user_id


def put(storage: Storage, db: Database, key: str, **record: Any) -> str:
    """An object in storage with its `media_objects` record."""
    storage.put(key, b"x" * 100)
    add(db, MediaObject(key=key, size=100, **record))
    return key


def keys(storage: Storage) -> set[str]:
    return {item.key for item in storage.list()}


def all_rows(db: Database, model: Any) -> list[Any]:
    with db.session() as session:
        return list(session.scalars(select(model)))


def story(db: Database, storage: Storage, user_id: str, age: datetime.timedelta,
          now: datetime.datetime) -> Story:
    media = put(storage, db, f"stories/{new_id()}.jpg", owner_user_id=user_id)
    thumb = put(storage, db, f"stories/{new_id()}-thumb.jpg", owner_user_id=user_id)
    row = Story(user_id=user_id, media_key=media, thumbnail_key=thumb, created_at=now - age)
    add(db, row)
    return row


def test_stories_past_the_ttl_lose_their_media_and_are_soft_deleted(db, storage):
    # given stories just past 24 h and just inside it
    now, owner = utcnow(), user(db)
    old = [story(db, storage, owner, DAY + MINUTE, now) for _ in range(3)]
    young = story(db, storage, owner, DAY - MINUTE, now)
    # when the stories job runs
    result = cleanup.expired_stories(db, storage, ttl_ms=86_400_000, now=now, **LIMITS)
    # then only the old ones are soft-deleted, their media gone, the user's count updated
    assert (result["rows"], result["objects"], result["bytes"]) == (3, 6, 600)
    rows = {row.id: row for row in all_rows(db, Story)}
    assert all(rows[s.id].deleted_at == now and rows[s.id].media_key is None for s in old)
    assert rows[young.id].deleted_at is None
    assert keys(storage) == {young.media_key, young.thumbnail_key}
    assert {o.key for o in all_rows(db, MediaObject)} == keys(storage)
    [stats] = all_rows(db, UserStats)
    assert (stats.user_id, stats.stories_expired) == (owner, 3)
    [run] = all_rows(db, CleanupRun)
    assert (run.job, run.rows, run.objects, run.more) == ("stories", 3, 6, False)


def test_idle_sessions_are_deleted_and_their_lone_devices_signed_out(db):
    now, owner = utcnow(), user(db)
    lone, shared = Device(user_id=owner, push_token=new_id()), Device(
        user_id=owner, push_token=new_id())
    add(db, lone, shared)
    idle = 30 * DAY
    add(db, UserSession(id="old-1", user_id=owner, device_id=lone.id,
                        last_active_at=now - idle - MINUTE),
        UserSession(id="old-2", user_id=owner, device_id=shared.id,
                    last_active_at=now - idle - MINUTE),
        UserSession(id="recent", user_id=owner, device_id=shared.id,
                    last_active_at=now - idle + MINUTE))
    result = cleanup.idle_sessions(db, idle_ms=int(idle.total_seconds() * 1000), now=now,
                                   **LIMITS)
    assert (result["rows"], result["created"]) == (2, 1)
    assert [s.id for s in all_rows(db, UserSession)] == ["recent"]
    devices = {d.id: d for d in all_rows(db, Device)}
    assert devices[lone.id].dead_at == now and devices[shared.id].dead_at is None


def test_old_messages_lose_their_media_and_keep_the_rest(db, storage):
    now, year = utcnow(), 365 * DAY
    old_id, young_id, plain_id = new_id(), new_id(), new_id()
    original = put(storage, db, f"uploads/{old_id}.jpg")
    processed = put(storage, db, f"media/{old_id}/p.jpg", message_id=old_id, kind="processed")
    kept = put(storage, db, f"uploads/{young_id}.jpg")
    add(db, Message(id=old_id, body="hi", media_type="image", media_key=original,
                    media_url="https://cdn.example/p.jpg", media_metadata={"width": 10},
                    created_at=now - year - MINUTE),
        Message(id=young_id, media_key=kept, created_at=now - year + MINUTE),
        Message(id=plain_id, body="old, no media", created_at=now - year - DAY))
    result = cleanup.old_message_media(db, storage, ttl_ms=int(year.total_seconds() * 1000),
                                       now=now, **LIMITS)
    assert (result["rows"], result["objects"]) == (1, 2)
    assert keys(storage) == {kept}
    messages = {m.id: m for m in all_rows(db, Message)}
    old = messages[old_id]
    assert (old.media_key, old.media_url, old.thumbnail_url) == (None, None, None)
    assert (old.body, old.media_type, old.media_metadata) == ("hi", "image", {"width": 10})
    assert old.media_removed_at == now and messages[young_id].media_key == kept
    assert messages[plain_id].media_removed_at is None
    assert processed not in {o.key for o in all_rows(db, MediaObject)}


def test_temp_files_past_the_ttl_are_deleted_with_their_objects(db, storage):
    now = utcnow()
    old, young = f"tmp/{new_id()}", f"tmp/{new_id()}"
    for key in (old, young):
        storage.put(key, b"y" * 7)
    add(db, TempFile(key=old, size=7, created_at=now - DAY - MINUTE),
        TempFile(key=young, size=7, created_at=now - DAY + MINUTE))
    result = cleanup.old_temp_files(db, storage, ttl_ms=86_400_000, now=now, **LIMITS)
    assert (result["rows"], result["objects"], result["bytes"]) == (1, 1, 7)
    assert [t.key for t in all_rows(db, TempFile)] == [young] and keys(storage) == {young}


def test_prekeys_used_long_ago_go_and_every_user_has_the_minimum(db):
    now, month = utcnow(), 30 * DAY
    short, full = user(db), user(db)
    add(db, Prekey(id="used-old", user_id=short, key_id=1, public_key="a",
                   used_at=now - month - MINUTE),
        Prekey(id="used-recent", user_id=short, key_id=2, public_key="b",
               used_at=now - month + MINUTE),
        Prekey(id="unused", user_id=short, key_id=3, public_key="c"),
        *[Prekey(user_id=full, key_id=i, public_key="d") for i in range(1, 13)])
    result = cleanup.rotate_prekeys(db, used_ttl_ms=int(month.total_seconds() * 1000),
                                    minimum=10, now=now, **LIMITS)
    assert (result["rows"], result["created"]) == (1, 9)
    rows = all_rows(db, Prekey)
    assert "used-old" not in {p.id for p in rows}
    mine = [p for p in rows if p.user_id == short and p.used_at is None]
    assert len(mine) == 10 and len([p for p in rows if p.user_id == full]) == 12
    made = [p for p in mine if p.id != "unused"]
    assert sorted(p.key_id for p in made) == list(range(4, 13))
    assert all(len(base64.b64decode(p.public_key)) == 32 for p in made)


def test_orphaned_media_past_the_grace_period_is_deleted_and_logged(db, storage):
    # given referenced objects (story, message original and processed, temp file),
    # orphans with and without a record, and a record whose object is already gone
    owner, message_id = user(db), new_id()
    live = story(db, storage, owner, MINUTE, utcnow())
    original = put(storage, db, f"uploads/{message_id}.jpg")
    processed = put(storage, db, f"media/{message_id}/p.jpg", message_id=message_id)
    temp = f"tmp/{new_id()}"
    storage.put(temp, b"t")
    add(db, Message(id=message_id, media_key=original, media_url="https://cdn/p.jpg"),
        TempFile(key=temp, size=1))
    put(storage, db, f"media/{new_id()}.jpg")  # recorded, named by no row
    for _ in range(2):
        storage.put(f"stray/{new_id()}", b"z")  # not even recorded
    add(db, MediaObject(key=f"gone/{new_id()}", size=5))
    referenced = {live.media_key, live.thumbnail_key, original, processed, temp}
    hour = 3_600_000
    # when the job runs inside the grace period: nothing goes
    young = cleanup.orphaned_media(db, storage, grace_ms=hour, now=utcnow(), **LIMITS)
    assert young["objects"] == 0 and len(keys(storage)) == 8
    # and past it: every orphan goes, with its record, and the run is logged
    later = utcnow() + datetime.timedelta(hours=1, minutes=1)
    result = cleanup.orphaned_media(db, storage, grace_ms=hour, now=later, **LIMITS)
    assert keys(storage) == referenced
    assert {o.key for o in all_rows(db, MediaObject)} == referenced - {temp}
    assert result["objects"] == 4  # three listed orphans and the record of a gone one
    assert [r.job for r in all_rows(db, CleanupRun)] == ["orphaned_media"] * 2


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs."""


class DiesOnDelete:
    """Real storage whose process dies at the first `delete_many` call that deletes
    `key`: before the call deletes anything (`after=False`), or once it has (`after=True`):
    whenever a batch deletes its objects, its commit must already have cleared their
    references, and must not be undone."""

    def __init__(self, storage: Storage, key: str, *, after: bool = False) -> None:
        self.storage, self.key, self.after = storage, key, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def delete_many(self, keys: Sequence[str]) -> int:
        if self.key not in keys:
            return self.storage.delete_many(keys)
        if self.after:
            self.storage.delete_many(keys)
        raise Killed()


#: Where a run dies: at its second batch's deletes, before them or right after them.
KILL_POINTS = pytest.mark.parametrize("after", [False, True],
                                      ids=["before-deletes", "after-deletes"])


def named_keys(db: Database) -> set[str]:
    """The storage keys rows refer to (as `store.cleanup.referenced` reads them): stories'
    media, messages' media fields and the recorded objects of messages that keep their
    media, and temporary files."""
    named = {k for s in all_rows(db, Story) for k in (s.media_key, s.thumbnail_key) if k}
    messages = all_rows(db, Message)
    named |= {value for m in messages for value in (m.media_key, m.media_url, m.thumbnail_url)
              if value and cleanup.is_key(value)}
    live = {m.id for m in messages if m.media_removed_at is None}
    named |= {o.key for o in all_rows(db, MediaObject) if o.message_id in live}
    return named | {t.key for t in all_rows(db, TempFile)}


def no_row_names_a_missing_object(db: Database, storage: Storage) -> bool:
    return named_keys(db) <= keys(storage)


@KILL_POINTS
def test_a_run_killed_mid_batch_then_run_again_ends_as_one_run(db, storage, after):
    # given 25 expired stories and 2 live ones, in batches of 10, oldest first (the
    # second batch is expired[14] to expired[5])
    now, owner = utcnow(), user(db)
    expired = [story(db, storage, owner, DAY + MINUTE * (i + 1), now) for i in range(25)]
    live = [story(db, storage, owner, DAY - MINUTE, now) for _ in range(2)]
    # when the run dies at the second batch's deletes (before them, or right after)
    dying = DiesOnDelete(storage, str(expired[10].media_key), after=after)
    with pytest.raises(Killed):
        cleanup.expired_stories(db, dying, ttl_ms=86_400_000, now=now, **LIMITS)  # type: ignore[arg-type]
    assert no_row_names_a_missing_object(db, storage)
    # and runs again
    cleanup.expired_stories(db, storage, ttl_ms=86_400_000, now=now, **LIMITS)
    # then every expired story is done once, no row names a missing object, and only
    # the objects the dead batch did not delete are left, which the orphaned-media job
    # collects
    rows = {s.id: s for s in all_rows(db, Story)}
    assert all(rows[s.id].deleted_at is not None for s in expired)
    assert all(rows[s.id].deleted_at is None for s in live)
    [stats] = all_rows(db, UserStats)
    assert stats.stories_expired == 25
    assert no_row_names_a_missing_object(db, storage)
    live_keys = {k for s in live for k in (s.media_key, s.thumbnail_key)}
    assert len(keys(storage) - live_keys) == (0 if after else 20)
    cleanup.orphaned_media(db, storage, grace_ms=0, now=utcnow() + MINUTE, **LIMITS)
    assert keys(storage) == live_keys


def old_message(db: Database, storage: Storage, now: datetime.datetime,
                age: datetime.timedelta) -> Message:
    """A message with an uploaded original and a recorded processed file, both stored."""
    message_id = new_id()
    original = put(storage, db, f"uploads/{message_id}.jpg")
    put(storage, db, f"media/{message_id}/p.jpg", message_id=message_id, kind="processed")
    row = Message(id=message_id, media_type="image", media_key=original,
                  media_url=f"https://cdn.example/{message_id}.jpg", created_at=now - age)
    add(db, row)
    return row


@KILL_POINTS
def test_a_message_media_run_killed_mid_batch_never_leaves_a_row_naming_a_missing_object(
    db, storage, after
):
    # given 25 messages past the TTL and 2 within it, each with two objects, in batches of
    # 10, oldest first (the second batch is old[14] to old[5])
    now, year = utcnow(), 365 * DAY
    ttl_ms = int(year.total_seconds() * 1000)
    old = [old_message(db, storage, now, year + MINUTE * (i + 1)) for i in range(25)]
    young = [old_message(db, storage, now, year - MINUTE) for _ in range(2)]
    young_keys = {key for m in young for key in (m.media_key, f"media/{m.id}/p.jpg")}
    # when the run dies at its second batch's deletes (before them, or right after)
    dying = DiesOnDelete(storage, str(old[10].media_key), after=after)
    with pytest.raises(Killed):
        cleanup.old_message_media(db, dying, ttl_ms=ttl_ms, now=now, **LIMITS)  # type: ignore[arg-type]
    # then no message names an object that is gone
    assert no_row_names_a_missing_object(db, storage)
    # and a second run does only the batch left (the dead one was committed)
    again = cleanup.old_message_media(db, storage, ttl_ms=ttl_ms, now=now, **LIMITS)
    assert again["rows"] == 5
    rows = {m.id: m for m in all_rows(db, Message)}
    assert all(rows[m.id].media_removed_at == now and rows[m.id].media_key is None
               for m in old)
    assert all(rows[m.id].media_removed_at is None for m in young)
    assert no_row_names_a_missing_object(db, storage)
    # and only the objects the dead batch did not delete are left, for the orphan job
    assert len(keys(storage) - young_keys) == (0 if after else 20)
    cleanup.orphaned_media(db, storage, grace_ms=0, now=utcnow() + MINUTE, **LIMITS)
    assert keys(storage) == young_keys


@KILL_POINTS
def test_a_temp_file_run_killed_mid_batch_never_leaves_a_row_naming_a_missing_object(
    db, storage, after
):
    # given 25 temporary files past the TTL and 2 within it, in batches of 10, oldest
    # first (the second batch is old[14] to old[5])
    now = utcnow()
    old = [f"tmp/{new_id()}" for _ in range(25)]
    young = {f"tmp/{new_id()}" for _ in range(2)}
    for i, key in enumerate(old):
        storage.put(key, b"t" * 3)
        add(db, TempFile(key=key, size=3, created_at=now - DAY - MINUTE * (i + 1)))
    for key in young:
        storage.put(key, b"t" * 3)
        add(db, TempFile(key=key, size=3, created_at=now - DAY + MINUTE))
    # when the run dies at its second batch's deletes (before them, or right after)
    dying = DiesOnDelete(storage, old[10], after=after)
    with pytest.raises(Killed):
        cleanup.old_temp_files(db, dying, ttl_ms=86_400_000, now=now, **LIMITS)  # type: ignore[arg-type]
    # then no temporary file names an object that is gone
    assert no_row_names_a_missing_object(db, storage)
    # and a second run does only the batch left (the dead one was committed)
    again = cleanup.old_temp_files(db, storage, ttl_ms=86_400_000, now=now, **LIMITS)
    assert again["rows"] == 5
    assert {t.key for t in all_rows(db, TempFile)} == young
    assert no_row_names_a_missing_object(db, storage)
    # and only the objects the dead batch did not delete are left, for the orphan job
    assert len(keys(storage) - young) == (0 if after else 10)
    cleanup.orphaned_media(db, storage, grace_ms=0, now=utcnow() + MINUTE, **LIMITS)
    assert keys(storage) == young


def test_a_run_stops_at_its_budget_and_the_next_goes_on(db, storage):
    now, owner = utcnow(), user(db)
    for i in range(12):
        add(db, Story(user_id=owner, created_at=now - DAY - MINUTE * (i + 1)))
    first = cleanup.expired_stories(db, storage, ttl_ms=86_400_000, now=now, batch=5,
                                    budget_ms=0)
    assert (first["rows"], first["more"]) == (5, True)
    second = cleanup.expired_stories(db, storage, ttl_ms=86_400_000, now=now, batch=5,
                                     budget_ms=60_000)
    assert (second["rows"], second["more"]) == (7, False)
    with db.session() as session:
        assert session.scalar(select(func.count()).where(Story.deleted_at.is_(None))) == 0


def test_a_cancelled_run_stops_between_batches_its_batches_kept(db, storage):
    # given 12 expired stories, in batches of 5, and a job cancelled after its first batch
    now, owner = utcnow(), user(db)
    for i in range(12):
        add(db, Story(user_id=owner, created_at=now - DAY - MINUTE * (i + 1)))
    between: list[tuple[int, float]] = []

    def cancelled_after_one(run: cleanup.Run) -> bool:
        between.append((run.rows, run.elapsed_ms))
        return True

    token = cleanup.BETWEEN_BATCHES.set(cancelled_after_one)
    try:
        first = cleanup.expired_stories(db, storage, ttl_ms=86_400_000, now=now, batch=5,
                                        budget_ms=60_000)
    finally:
        cleanup.BETWEEN_BATCHES.reset(token)
    # then it stopped after one batch, which is committed and logged, and says why
    assert [rows for rows, _ in between] == [5]
    assert (first["rows"], first["more"], first["cancelled"]) == (5, True, True)
    assert [run.rows for run in all_rows(db, CleanupRun)] == [5]
    # and the next run goes on from there
    second = cleanup.expired_stories(db, storage, ttl_ms=86_400_000, now=now, batch=5,
                                     budget_ms=60_000)
    assert (second["rows"], second["more"]) == (7, False) and "cancelled" not in second


def test_s3_deletes_more_than_a_thousand_keys_in_batches(moto_s3):
    bucket = moto_s3.new_bucket()
    storage = S3Storage(bucket, endpoint_url=moto_s3.url, access_key_id=ACCESS_KEY,
                        secret_access_key=SECRET_KEY)
    names = [f"k/{i:05d}" for i in range(1_005)]
    for name in names:
        moto_s3.client.put_object(Bucket=bucket, Key=name, Body=b"")
    assert storage.delete_many([*names, "k/never-there"]) == 1_006
    assert list(storage.list()) == []
    moto_s3.drop_bucket(bucket)


def test_a_prekey_top_up_stopped_at_its_budget_is_finished_by_the_next_run(db):
    users = [user(db) for _ in range(25)]
    first = cleanup.rotate_prekeys(db, used_ttl_ms=0, minimum=3, batch=10, budget_ms=0)
    assert (first["created"], first["more"]) == (30, True)
    second = cleanup.rotate_prekeys(db, used_ttl_ms=0, minimum=3, **LIMITS)
    assert (second["created"], second["more"]) == (45, False)
    with db.session() as session:
        counts = dict(session.execute(select(Prekey.user_id, func.count())
                                      .group_by(Prekey.user_id)).all())
    assert counts == {user_id: 3 for user_id in users}


def test_orphaned_media_outside_the_prefix_is_left_alone(db, storage):
    inside, outside = f"media/{new_id()}", f"avatars/{new_id()}"
    for key in (inside, outside):
        put(storage, db, key)
    result = cleanup.orphaned_media(db, storage, grace_ms=0, prefix="media/",
                                    now=utcnow() + MINUTE, **LIMITS)
    assert result["objects"] == 1 and keys(storage) == {outside}
    assert [o.key for o in all_rows(db, MediaObject)] == [outside]

"""Cleanup (seed 003): expired stories, idle sessions, old messages' media, temporary
files, prekey rotation and orphaned media, each in bounded batches; and Switchyard's own
records past their retention (`old_records`: notification deliveries, the cleanup log).

Every batch is one commit, and a batch clears its references before it deletes the
objects they named: a run killed anywhere leaves no row pointing at a missing object,
only objects nothing points at, which `orphaned_media` collects after its grace period.
A run stops at its time budget (`more` in its result); the next run picks up what is
left, because each batch picks only rows that still match the rule. Every run is
written to the cleanup log (`cleanup_runs`).
"""

from __future__ import annotations

import base64
import contextvars
import datetime
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.orm import Session

from integrations.storage import InvalidKey, Storage, validate_key
from store import cleanup as store
from store.db import Database
from store.models import CleanupRun, Prekey, utcnow

T = TypeVar("T")


#: What the running job does between two batches of a run (`actors/cleanup.py`: say its
#: progress; True, cancelled: the run stops there as if its budget were spent, its
#: batches committed, and its result says `cancelled`).
BETWEEN_BATCHES: contextvars.ContextVar[Callable[[Run], bool] | None] = contextvars.ContextVar(
    "between_batches", default=None)


@dataclass
class Run:
    """One run of a cleanup job: its batch size, time budget and tally."""

    job: str
    batch: int
    budget_ms: int
    now: datetime.datetime = field(default_factory=utcnow)
    rows: int = 0
    objects: int = 0
    bytes: int = 0
    created: int = 0
    more: bool = False
    started: float = field(default_factory=time.monotonic)
    #: Stopped between two batches because its job was cancelled (`BETWEEN_BATCHES`).
    cancelled: bool = False

    @property
    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    def out_of_time(self) -> bool:
        """Whether the budget is spent (then `more`: the next run goes on), or the job
        asked to stop (`BETWEEN_BATCHES`, called here, between two batches)."""
        self.more = self.more or self.elapsed_ms >= self.budget_ms
        between = BETWEEN_BATCHES.get()
        if not self.more and between is not None and between(self):
            self.more = self.cancelled = True
        return self.more

    def finish(self, db: Database) -> dict[str, Any]:
        """Write the run to the cleanup log; its figures, for the job's result."""
        duration = int((time.monotonic() - self.started) * 1000)
        with db.session() as session:
            store.record_run(session, CleanupRun(
                job=self.job, started_at=self.now, duration_ms=duration, rows=self.rows,
                objects=self.objects, bytes=self.bytes, created=self.created, more=self.more))
        result = {"job": self.job, "rows": self.rows, "objects": self.objects,
                  "bytes": self.bytes, "created": self.created, "durationMs": duration,
                  "more": self.more}
        return {**result, "cancelled": True} if self.cancelled else result


def ago(run: Run, ms: int) -> datetime.datetime:
    return run.now - datetime.timedelta(milliseconds=ms)


def in_batches(run: Run, batch: Callable[[], int]) -> None:
    """Call `batch` (one commit; returns the rows it handled) until a batch comes back
    short or the budget is spent."""
    while batch() >= run.batch and not run.out_of_time():
        pass


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def is_key(value: str) -> bool:
    """Whether a media field holds a storage key (not a URL or something else)."""
    try:
        validate_key(value)
    except InvalidKey:
        return False
    return True


def remove_objects(db: Database, storage: Storage, run: Run, keys: Iterable[str],
                   sizes: dict[str, int] | None = None) -> None:
    """Delete these objects (their references are already cleared and committed), except
    any another row still refers to, then drop their records."""
    wanted = [key for key in dict.fromkeys(keys) if is_key(key)]
    if not wanted:
        return
    with db.session() as session:
        still = store.referenced(session, wanted)
        wanted = [key for key in wanted if key not in still]
        known = {**store.key_sizes(session, wanted), **(sizes or {})}
    if not wanted:
        return
    storage.delete_many(wanted)
    with db.session() as session:
        store.forget_objects(session, wanted)
    run.objects += len(wanted)
    run.bytes += sum(known.get(key, 0) for key in wanted)


def expired_stories(db: Database, storage: Storage, *, ttl_ms: int, batch: int,
                    budget_ms: int, now: datetime.datetime | None = None) -> dict[str, Any]:
    """Soft-delete stories older than `ttl_ms`, count them in their users' statistics,
    and delete their media."""
    run = Run("stories", batch, budget_ms, now or utcnow())
    before = ago(run, ttl_ms)

    def one() -> int:
        with db.session() as session:
            rows = store.expired_stories(session, before, run.batch)
            if rows:
                store.soft_delete_stories(session, [id_ for id_, _, _ in rows], run.now)
                store.count_expired(session, Counter(user for _, user, _ in rows))
        run.rows += len(rows)
        remove_objects(db, storage, run, (key for *_, keys in rows for key in keys))
        return len(rows)

    in_batches(run, one)
    return run.finish(db)


def idle_sessions(db: Database, *, idle_ms: int, batch: int, budget_ms: int,
                  now: datetime.datetime | None = None) -> dict[str, Any]:
    """Delete sessions idle for `idle_ms`; a device left with none is signed out (its
    push token is not used again)."""
    run = Run("sessions", batch, budget_ms, now or utcnow())
    before = ago(run, idle_ms)

    def one() -> int:
        with db.session() as session:
            rows = store.idle_sessions(session, before, run.batch)
            if rows:
                store.delete_sessions(session, [id_ for id_, _ in rows])
                run.created += store.sign_out_devices(
                    session, [device for _, device in rows if device], run.now)
        run.rows += len(rows)
        return len(rows)

    in_batches(run, one)
    return run.finish(db)


def old_message_media(db: Database, storage: Storage, *, ttl_ms: int, batch: int,
                      budget_ms: int, now: datetime.datetime | None = None) -> dict[str, Any]:
    """Remove the media of messages older than `ttl_ms`: clear their media fields (the
    rest of the message stays), then delete the objects."""
    run = Run("messages", batch, budget_ms, now or utcnow())
    before = ago(run, ttl_ms)

    def one() -> int:
        with db.session() as session:
            rows = store.old_message_media(session, before, run.batch)
            ids = [id_ for id_, _ in rows]
            keys = [key for _, values in rows for key in values]
            if rows:
                keys += store.objects_of_messages(session, ids)
                store.clear_message_media(session, ids, run.now)
        run.rows += len(rows)
        remove_objects(db, storage, run, keys)
        return len(rows)

    in_batches(run, one)
    return run.finish(db)


def old_temp_files(db: Database, storage: Storage, *, ttl_ms: int, batch: int,
                   budget_ms: int, now: datetime.datetime | None = None) -> dict[str, Any]:
    """Delete temporary files older than `ttl_ms`: the rows, then the objects."""
    run = Run("temp_files", batch, budget_ms, now or utcnow())
    before = ago(run, ttl_ms)

    def one() -> int:
        with db.session() as session:
            rows = store.old_temp_files(session, before, run.batch)
            if rows:
                store.delete_temp_files(session, [id_ for id_, _, _ in rows])
        run.rows += len(rows)
        remove_objects(db, storage, run, [key for _, key, _ in rows],
                       {key: size for _, key, size in rows})
        return len(rows)

    in_batches(run, one)
    return run.finish(db)


def new_public_key() -> str:
    """A fresh X25519 public key, base64; the private half is not kept here."""
    public = X25519PrivateKey.generate().public_key()
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def top_up(session: Session, user_ids: list[str], minimum: int) -> int:
    """Give each of these users new prekeys up to `minimum` unused ones; how many."""
    counts = store.prekey_counts(session, user_ids)
    made = 0
    for user_id in user_ids:
        unused, top = counts.get(user_id, (0, 0))
        for key_id in range(top + 1, top + 1 + max(0, minimum - unused)):
            session.add(Prekey(user_id=user_id, key_id=key_id, public_key=new_public_key()))
            made += 1
    return made


def rotate_prekeys(db: Database, *, used_ttl_ms: int, minimum: int, batch: int,
                   budget_ms: int, now: datetime.datetime | None = None) -> dict[str, Any]:
    """Delete prekeys used more than `used_ttl_ms` ago, then top every user up to
    `minimum` unused prekeys (`created`)."""
    run = Run("prekeys", batch, budget_ms, now or utcnow())
    before = ago(run, used_ttl_ms)

    def drop() -> int:
        with db.session() as session:
            ids = store.old_used_prekeys(session, before, run.batch)
            store.delete_prekeys(session, ids)
        run.rows += len(ids)
        return len(ids)

    def fill() -> int:
        with db.session() as session:
            users = store.users_short_of(session, minimum, run.batch)
            run.created += top_up(session, users, minimum)
        return len(users)

    in_batches(run, drop)
    if not run.more:
        in_batches(run, fill)
    return run.finish(db)


def orphaned_media(db: Database, storage: Storage, *, grace_ms: int, batch: int,
                   budget_ms: int, prefix: str = "",
                   now: datetime.datetime | None = None) -> dict[str, Any]:
    """Delete objects under `prefix` that no row refers to, written more than `grace_ms`
    ago: first those storage lists, then those only the object records know of."""
    run = Run("orphaned_media", batch, budget_ms, now or utcnow())
    before = ago(run, grace_ms)
    listed = (item for item in storage.list(prefix) if item.modified < before)
    for chunk in chunks(listed, run.batch):
        collect(db, storage, run, {item.key: item.size for item in chunk})
        if run.out_of_time():
            return run.finish(db)
    after = ""
    while not run.out_of_time():
        with db.session() as session:
            page = store.recorded_objects(session, prefix, after, before, run.batch)
        collect(db, storage, run, dict(page))
        if len(page) < run.batch:
            break
        after = page[-1][0]
    return run.finish(db)


def collect(db: Database, storage: Storage, run: Run, sizes: dict[str, int]) -> None:
    """Delete the objects among these that nothing refers to, and their records."""
    if not sizes:
        return
    with db.session() as session:
        orphans = sorted(set(sizes) - store.referenced(session, list(sizes)))
    if orphans:
        storage.delete_many(orphans)
        with db.session() as session:
            store.forget_objects(session, orphans)
    run.objects += len(orphans)
    run.bytes += sum(sizes[key] for key in orphans)


def old_records(db: Database, *, retention_ms: dict[str, int], batch: int, budget_ms: int,
                now: datetime.datetime | None = None) -> dict[str, Any]:
    """Delete Switchyard's own records older than their table's retention (`table ->
    ms`, tables of `store.cleanup.RECORDS`), oldest first, table by table."""
    run = Run("records", batch, budget_ms, now or utcnow())
    for table, ms in retention_ms.items():
        before = ago(run, ms)

        def one(table: str = table, before: datetime.datetime = before) -> int:
            with db.session() as session:
                ids = store.old_records(session, table, before, run.batch)
                store.delete_records(session, table, ids)
            run.rows += len(ids)
            return len(ids)

        in_batches(run, one)
        if run.more:
            break
    return run.finish(db)

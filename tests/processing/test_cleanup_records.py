"""`cleanup_records`: Switchyard's own records (notification deliveries, the cleanup log)
go once past their retention, in batches, on SQLite and PostgreSQL; the clock runs it."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

import schedules
from processing import cleanup
from store.db import Database
from store.models import CleanupRun, NotificationDelivery, new_id, utcnow

DAY = datetime.timedelta(days=1)
MINUTE = datetime.timedelta(minutes=1)
RETENTION = {"notification_deliveries": 30 * 86_400_000, "cleanup_runs": 90 * 86_400_000}


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def deliveries(db: Database, age: datetime.timedelta, n: int, now: datetime.datetime) -> set[str]:
    rows = [NotificationDelivery(key=new_id(), channel="push", status="sent",
                                 created_at=now - age) for _ in range(n)]
    with db.session() as session:
        session.add_all(rows)
    return {row.id for row in rows}


def runs(db: Database, age: datetime.timedelta, n: int, now: datetime.datetime) -> set[str]:
    rows = [CleanupRun(job="stories", started_at=now - age) for _ in range(n)]
    with db.session() as session:
        session.add_all(rows)
    return {row.id for row in rows}


def ids(db: Database, model: Any) -> set[str]:
    with db.session() as session:
        return set(session.scalars(select(model.id)))


def test_records_past_their_retention_go_in_batches_and_newer_ones_stay(db):
    # given deliveries and cleanup runs just past and just inside their retention
    now = utcnow()
    old_deliveries = deliveries(db, 30 * DAY + MINUTE, 7, now)
    kept_deliveries = deliveries(db, 30 * DAY - MINUTE, 2, now)
    old_runs = runs(db, 90 * DAY + MINUTE, 4, now)
    kept_runs = runs(db, 90 * DAY - MINUTE, 1, now) | runs(db, 31 * DAY, 1, now)
    # when the records job runs with batches of 3
    result = cleanup.old_records(db, retention_ms=RETENTION, batch=3, budget_ms=60_000,
                                 now=now)
    # then only the old rows are gone, all of them, and the run is logged
    assert (result["job"], result["rows"], result["more"]) == ("records", 11, False)
    assert ids(db, NotificationDelivery) == kept_deliveries
    assert not old_deliveries & ids(db, NotificationDelivery)
    logged = ids(db, CleanupRun) - kept_runs
    assert len(logged) == 1 and not old_runs & ids(db, CleanupRun)


def test_a_run_out_of_time_stops_after_a_batch_and_the_next_goes_on(db):
    # given more old deliveries than one batch
    now = utcnow()
    old = deliveries(db, 40 * DAY, 5, now)
    # when a run has no time left after its first batch
    first = cleanup.old_records(db, retention_ms=RETENTION, batch=2, budget_ms=0, now=now)
    # then it deleted one batch, the oldest, and says there is more
    assert (first["rows"], first["more"]) == (2, True)
    assert len(old & ids(db, NotificationDelivery)) == 3
    # and the next run finishes the rest
    second = cleanup.old_records(db, retention_ms=RETENTION, batch=2, budget_ms=60_000,
                                 now=now)
    assert (second["rows"], second["more"]) == (3, False)
    assert ids(db, NotificationDelivery) == set()


def test_the_clock_runs_cleanup_records_daily_with_the_seed_body_shape():
    [schedule] = [s for s in schedules.SCHEDULES if s.actor == "cleanup_records"]
    assert schedule.payload == {"type": "records"}
    assert schedule.timezone == "UTC"
    assert schedule.cron.split()[2:] == ["*", "*", "*"]

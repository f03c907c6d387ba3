"""`cleanup_records` end to end: sent with its `{"type": "records"}` body to a real worker
(SQLite and PostgreSQL), it deletes the deliveries past their retention and keeps the
others."""

from __future__ import annotations

import datetime

from sqlalchemy import select

from store.models import NotificationDelivery, utcnow
from tests.actors.conftest import World, unique
from tests.actors.test_cleanup import run


def delivery(world: World, age: datetime.timedelta) -> str:
    key = unique("delivery")
    with world.db.session() as session:
        session.add(NotificationDelivery(key=key, channel="email", status="sent",
                                         created_at=utcnow() - age))
    return key


def test_cleanup_records_runs_from_its_body_and_bounds_the_deliveries(world):
    # given a delivery past the 30 days' retention and one inside it
    old = delivery(world, datetime.timedelta(days=31))
    new = delivery(world, datetime.timedelta(days=29))
    # when the records job runs as the clock sends it
    job = run(world, "records", {"type": "records"})
    # then it is done, and only the old delivery is gone
    assert job["status"] == "done", job
    assert job["result"]["job"] == "records" and job["result"]["more"] is False
    with world.db.session() as session:
        kept = set(session.scalars(select(NotificationDelivery.key).where(
            NotificationDelivery.key.in_([old, new]))))
    assert kept == {new}

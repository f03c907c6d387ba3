"""Cleanup (seed 003), end to end: the six jobs run from the seed's `{"type": ...}` body
on a real worker (SQLite and PostgreSQL, local storage), a late periodic job still
runs, and a body of the wrong type is refused."""

from __future__ import annotations

import datetime
from typing import Any

import dramatiq
import pytest
from sqlalchemy import select

from integrations.storage import LocalStorage
from store.models import Story, User, utcnow
from tests.actors.conftest import World, unique

KINDS = ("stories", "sessions", "messages", "temp_files", "prekeys", "orphaned_media")


def run(world: World, kind: str, payload: dict[str, Any], **options: Any) -> dict[str, Any]:
    """Send a cleanup job as the bridge or the clock would, and wait for its outcome."""
    world.sy.broker.declare_queue("cleanup")
    message = world.sy.broker.enqueue(dramatiq.Message(
        queue_name="cleanup", actor_name=f"cleanup_{kind}", args=(), kwargs=payload,
        options=options))
    return world.finished(message.message_id)


@pytest.mark.parametrize("kind", KINDS)
def test_each_job_runs_from_the_seed_body(world, kind):
    job = run(world, kind, {"type": kind})
    assert job["status"] == "done", job
    assert job["result"]["job"] == kind and job["result"]["more"] is False


def test_expired_stories_lose_their_media_and_young_ones_keep_it(world):
    # given a user with a story just past 24 h and one just inside it, media on disk
    storage = LocalStorage(world.var_dir / "storage")
    user_id, now = unique("u"), utcnow()
    old_key, young_key = f"stories/{unique()}.jpg", f"stories/{unique()}.jpg"
    for key in (old_key, young_key):
        storage.put(key, b"jpeg")
    with world.db.session() as session:
        session.add(User(id=user_id))
        session.flush()
        session.add_all([
            Story(id=unique("s"), user_id=user_id, media_key=old_key,
                  created_at=now - datetime.timedelta(hours=24, minutes=5)),
            Story(id=unique("s"), user_id=user_id, media_key=young_key,
                  created_at=now - datetime.timedelta(hours=23, minutes=55))])
    # when the stories job runs
    job = run(world, "stories", {"type": "stories"})
    # then the old story is soft-deleted and its media gone; the young one is untouched
    assert job["status"] == "done", job
    assert not storage.exists(old_key) and storage.exists(young_key)
    with world.db.session() as session:
        stories = {s.media_key: s for s in session.scalars(
            select(Story).where(Story.user_id == user_id))}
    assert set(stories) == {None, young_key}
    assert stories[None].deleted_at is not None and stories[young_key].deleted_at is None


def test_a_periodic_job_starting_long_after_its_slot_still_runs(world):
    # periodiq's middleware dropped periodic jobs starting over 30 s after their slot
    slot = (utcnow() - datetime.timedelta(hours=1)).isoformat()
    job = run(world, "temp_files", {"type": "temp_files"}, scheduled_at=slot)
    assert job["status"] == "done", job


def test_a_body_of_another_type_is_refused(world):
    job = run(world, "stories", {"type": "sessions"})
    assert job["status"] == "failed" and job["runs"] == 1
    assert job["error"]["error"] == "InvalidPayload"


@pytest.mark.parametrize("kind", KINDS)
def test_the_bridge_routes_each_cleanup_routing_key_to_its_job(kind):
    from actors import cleanup
    from switchyard.ingress.routes import by_type
    from switchyard.runtime.jobs import jobs_of

    found = by_type(jobs_of(cleanup), "cleanup", kind)
    assert found is not None and (found.name, found.queue_name) == (f"cleanup_{kind}",
                                                                    "cleanup")

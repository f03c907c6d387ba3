"""Dead letters over HTTP: list without payloads, show, replay (one, selected, all), purge."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from tests.support.waiting import wait_for
from tests.web.conftest import FLAKY
from tests.web.test_jobs_api import done


@pytest.fixture
def web(web, start_worker):
    """The app with a worker running."""
    start_worker(web.sy)
    return web


def dead_letter(web, name: str) -> str:
    """Run a flaky job to its dead letter; return its message id."""
    message_id = web.client.post(f"/api/jobs/{FLAKY}", json={"name": name}).json()["message_id"]
    wait_for(lambda: done(web, message_id), what="dead letter")
    return message_id


def test_dead_letters_are_listed_without_their_payload(web):
    message_id = dead_letter(web, "secret-name")

    response = web.client.get(f"/api/dead-letters/{web.queue}")

    assert response.status_code == 200
    [item] = response.json()
    assert item["message_id"] == message_id and item["actor"] == FLAKY
    assert item["error"] == "PermanentError" and item["attempts"] == 1
    assert "secret-name" not in response.text


def test_a_dead_letter_shows_its_reason(web):
    message_id = dead_letter(web, "x")

    response = web.client.get(f"/api/dead-letters/{web.queue}/{message_id}")

    assert response.status_code == 200
    assert "PermanentError" in response.json()["traceback"]


def test_replay_runs_the_dead_letter_again(web):
    # given a dead letter whose cause has since been fixed
    message_id = dead_letter(web, "flaky")
    web.fix("flaky")

    # when it is replayed through the API
    response = web.client.post(f"/api/dead-letters/{web.queue}/replay",
                               json={"ids": [message_id]})

    # then it runs again, succeeds, and is no longer a dead letter
    assert response.json() == {"replayed": [message_id], "missing": [], "refused": {}}
    wait_for(lambda: (done(web, message_id) or {}).get("status") == "done", what="replayed run")
    assert web.client.get(f"/api/dead-letters/{web.queue}").json() == []


def test_replay_all_runs_every_dead_letter_again(web):
    ids = [dead_letter(web, name) for name in ("a", "b")]
    web.fix("a")
    web.fix("b")

    response = web.client.post(f"/api/dead-letters/{web.queue}/replay", json={"all": True})

    assert sorted(response.json()["replayed"]) == sorted(ids)
    wait_for(lambda: all((done(web, i) or {}).get("status") == "done" for i in ids),
             what="both replayed")


def test_replay_names_the_ids_it_did_not_find(web):
    response = web.client.post(f"/api/dead-letters/{web.queue}/replay", json={"ids": ["nope"]})

    assert response.json() == {"replayed": [], "missing": ["nope"], "refused": {}}


def test_replay_says_why_a_dead_letter_cannot_run_again(make_web):
    # given a dead letter kept without its payload, over the cap
    web = make_web()
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=web.queue, actor_name=FLAKY, args=(), kwargs={"name": "x" * 300_000},
        options={})
    web.sy.state.dead_letters.add(message, {"error": "Boom", "message": "boom",
                                            "attempts": 1})

    # when it is replayed, then the answer says why it was not
    response = web.client.post(f"/api/dead-letters/{web.queue}/replay",
                               json={"ids": [message.message_id]})

    assert response.status_code == 200
    body = response.json()
    assert body["replayed"] == [] and body["missing"] == []
    assert body["refused"][message.message_id].startswith("it was kept without its payload")
    every = web.client.post(f"/api/dead-letters/{web.queue}/replay", json={"all": True})
    assert every.json() == body


def test_purge_drops_the_queues_dead_letters(web):
    dead_letter(web, "p")

    response = web.client.delete(f"/api/dead-letters/{web.queue}")

    assert response.json() == {"purged": 1}
    assert web.sy.state.dead_letters.depth(web.queue) == 0

"""A queue nobody declared, with no actors and no dead letters, is not a queue: pause,
resume, replay, purge and the dead-letter views answer 404 with the reason, and no
phantom row appears in `/metrics/queues`."""

from __future__ import annotations

import pytest

from switchyard.base.errors import UnknownQueue

PHANTOM = "no-such-queue"
ROUTES = [
    ("POST", f"/api/queues/{PHANTOM}/pause", None),
    ("POST", f"/api/queues/{PHANTOM}/resume", None),
    ("POST", f"/api/dead-letters/{PHANTOM}/replay", {"all": True}),
    ("DELETE", f"/api/dead-letters/{PHANTOM}", None),
    ("GET", f"/api/dead-letters/{PHANTOM}", None),
    ("GET", f"/api/dead-letters/{PHANTOM}/some-id", None),
]
FORMS = ["pause", "resume", "replay", "replay-all", "purge"]


def queue_names(web) -> set[str]:
    return {row["name"] for row in web.client.get("/metrics/queues").json()["queues"]}


@pytest.mark.parametrize("method,path,body", ROUTES)
def test_an_unknown_queue_is_404_with_the_reason(web, method, path, body):
    response = web.client.request(method, path, json=body)

    assert response.status_code == 404, response.text
    assert "unknown queue" in response.json()["detail"]
    if "some-id" not in path:  # the reason `switchyard dlq` gives too
        assert response.json()["detail"] == UnknownQueue(PHANTOM).message
    assert web.sy.state.paused.paused() == frozenset()
    assert PHANTOM not in queue_names(web)


@pytest.mark.parametrize("action", FORMS)
def test_the_dashboards_forms_refuse_an_unknown_queue(web, action):
    response = web.client.post(f"/dashboard/dead-letters/{PHANTOM}/{action}",
                               data={"go": "1", "id": "x"}, follow_redirects=False)

    assert response.status_code == 404
    assert "unknown queue" in response.text
    assert web.sy.state.paused.paused() == frozenset()
    assert PHANTOM not in queue_names(web)


def test_a_queue_with_actors_is_known(web):
    assert web.client.post(f"/api/queues/{web.queue}/pause").status_code == 200
    assert web.client.get(f"/api/dead-letters/{web.queue}").json() == []
    assert web.client.post(f"/api/dead-letters/{web.queue}/replay",
                           json={"all": True}).json() == {"replayed": [], "missing": [],
                                                         "refused": {}}
    assert web.sy.state.paused.paused() == {web.queue}


def test_a_queue_left_paused_can_still_be_resumed(web):
    # given a queue paused before its last actor went away
    web.sy.state.paused.pause("retired")

    response = web.client.post("/api/queues/retired/resume")

    assert response.status_code == 200
    assert web.sy.state.paused.paused() == frozenset()

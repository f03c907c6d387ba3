"""`POST /api/channels`: seed 000's API-side producer. The SourceChannel is created
pending and its join is queued; the answer comes at once."""

from __future__ import annotations

import pytest

import actors.channels
from store import channels
from store.db import Database
from tests.support.services import free_port
from tests.web.test_jobs_api import status_of


@pytest.fixture
def web(make_web, database_url):
    """The app with the channel family declared, on a migrated database."""
    return make_web(families=[actors.channels], database_url=database_url)


def stored(web, channel_id: str):
    database = Database(web.sy.settings.db_url)
    with database.session() as session:
        found = channels.get(session, channel_id)
    database.dispose()
    return found


def test_a_new_channel_is_created_pending_and_its_join_queued(web):
    response = web.client.post("/api/channels", json={"username": "@durov_news"})

    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"id", "status", "message_id"} and body["status"] == "pending"
    channel = stored(web, body["id"])
    assert channel.username == "durov_news" and channel.join_job_id == body["message_id"]
    assert status_of(web, body["message_id"])["actor"] == "join_channel"
    assert web.sy.queues.depth(actors.channels.QUEUE) == 1


def test_asking_again_answers_the_same_channel_and_job(web):
    first = web.client.post("/api/channels", json={"username": "durov_news"}).json()

    again = web.client.post("/api/channels", json={"username": "https://t.me/durov_news"})

    assert again.status_code == 202 and again.json() == first
    assert web.sy.queues.depth(actors.channels.QUEUE) == 1


@pytest.mark.parametrize("username", ["ann@example.com", "", "x" * 200, "t.me/", "ab"])
def test_a_bad_username_is_422_naming_the_field(web, username):
    response = web.client.post("/api/channels", json={"username": username})

    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "username"]]
    if len(username) > 3:
        assert username not in response.text
    assert web.sy.queues.depth(actors.channels.QUEUE) == 0


def test_the_route_is_in_the_openapi_document(web):
    document = web.client.get("/api/openapi.json").json()

    operation = document["paths"]["/api/channels"]["post"]
    assert "202" in operation["responses"] and "422" in operation["responses"]


def test_an_unmigrated_database_is_503_naming_the_fix(make_web, tmp_path):
    web = make_web(families=[actors.channels], database_url=f"sqlite:///{tmp_path}/empty.db")

    response = web.client.post("/api/channels", json={"username": "durov_news"})

    assert response.status_code == 503
    assert "switchyard db upgrade" in response.json()["detail"]


def test_a_lone_surrogate_in_the_username_is_422(web):
    response = web.client.post("/api/channels", content='{"username": "ab\\ud800cd"}',
                               headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "username"]]


def test_an_unreachable_database_is_503_not_500(make_web):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    web = make_web(families=[actors.channels], database_url=url)

    response = web.client.post("/api/channels", json={"username": "durov_news"})

    assert response.status_code == 503
    assert response.json() == {"detail": "the database is unavailable"}

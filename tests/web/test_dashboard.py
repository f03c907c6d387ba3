"""The dead-letters page: escaped, without payloads, and its forms act."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from tests.web.conftest import FLAKY

PAGE = "/dashboard/dead-letters"


@pytest.fixture
def dead(web) -> dramatiq.Message[Any]:
    """A dead letter whose payload holds a phone number and whose error holds markup."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=web.queue, actor_name=FLAKY, args=(), kwargs={"name": "+15550001111"},
        options={})
    web.sy.state.dead_letters.add(message, {"error": "PermanentError", "attempts": 1,
                                      "message": "<script>alert(1)</script>"})
    return message


def test_the_page_escapes_everything_and_shows_no_payload(web, dead):
    page = web.client.get(PAGE).text

    assert dead.message_id in page and FLAKY in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "+15550001111" not in page


def test_purge_from_the_page_empties_the_queue(web, dead):
    response = web.client.post(f"{PAGE}/{web.queue}/purge", data={"go": "1"},
                               follow_redirects=False)

    assert response.status_code == 303 and response.headers["location"] == PAGE
    assert web.sy.state.dead_letters.depth(web.queue) == 0


def test_pause_and_resume_from_the_page(web, dead):
    web.client.post(f"{PAGE}/{web.queue}/pause", data={"go": "1"})
    assert web.sy.state.paused.paused() == {web.queue}
    assert "Resume" in web.client.get(PAGE).text

    web.client.post(f"{PAGE}/{web.queue}/resume", data={"go": "1"})
    assert web.sy.state.paused.paused() == frozenset()


def test_the_dramatiq_dashboard_job_page_shows_no_payload(web):
    message_id = web.client.post("/api/jobs/web_echo", json={"text": "+15550002222"}).json()[
        "message_id"]

    listing = web.client.get(f"/dashboard/queues/{web.queue}")
    job_page = web.client.get(f"/dashboard/queues/{web.queue}/standard/{message_id}")

    assert listing.status_code == 200 and message_id[:8] in listing.text
    assert "+15550002222" not in listing.text
    assert job_page.status_code == 404 and "+15550002222" not in job_page.text

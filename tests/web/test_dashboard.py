"""The dead-letters page (escaped, without payloads, its forms act) and dramatiq-dashboard's
raw Redis view under `/dashboard/raw` (no payload through any spelling of any route)."""

from __future__ import annotations

import http.client
import re
from typing import Any

import dramatiq
import pytest

from tests.support.waiting import wait_for
from tests.web.conftest import ECHO, FLAKY, PASSWORD, USERNAME, basic

PAGE = "/dashboard/dead-letters"
RAW = "/dashboard/raw"


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


def csrf(web) -> str:
    """The token the page's forms carry (the client keeps the cookie)."""
    return re.findall(r'name="csrf" value="([^"]+)"', web.client.get("/dashboard/").text)[0]


def test_purge_from_the_page_empties_the_queue(web, dead):
    response = web.client.post(f"{PAGE}/{web.queue}/purge", follow_redirects=False,
                               data={"go": "1", "csrf": csrf(web), "confirm": "yes"})

    assert response.status_code == 303 and response.headers["location"] == PAGE
    assert web.sy.state.dead_letters.depth(web.queue) == 0


def test_pause_and_resume_from_the_page(web, dead):
    web.client.post(f"{PAGE}/{web.queue}/pause", data={"go": "1", "csrf": csrf(web)})
    assert web.sy.state.paused.paused() == {web.queue}
    assert "Resume" in web.client.get("/dashboard/").text

    web.client.post(f"{PAGE}/{web.queue}/resume", data={"go": "1", "csrf": csrf(web)})
    assert web.sy.state.paused.paused() == frozenset()


def test_the_dramatiq_dashboard_job_page_shows_no_payload(web):
    message_id = web.client.post("/api/jobs/web_echo", json={"text": "+15550002222"}).json()[
        "message_id"]

    listing = web.client.get(f"{RAW}/queues/{web.queue}")
    job_page = web.client.get(f"{RAW}/queues/{web.queue}/standard/{message_id}")

    assert listing.status_code == 200 and message_id[:8] in listing.text
    assert "+15550002222" not in listing.text
    assert job_page.status_code == 404 and "+15550002222" not in job_page.text


#: What a payload may hold and no page may show.
SECRETS = ("ann.secret@example.com", "+15550003333", "tok_live_9f8e7d6c5b4a")
TABS = ("standard", "delayed", "failed")


def job_ids(web, tab: str) -> list[str]:
    """The ids dramatiq-dashboard links a tab's jobs by (the Redis broker's own ids)."""
    page = web.client.get(f"{RAW}/queues/{web.queue}/{tab}")
    assert page.status_code == 200
    return re.findall(rf'href="{RAW}/queues/{web.queue}/{tab}/([^"/]+)"', page.text)


@pytest.fixture
def secret_jobs(web) -> dict[str, list[str]]:
    """A job holding the secrets in each of the dashboard's tabs, and a dead letter."""
    text = " ".join(SECRETS)
    web.client.post(f"/api/jobs/{ECHO}", json={"text": text})
    consumer = web.sy.broker.consume(web.queue, prefetch=1, timeout=100)
    failed = wait_for(lambda: next(consumer), what="the job fetched")
    consumer.nack(failed)  # the broker's own failed queue (the "failed" tab)
    consumer.close()
    web.client.post(f"/api/jobs/{ECHO}", json={"text": text})
    web.client.post(f"/api/jobs/{ECHO}?delay=600000", json={"text": text})
    dead: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=web.queue, actor_name=ECHO, args=(), kwargs={"text": text}, options={})
    web.sy.state.dead_letters.add(dead, {"error": "PermanentError", "attempts": 1})
    ids = {tab: job_ids(web, tab) for tab in TABS}
    assert all(len(found) == 1 for found in ids.values()), ids
    return ids


def spellings(queue: str, tab: str, job_id: str) -> list[str]:
    """The job page as written, and as many other ways to ask for it as come to mind."""
    d, q, t, i = RAW, queue, tab, job_id
    base = f"{d}/queues/{q}/{t}/{i}"
    return [
        base, base + "/", base + "%2F", base + "%2f", base + "//", base + "/.", base + "?x=1",
        base + "%00", f"{base[:-1]}%{ord(i[-1]):02X}", f"{d}/queues/{q}/{t}/{i.upper()}",
        f"{d}/queues/{q}/{t}%2F{i}", f"{d}/queues/{q}/{t}%2f{i}", f"{d}/queues%2F{q}%2F{t}%2F{i}",
        f"{d}%2Fqueues/{q}/{t}/{i}", f"{d}//queues/{q}/{t}/{i}", f"{d}/queues//{q}/{t}/{i}",
        f"{d}/queues/{q}//{t}/{i}", f"{d}/queues/{q}/{t}//{i}", f"{d}/./queues/{q}/{t}/{i}",
        f"{d}/queues/{q}/./{t}/{i}", f"{d}/queues/{q}/{t}/./{i}", f"{d}/queues/x/../{q}/{t}/{i}",
        f"{d}/queues/{q}/{t}/x/../{i}", f"{d}/queues/{q}/{t}/{i}/..", f"{d}/Queues/{q}/{t}/{i}",
        f"{d}/queues/{q}/{t.upper()}/{i}", f"/DASHBOARD/raw/queues/{q}/{t}/{i}",
        f"/dashboard/RAW/queues/{q}/{t}/{i}", f"/dashboard/queues/{q}/{t}/{i}",
        f"/dashboard%2Fraw/queues/{q}/{t}/{i}",
        f"{d}/%71ueues/{q}/{t}/{i}", f"{d}/queues/{q}/%{ord(t[0]):02x}{t[1:]}/{i}",
        f"{d}/queues/{q}%2F%2E/{t}/{i}",
    ]


def raw_get(base_url: str, path: str) -> tuple[int, str]:
    """GET `path` byte for byte as written (no client library normalises it)."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers={**basic(USERNAME, PASSWORD)})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def test_no_spelling_of_any_route_shows_a_payload(web, secret_jobs, base_url):
    # given a job holding secrets in each tab, and a dead letter (fixture)
    paths = [p for tab, ids in secret_jobs.items() for job_id in ids
             for p in spellings(web.queue, tab, job_id)]
    paths += [p for tab, ids in secret_jobs.items() for job_id in ids
              for p in spellings(web.queue, TABS[(TABS.index(tab) + 1) % 3], job_id)]
    paths += ["/dashboard/", "/dashboard", PAGE, PAGE + "/", f"{RAW}/queues/{web.queue}",
              RAW, RAW + "/", f"{RAW}/queues/{web.queue}/", f"{RAW}/queues/{web.queue}?cursor=0",
              f"{RAW}/requeue-message", f"{RAW}/delete-message", "/dashboard/overview.json",
              f"{PAGE}?queue={web.queue}", "/dashboard/workers", "/dashboard/schedules",
              *(f"/dashboard/jobs?id={i}" for ids in secret_jobs.values() for i in ids),
              *(f"{RAW}/queues/{web.queue}/{tab}" for tab in TABS),
              *(f"{RAW}/queues/{web.queue}/{tab}/" for tab in TABS),
              f"/api/dead-letters/{web.queue}", "/api/dead-letters"]
    paths += [path for record in web.sy.state.dead_letters.list(web.queue)
              for path in (f"/api/dead-letters/{web.queue}/{record['message_id']}",
                           f"/dashboard/jobs?id={record['message_id']}")]

    # when each is asked for, as written
    answers = {path: raw_get(base_url, path) for path in paths}

    # then no answer holds a secret, and no spelling of a job page is served
    leaks = [path for path, (_, body) in answers.items() if any(s in body for s in SECRETS)]
    assert leaks == []
    job_pages = [p for p in paths if any(i in p or i.upper() in p for ids in secret_jobs.values()
                                         for i in ids) and not p.startswith("/dashboard/jobs")]
    served = [p for p in job_pages if answers[p][0] == 200]
    assert served == []
    assert answers[f"{RAW}/queues/{web.queue}/failed"][0] == 200


def test_the_dashboard_lists_jobs_by_actor_and_id_only(web, secret_jobs):
    for tab in TABS:
        page = web.client.get(f"{RAW}/queues/{web.queue}/{tab}").text

        assert ECHO in page and not any(s in page for s in SECRETS)


def test_a_bad_cursor_is_refused_not_a_server_error(web):
    response = web.client.get(f"{RAW}/queues/{web.queue}?cursor=x")

    assert response.status_code == 400


def test_an_unknown_queue_has_no_dashboard_page(web):
    for path in (f"{RAW}/queues/no-such-queue", f"{RAW}/queues/no-such-queue/delayed"):
        response = web.client.get(path)

        assert response.status_code == 404 and "unknown queue" in response.text


@pytest.mark.parametrize("path", ["/dashboard/", PAGE, RAW + "/", RAW + "/queues/{queue}",
                                  RAW + "/queues/{queue}/standard/x", "/api/openapi.json",
                                  "/api/jobs/nothing", "/metrics/queues", "/health", "/nowhere"])
def test_every_answer_forbids_framing_and_sniffing(web, path):
    for client in (web.client, web.anonymous):
        response = client.get(path.format(queue=web.queue))

        assert response.headers["x-frame-options"] == "DENY", (path, response.status_code)
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert response.headers["x-content-type-options"] == "nosniff"


def csrf_token(web) -> str:
    page = web.client.get(f"{RAW}/queues/{web.queue}").text
    return re.findall(r'name="__dd_csrf" value="([0-9a-f]+)"', page)[0]


def test_a_queued_job_is_deleted_from_the_dashboard(web):
    web.client.post(f"/api/jobs/{ECHO}", json={"text": "drop me"})
    [job_id] = job_ids(web, "standard")

    response = web.client.post(f"{RAW}/delete-message", follow_redirects=False, data={
        "id": job_id, "queue": web.queue, "__dd_csrf": csrf_token(web)})

    assert response.status_code == 302
    assert web.sy.queues.depth(web.queue) == 0


@pytest.mark.parametrize("form,status", [
    ({}, 400), ({"id": "x"}, 400), ({"queue": "{queue}"}, 400),
    ({"id": "x", "queue": "no-such-queue"}, 404), ({"id": "%ff", "queue": "{queue}"}, 400),
    ({"id": "\u00e9", "queue": "{queue}"}, 400),
])
def test_a_bad_delete_form_is_refused_not_a_server_error(web, form, status):
    body = "&".join(f"{k}={v.format(queue=web.queue)}" for k, v in form.items())

    response = web.client.post(f"{RAW}/delete-message", content=body.encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded"})

    assert response.status_code == status


def test_requeue_and_unknown_actions_are_not_served(web):
    web.client.post(f"/api/jobs/{ECHO}", json={"text": "x"})
    [job_id] = job_ids(web, "standard")

    requeue = web.client.post(f"{RAW}/requeue-message", data={
        "id": job_id, "queue": web.queue, "__dd_csrf": csrf_token(web)})
    unknown = web.client.post(f"{PAGE}/{web.queue}/explode", data={"go": "1", "csrf": csrf(web)})

    assert requeue.status_code == 404 and unknown.status_code == 404
    assert web.sy.queues.depth(web.queue) == 1

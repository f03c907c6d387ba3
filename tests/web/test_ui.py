"""The operator UI over HTTP, on both brokers: its pages and JSON, what they show, what
they never show (payloads), and the forms' CSRF tokens and confirmations."""

from __future__ import annotations

import datetime
import re
from typing import Any

import dramatiq
import pytest

import schedules
from actors import cleanup
from switchyard.clock import Clock
from tests.support.waiting import wait_for
from tests.web.conftest import ECHO, FLAKY, PASSWORD, USERNAME

PAGES = ("/dashboard/", "/dashboard/overview.json", "/dashboard/jobs", "/dashboard/jobs?id=x",
         "/dashboard/queues", "/dashboard/busy",
         "/dashboard/dead-letters", "/dashboard/workers", "/dashboard/schedules",
         "/dashboard/static/ui.css", "/dashboard/static/ui.js")
#: What a payload may hold and no page may show.
SECRET = "ann.secret@example.com +15550004444"


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def token(web, path: str = "/dashboard/dead-letters") -> str:
    """The CSRF token a page's forms carry (the client keeps the cookie)."""
    page = web.client.get(path)
    assert page.status_code == 200, page.text
    return re.findall(r'name="csrf" value="([^"]+)"', page.text)[0]


def bury(web, n: int, *, actor: str = FLAKY, error: str = "PermanentError",
         text: str = SECRET) -> list[str]:
    """`n` dead letters in the test queue, each holding `text` in its payload."""
    ids = []
    for _ in range(n):
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=web.queue, actor_name=actor, args=(), kwargs={"name": text[:50]},
            options={})
        web.sy.state.dead_letters.add(message, {"error": error, "attempts": 1,
                                                "message": "still broken"})
        ids.append(message.message_id)
    return ids


def row(web, queue: str) -> dict[str, Any]:
    rows = web.client.get("/dashboard/overview.json").json()["queues"]
    return next(r for r in rows if r["name"] == queue)


def test_the_overview_shows_every_queue_with_its_numbers(web):
    # given two jobs waiting and one dead letter
    for text in ("a", "b"):
        assert web.client.post(f"/api/jobs/{ECHO}", json={"text": text}).status_code == 202
    bury(web, 1)

    # when the overview is asked for, as a page and as JSON
    page = web.client.get("/dashboard/")
    numbers = row(web, web.queue)

    # then the queue's row has them
    assert page.status_code == 200 and f'id="queue-{web.queue}"' in page.text
    assert (numbers["waiting"], numbers["dead"], numbers["paused"]) == (2, 1, False)
    if web.sy.settings.uses_rabbitmq:
        assert numbers["oldest_age_ms"] is None
    else:
        assert 0 <= numbers["oldest_age_ms"] < 60_000


def test_a_job_that_ran_shows_in_the_counts_and_the_charts(web, start_worker):
    # given a worker
    start_worker(web.sy)

    # when a job runs
    message_id = web.client.post(f"/api/jobs/{ECHO}", json={"text": "x"}).json()["message_id"]
    wait_for(lambda: (web.sy.state.history.get(message_id) or {}).get("status") == "done",
             what="job done")

    # then the overview's JSON counts it: the queue's completed, the last minute's and
    # the last hour's processed jobs, and a queue wait
    def counted() -> dict[str, Any] | None:
        web.sy.state.buffer.flush()
        data = web.client.get("/dashboard/overview.json").json()
        return data if any(p["done"] for p in data["series"]["minute"]["points"]) else None

    # (the job's minute or hour may have just become the previous one: find it by its count)
    data = wait_for(counted, what="the job in the charts")
    minute = next(p for p in data["series"]["minute"]["points"] if p["done"])
    assert [sum(p[k] for p in data["series"][r]["points"])
            for r in ("minute", "hour") for k in ("done", "dead")] == [1, 0, 1, 0]
    assert minute["wait_p50_ms"] is not None and minute["wait_p95_ms"] >= minute["wait_p50_ms"]
    assert row(web, web.queue)["completed"] == 1
    assert "processed <b>1</b>" in data["charts"]["chart-minute-counts"]
    assert len(data["series"]["minute"]["points"]) == 60
    assert len(data["series"]["hour"]["points"]) == 24


def test_a_job_is_looked_up_by_id_without_its_payload(web, start_worker):
    # given a job that failed for good, with personal data in its payload
    start_worker(web.sy)
    message_id = web.client.post(f"/api/jobs/{FLAKY}", json={"name": SECRET[:50]}).json()[
        "message_id"]
    wait_for(lambda: web.sy.state.dead_letters.depth(web.queue), what="dead letter")
    web.sy.state.buffer.flush()

    # when it is looked up
    page = web.client.get(f"/dashboard/jobs?id={message_id}")

    # then the page shows its status, timeline, runs and error, and not its payload
    assert page.status_code == 200
    assert 'id="job-status">failed<' in page.text
    assert "PermanentError" in page.text and "still broken" in page.text
    assert re.search(r'id="job-runs">1<', page.text)
    assert page.text.count("<li>") >= 2  # queued, ..., failed
    assert SECRET[:20] not in page.text and "ann.secret" not in page.text


def test_an_unknown_or_malformed_id_is_a_clear_answer(web):
    missing = web.client.get("/dashboard/jobs?id=no-such-job")
    malformed = web.client.get("/dashboard/jobs", params={"id": "<script>x</script>"})

    assert missing.status_code == 404 and "No job with that id is kept" in missing.text
    assert malformed.status_code == 400 and "<script>x" not in malformed.text


def test_dead_letters_are_paged_and_filtered_in_redis(web):
    # given 120 dead letters: 70 of one actor and error, 50 of another
    bury(web, 70)
    other = bury(web, 50, actor=ECHO, error="InvalidPayload")

    # when pages and filters are asked for
    first = web.client.get(f"/dashboard/dead-letters?queue={web.queue}")
    last = web.client.get(f"/dashboard/dead-letters?queue={web.queue}&page=3")
    by_actor = web.client.get(f"/dashboard/dead-letters?queue={web.queue}&actor={ECHO}")
    both = web.client.get(f"/dashboard/dead-letters?queue={web.queue}&actor={ECHO}"
                          "&error=PermanentError")

    # then each shows its share, newest first, and no payload
    assert first.text.count('class="dead-letter"') == 50 and "120 dead letter(s)" in first.text
    assert f'id="dl-{other[-1]}"' in first.text  # the newest first
    assert last.text.count('class="dead-letter"') == 20
    assert by_actor.text.count('class="dead-letter"') == 50 and "50 dead letter(s) match" in \
        by_actor.text
    assert "0 dead letter(s) match" in both.text
    assert not any("ann.secret" in p.text for p in (first, last, by_actor, both))


def test_a_filtered_replay_is_confirmed_then_replays_only_the_match(web):
    # given dead letters of two error classes
    broken = bury(web, 3)
    bury(web, 2, error="InvalidPayload")
    csrf = token(web)
    form = {"csrf": csrf, "actor": FLAKY, "error": "PermanentError"}
    action = f"/dashboard/dead-letters/{web.queue}/replay-filtered"

    # when the filtered set is replayed: first asked, then confirmed
    asked = web.client.post(action, data=form)
    assert web.sy.state.dead_letters.depth(web.queue) == 5
    done = web.client.post(action, data={**form, "confirm": "yes"}, follow_redirects=False)

    # then the question named the count, and only that set left the dead letters
    assert asked.status_code == 200 and "Replay the 3 dead letter(s)" in asked.text
    assert done.status_code == 303
    left = {d["message_id"] for d in web.sy.state.dead_letters.list(web.queue)}
    assert len(left) == 2 and not left & set(broken)
    assert web.sy.queues.counts(web.queue).waiting == 3


def test_a_form_without_the_right_csrf_token_is_refused(web):
    bury(web, 2)
    token(web)  # the browser has a cookie
    action = f"/dashboard/dead-letters/{web.queue}/purge"

    for form in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "x" * 43}):
        response = web.client.post(action, data=form)

        assert response.status_code == 403 and "CSRF" in response.text
    assert web.sy.state.dead_letters.depth(web.queue) == 2


def test_purge_is_confirmed_first(web):
    bury(web, 2)
    csrf = token(web)
    action = f"/dashboard/dead-letters/{web.queue}/purge"

    asked = web.client.post(action, data={"csrf": csrf})
    assert "Delete all 2 dead letter(s)" in asked.text
    assert web.sy.state.dead_letters.depth(web.queue) == 2
    web.client.post(action, data={"csrf": csrf, "confirm": "yes"})

    assert web.sy.state.dead_letters.depth(web.queue) == 0
    assert web.client.get(f"/dashboard/dead-letters?queue={web.queue}&actor={FLAKY}") \
        .status_code == 200


def test_pause_and_resume_from_the_overview(web):
    csrf = token(web, "/dashboard/")
    pause = web.client.post(f"/dashboard/dead-letters/{web.queue}/pause",
                            data={"csrf": csrf, "next": "/dashboard/"}, follow_redirects=False)

    assert pause.headers["location"] == "/dashboard/"
    assert row(web, web.queue)["paused"] is True
    web.client.post(f"/dashboard/dead-letters/{web.queue}/resume", data={"csrf": csrf})
    assert row(web, web.queue)["paused"] is False


def test_a_redirect_after_a_form_stays_on_the_dashboard(web):
    csrf = token(web, "/dashboard/")
    for target in ("https://evil.example/", "//evil.example/", "/api/jobs"):
        response = web.client.post(f"/dashboard/dead-letters/{web.queue}/resume",
                                   data={"csrf": csrf, "next": target}, follow_redirects=False)

        assert response.headers["location"] == "/dashboard/dead-letters"


def test_workers_show_their_details_and_a_silent_one_is_marked(web, start_worker):
    # given a running worker, and one that stopped beating
    start_worker(web.sy, threads=3)
    web.sy.state.workers.beat("gone-host:4242:x", {"id": "gone-host:4242:x", "host": "gone-host",
                                                   "pid": 4242, "queues": [web.queue]})

    # when the workers page is read after three heartbeat intervals
    def silent() -> str | None:
        text = web.client.get("/dashboard/workers").text
        return text if re.search(r'id="worker-4242" class="silent"', text) else None

    page = wait_for(silent, what="the silent worker marked", timeout=15)

    # then the live worker shows its threads, and the gone one is silent
    import os
    live = re.search(rf'<tr id="worker-{os.getpid()}" class="alive">(.*?)</tr>', page, re.S)
    assert live is not None and '<td class="n">3</td>' in live.group(1)


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_schedules_show_the_last_slot_its_outcome_and_the_next(make_web, broker_kind):
    # given the clock sent the stories cleanup's 10:15 slot
    web = make_web(families=(cleanup,))
    at = datetime.datetime(2026, 3, 2, 10, 15, 30, tzinfo=datetime.UTC)
    clock = Clock(web.sy, schedules.SCHEDULES, now=lambda: at, catch_up_ms=10 * 60_000)
    fired = [f for f in clock.tick() if f.schedule == "cleanup_stories"]
    web.sy.state.buffer.flush()

    # when the schedules page is read
    page = web.client.get("/dashboard/schedules").text

    # then the row shows that slot, its job's status and a next slot
    stories = re.search(r'<tr id="schedule-cleanup_stories">(.*?)</tr>', page, re.S)
    assert stories is not None and len(fired) == 1
    assert "2026-03-02 10:15 UTC" in stories.group(1)
    assert fired[0].message_id in stories.group(1) and "queued" in stories.group(1)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_forbids_framing_and_needs_credentials(web, path):
    page = web.client.get(path)
    anonymous = web.anonymous.get(path)

    assert page.status_code in (200, 404), (path, page.status_code)
    assert anonymous.status_code == 401
    for response in (page, anonymous):
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_no_page_shows_a_payload(web, start_worker):
    # given jobs holding personal data: one done, one dead, one waiting, one dead letter
    start_worker(web.sy)
    ids = [web.client.post(f"/api/jobs/{a}", json=body).json()["message_id"]
           for a, body in ((ECHO, {"text": SECRET}), (FLAKY, {"name": SECRET[:50]}))]
    wait_for(lambda: all((web.sy.state.history.get(i) or {}).get("status") in ("done", "failed")
                         for i in ids), what="jobs finished")
    bury(web, 1)

    # when every page is read
    paths = [*PAGES, *(f"/dashboard/jobs?id={i}" for i in ids),
             f"/dashboard/dead-letters?queue={web.queue}",
             *(f"/dashboard/queues?queue={web.queue}&state={s}" for s in ("done", "failed"))]
    texts = {path: web.client.get(path).text for path in paths}

    # then none holds the payload
    assert [p for p, text in texts.items() if "ann.secret" in text or "5550004444" in text] == []


def test_the_lookup_shows_a_result_only_where_the_actor_stores_one(web, start_worker):
    # given an actor that stores its results, and one that does not
    from pydantic import BaseModel

    from switchyard.runtime.enqueue import enqueue
    from switchyard.runtime.jobs import Context, job

    class Count(BaseModel):
        n: int

    @job(Count, actor_name="web_counted", queue_name=web.queue, store_results=True)
    def web_counted(ctx: Context, payload: Count) -> dict[str, int]:
        return {"counted": payload.n + 1}

    web.sy.declare([web_counted])
    start_worker(web.sy)
    kept = enqueue(web.sy, "web_counted", {"n": 41}).message_id
    plain = web.client.post(f"/api/jobs/{ECHO}", json={"text": SECRET}).json()["message_id"]
    wait_for(lambda: all((web.sy.state.history.get(i) or {}).get("status") == "done"
                         for i in (kept, plain)), what="both done")

    # when both are looked up
    shown, hidden = (web.client.get(f"/dashboard/jobs?id={i}").text for i in (kept, plain))

    # then the stored result is shown, the other job's result (its payload echoed) is not
    assert '"counted": 42' in shown
    assert "does not store its results" in hidden and "ann.secret" not in hidden


def test_an_address_echoed_in_an_error_message_is_masked(web):
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=web.queue, actor_name=FLAKY, args=(), kwargs={}, options={})
    web.sy.state.dead_letters.add(message, {"error": "NotFound", "attempts": 1,
                                            "message": "no user ann.secret@example.com"})

    pages = [web.client.get(f"/dashboard/dead-letters?queue={web.queue}").text,
             web.client.get(f"/dashboard/jobs?id={message.message_id}").text]

    assert all("no user [email]" in page and "ann.secret" not in page for page in pages)


def test_a_running_job_counts_as_active(web, start_worker):
    # given a job that runs until it is let go
    from pydantic import BaseModel

    from switchyard.runtime.enqueue import enqueue
    from switchyard.runtime.jobs import Context, job

    release = f"{web.sy.settings.key_prefix}:release"

    class Hold(BaseModel):
        seconds: int

    @job(Hold, actor_name="web_hold", queue_name=web.queue, max_retries=0)
    def web_hold(ctx: Context, payload: Hold) -> None:
        wait_for(lambda: web.sy.state.client.exists(release), timeout=payload.seconds,
                 what="released")

    web.sy.declare([web_hold])
    start_worker(web.sy)
    message_id = enqueue(web.sy, "web_hold", {"seconds": 20}).message_id

    # when it runs, the overview counts it active (RabbitMQ: from the workers' heartbeats)
    try:
        wait_for(lambda: row(web, web.queue)["active"] == 1, what="active 1", timeout=15)
    finally:
        web.sy.state.client.set(release, 1)

    # and once done, no longer
    wait_for(lambda: (web.sy.state.history.get(message_id) or {}).get("status") == "done",
             what="done")
    wait_for(lambda: row(web, web.queue)["active"] == 0, what="active 0", timeout=15)


def test_the_queues_page_lists_jobs_by_state_and_cancels_the_selected(web):
    # given three jobs waiting, no worker
    ids = [web.client.post(f"/api/jobs/{ECHO}", json={"text": t}).json()["message_id"]
           for t in ("a", "b", "c")]
    page = web.client.get(f"/dashboard/queues?queue={web.queue}")
    # then the page lists them in order, with their positions and the state counts
    assert page.status_code == 200
    rows = re.findall(r'<tr class="job" id="job-([^"]+)">\s*<td>.*?</td>\s*<td class="n">(\d+)',
                      page.text, re.S)
    assert rows == [(ids[0], "1"), (ids[1], "2"), (ids[2], "3")]
    assert re.search(r'id="state-waiting"[^>]*>waiting <b>3</b>', page.text)
    csrf = re.findall(r'name="csrf" value="([^"]+)"', page.text)[0]
    action = f"/dashboard/queues/{web.queue}/cancel"
    # when two are cancelled: first asked, then confirmed
    form = {"csrf": csrf, "id": ids[:2], "next": f"/dashboard/queues?queue={web.queue}"}
    asked = web.client.post(action, data=form)
    assert asked.status_code == 200 and "Cancel 2 job(s)" in asked.text
    assert web.sy.state.history.get(ids[0])["status"] == "queued"
    done = web.client.post(action, data={**form, "confirm": "yes"}, follow_redirects=False)
    # then they are cancelled, by the dashboard, and listed as such
    assert done.status_code == 303
    assert [web.sy.state.history.get(i)["status"] for i in ids] == ["cancelled", "cancelled",
                                                                     "queued"]
    assert web.sy.state.history.get(ids[0])["cancelled_by"].startswith("dashboard:")
    cancelled = web.client.get(f"/dashboard/queues?queue={web.queue}&state=cancelled").text
    assert ids[0] in cancelled and ids[1] in cancelled and ids[2] not in cancelled
    # and a form without its token, or selecting nothing, is refused
    assert web.client.post(action, data={"id": ids[2], "confirm": "yes"}).status_code == 403
    assert web.client.post(action, data={"csrf": csrf, "confirm": "yes"}).status_code == 400
    assert web.client.post("/dashboard/queues/no-such-queue/cancel",
                           data={"csrf": csrf}).status_code == 404
    assert web.client.get("/dashboard/queues?state=lost").status_code == 400


def test_the_busy_page_shows_what_runs_with_its_progress(web, start_worker):
    import threading

    from pydantic import BaseModel

    from switchyard.runtime.enqueue import enqueue
    from switchyard.runtime.jobs import Context, job

    class Step(BaseModel):
        n: int

    started, go = threading.Event(), threading.Event()

    @job(Step, actor_name="web_stepping", queue_name=web.queue)
    def web_stepping(ctx: Context, payload: Step) -> None:
        ctx.progress(0.25, "resizing")
        started.set()
        go.wait(20)

    web.sy.declare([web_stepping])
    start_worker(web.sy)
    message_id = enqueue(web.sy, "web_stepping", {"n": 1}).message_id
    try:
        assert started.wait(10)

        def shown() -> str | None:
            text = web.client.get("/dashboard/busy").text
            return text if f'id="running-{message_id}"' in text and "resizing" in text else None

        text = wait_for(shown, what="the running job with its progress")
        assert "25% resizing" in text
        # where it runs: this process (the test's in-process worker)
        import os
        import socket

        assert f'<td class="worker">{socket.gethostname()}:{os.getpid()}</td>' in text
        job_page = web.client.get(f"/dashboard/jobs?id={message_id}").text
        assert 'id="job-progress"' in job_page and "resizing" in job_page
        assert f'id="job-worker">{socket.gethostname()}:{os.getpid()}<' in job_page
    finally:
        go.set()


def test_the_metrics_page_shows_each_actors_runs_failures_and_run_times(web, start_worker):
    # given two runs of one actor, one of them failed for good, and one of another
    start_worker(web.sy)
    web.fix("ok")
    ids = [web.client.post(f"/api/jobs/{ECHO}", json={"text": "x"}).json()["message_id"],
           web.client.post(f"/api/jobs/{FLAKY}", json={"name": "broken"}).json()["message_id"],
           web.client.post(f"/api/jobs/{FLAKY}", json={"name": "ok"}).json()["message_id"]]
    wait_for(lambda: all((web.sy.state.history.get(i) or {}).get("status") in ("done", "failed")
                         for i in ids if not web.sy.state.buffer.flush()), what="all ended")

    # when the operator opens the Metrics page on the flaky actor
    def shown() -> str | None:
        web.sy.state.buffer.flush()
        page = web.client.get(f"/dashboard/metrics?actor={FLAKY}").text
        return page if re.search(rf'id="actor-{FLAKY}"[^>]*>\s*<td>.*?</td>\s*'
                                 r'<td class="n">2</td><td class="n">50.0%</td>', page,
                                 re.S) else None

    page = wait_for(shown, what="the flaky actor's two runs")
    # then each actor has its row, and the chosen one its charts, counts and run times
    assert re.search(rf'id="actor-{ECHO}"[^>]*>\s*<td>.*?</td>\s*<td class="n">1</td>'
                     r'<td class="n">0.0%</td>', page, re.S)
    for chart in ("chart-minute-runs", "chart-minute-run-times", "chart-hour-runs",
                  "chart-hour-run-times"):
        assert f'id="{chart}"' in page
    assert "runs <b>2</b>" in page and "failed <b>1</b>" in page and "run p99" in page
    assert "broken" not in page  # never a payload value


REVEALER, REVEAL_PASSWORD = "lead-operator", "Reveal-pw-0123-zebra"


def test_a_dead_letters_arguments_are_revealed_only_to_the_reveal_login_and_recorded(
        make_web, caplog):
    from fastapi.testclient import TestClient

    from tests.web.conftest import basic

    # given a dead letter whose payload holds an address, a bot token and a bearer header
    web = make_web(web_reveal_username=REVEALER, web_reveal_password=REVEAL_PASSWORD)
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=web.queue, actor_name=ECHO, args=(), kwargs={
        "email": "ann@example.com", "bot_token": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        "note": "sent with Authorization: Bearer abcdefghijklmnop"}, options={})
    web.sy.state.dead_letters.add(message, {"error": "PermanentError", "attempts": 1})
    page = f"/dashboard/jobs?id={message.message_id}"
    action = f"/dashboard/jobs/{message.message_id}/reveal"

    # when the everyday login (or the API token) looks: no reveal, and a reveal is refused
    operator = TestClient(web.app, headers=basic(USERNAME, PASSWORD))
    seen = operator.get(page)
    assert 'id="reveal"' not in seen.text and "ann@example.com" not in seen.text
    csrf = re.findall(r'name="csrf" value="([^"]+)"', operator.get(
        "/dashboard/dead-letters").text)[0]
    refused = operator.post(action, data={"csrf": csrf})
    assert refused.status_code == 403 and "WEB_REVEAL_USERNAME" in refused.text
    assert web.sy.state.audit.of(message.message_id) == []

    # when the reveal login asks
    lead = TestClient(web.app, headers=basic(REVEALER, REVEAL_PASSWORD))
    form = lead.get(page)
    assert 'id="reveal"' in form.text
    csrf = re.findall(r'name="csrf" value="([^"]+)"', form.text)[0]
    assert lead.post(action, data={"csrf": "x" * 43}).status_code == 403  # CSRF checked
    with caplog.at_level("WARNING", logger="switchyard.audit"):
        shown = lead.post(action, data={"csrf": csrf})

    # then it sees the arguments with the secrets masked, and the reveal is recorded
    assert shown.status_code == 200
    assert "ann@example.com" in shown.text
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in shown.text
    assert "abcdefghijklmnop" not in shown.text and "[redacted]" in shown.text
    entries = web.sy.state.audit.of(message.message_id)
    assert [(e["action"], e["by"]) for e in entries] == [("reveal arguments", REVEALER)]
    assert f"Arguments of job {message.message_id} revealed to {REVEALER}." in caplog.text
    assert "ann@example.com" not in caplog.text
    # and everyone looking at the job later sees who revealed it
    assert f"arguments revealed to {REVEALER}" in operator.get(page).text

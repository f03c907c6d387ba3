"""An operator in a real browser, on the Redis and the RabbitMQ broker: logs in, sees a
job appear in the overview's counts and charts as it runs (no reload), looks it up by
id, replays a filtered set of dead letters, pauses and resumes a queue, and sees a
killed worker marked silent. Headless Chromium from the system (no browser download);
required in CI, skipped locally when Chromium is not installed.

Each test saves a screenshot: under `$SWITCHYARD_ARTIFACTS` when set (CI uploads it),
else under pytest's base temporary directory (`<basetemp>/artifacts/`, kept for the
last three runs, as pytest keeps it).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from tests.support.processes import WorkerProcesses
from tests.support.services import missing
from tests.support.waiting import wait_for
from tests.web.conftest import ECHO, FLAKY, PASSWORD, USERNAME

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1280,1000"]


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing("Chromium (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="switchyard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               browser: Any) -> Callable[[str], Path]:
    """Save the browser's page as `<test>-<what>.png` in the run's artifacts."""
    base = os.environ.get("SWITCHYARD_ARTIFACTS")
    folder = Path(base) if base else tmp_path_factory.getbasetemp() / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)

    def save(what: str) -> Path:
        name = request.node.name.replace("[", "-").replace("]", "")
        path = folder / f"{name}-{what}.png"
        assert browser.save_screenshot(str(path)), path
        return path

    return save


def log_in(driver: Any, username: str, password: str) -> None:
    """HTTP basic, as a browser sends it after the login prompt (headless has no prompt)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {token}"}})


def text_of(driver: Any, css: str) -> str:
    """The element's text, read in one step (the page's script swaps elements out live)."""
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css)
    return str(text).strip()


def click(driver: Any, css: str) -> None:
    """Click the element, found again if the page's script swapped it out meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(clicked, what=f"a click on {css}")


def test_a_job_shows_in_the_live_overview_and_is_found_by_id(web, start_worker, base_url,
                                                              browser, screenshot):
    from selenium.webdriver.common.by import By

    # given a worker, and an operator watching the overview
    start_worker(web.sy)
    log_in(browser, USERNAME, PASSWORD)
    browser.get(f"{base_url}/dashboard/")
    assert text_of(browser, f"#queue-{web.queue} [data-field=completed]") == "0"
    browser.execute_script("document.body.dataset.loadedOnce = 'yes'")

    # when a job runs
    message_id = web.client.post(f"/api/jobs/{ECHO}", json={"text": "x"}).json()["message_id"]

    # then the same page (never reloaded) counts it and charts it
    wait_for(lambda: web.sy.state.buffer.flush() or text_of(
        browser, "#chart-minute-counts [data-series=done] b") == "1",
        what="the job in the chart", timeout=20)
    assert text_of(browser, f"#queue-{web.queue} [data-field=completed]") == "1"
    assert text_of(browser, "#chart-hour-counts [data-series=done] b") == "1"
    assert browser.execute_script("return document.body.dataset.loadedOnce") == "yes"
    screenshot("overview")

    # and looking it up by id shows it done
    browser.find_element(By.LINK_TEXT, "Job lookup").click()
    browser.find_element(By.ID, "job-id").send_keys(message_id + "\n")
    wait_for(lambda: text_of(browser, "#job-status") == "done", what="the job's page")
    assert "queued" in text_of(browser, "#job-timeline")
    screenshot("job")


def test_a_filtered_set_of_dead_letters_is_replayed_and_a_queue_paused(web, start_worker,
                                                                       base_url, browser,
                                                                       screenshot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # given two failed flaky jobs (now fixed), and two dead letters of another actor
    start_worker(web.sy)
    flaky = [web.client.post(f"/api/jobs/{FLAKY}", json={"name": n}).json()["message_id"]
             for n in ("a", "b")]
    wait_for(lambda: web.sy.state.dead_letters.depth(web.queue) == 2, what="dead letters")
    for n in ("a", "b"):
        web.fix(n)
    for _ in range(2):
        web.sy.state.dead_letters.add(dramatiq.Message(
            queue_name=web.queue, actor_name=ECHO, args=(), kwargs={}, options={}),
            {"error": "InvalidPayload", "attempts": 1})

    # when the operator filters the queue's dead letters by actor and replays that set
    log_in(browser, USERNAME, PASSWORD)
    browser.get(f"{base_url}/dashboard/dead-letters?queue={web.queue}")
    assert "4 dead letter(s)" in text_of(browser, "#matching")
    Select(browser.find_element(By.ID, "filter-actor")).select_by_visible_text(FLAKY)
    browser.find_element(By.CSS_SELECTOR, "#filters button").click()
    wait_for(lambda: "2 dead letter(s) match" in text_of(browser, "#matching"), what="filter")
    screenshot("filtered")
    browser.find_element(By.CSS_SELECTOR, "#replay-filtered button").click()
    # (the confirmation is a page of its own: wait for it to load)
    wait_for(lambda: "Replay the 2 dead letter(s)" in text_of(browser, "#question"),
             what="the confirmation")
    browser.find_element(By.CSS_SELECTOR, "#confirm button").click()

    # then those two ran again, and only the other actor's are left
    wait_for(lambda: all((web.sy.state.history.get(i) or {}).get("status") == "done"
                         for i in flaky if not web.sy.state.buffer.flush()), what="replayed")
    browser.get(f"{base_url}/dashboard/dead-letters?queue={web.queue}")
    assert "2 dead letter(s) in" in text_of(browser, "#matching")
    assert {row.text.split()[1] for row in browser.find_elements(By.CSS_SELECTOR,
                                                                  "tr.dead-letter")} == {ECHO}

    # and the queue is paused and resumed from the overview
    browser.get(f"{base_url}/dashboard/")
    click(browser, f"#queue-{web.queue} button")
    wait_for(lambda: text_of(browser, f"#queue-{web.queue} [data-field=paused]") == "paused",
             what="paused")
    assert web.sy.state.paused.paused() == {web.queue}
    screenshot("paused")
    click(browser, f"#queue-{web.queue} button")
    wait_for(lambda: text_of(browser, f"#queue-{web.queue} [data-field=paused]") == "running",
             what="resumed")
    assert web.sy.state.paused.paused() == frozenset()


def test_waiting_jobs_are_cancelled_from_the_queues_page(web, base_url, browser, screenshot):
    from selenium.webdriver.common.by import By

    # given three jobs waiting (no worker), and an operator on the Queues page
    ids = [web.client.post(f"/api/jobs/{ECHO}", json={"text": t}).json()["message_id"]
           for t in ("a", "b", "c")]
    log_in(browser, USERNAME, PASSWORD)
    browser.get(f"{base_url}/dashboard/queues?queue={web.queue}")
    assert text_of(browser, "#state-waiting b") == "3"
    # when two are selected and cancelled, and the confirmation accepted
    for message_id in ids[:2]:
        click(browser, f'#job-{message_id} input[name="id"]')
    screenshot("queues")
    browser.find_element(By.CSS_SELECTOR, "#cancel-selected button.danger").click()
    wait_for(lambda: "Cancel 2 job(s)" in text_of(browser, "#question"),
             what="the confirmation")
    browser.find_element(By.CSS_SELECTOR, "#confirm button").click()
    # then the page comes back with one waiting, and those two are cancelled for good
    wait_for(lambda: text_of(browser, "#state-waiting b") == "1", what="one left waiting")
    assert text_of(browser, "#state-cancelled b") == "2"
    assert [web.sy.state.history.get(i)["status"] for i in ids] == [
        "cancelled", "cancelled", "queued"]
    browser.get(f"{base_url}/dashboard/busy")
    assert "Nothing runs now." in text_of(browser, "table.busy")


def test_a_scheduled_job_is_run_now_from_the_queues_page(web, base_url, browser, screenshot,
                                                         start_worker):
    from selenium.webdriver.common.by import By

    # given two jobs scheduled an hour ahead, held by a running worker
    start_worker(web.sy)
    ids = [web.client.post(f"/api/jobs/{ECHO}?delay=3600000", json={"text": t}).json()[
        "message_id"] for t in ("a", "b")]
    web.sy.state.buffer.flush()
    log_in(browser, USERNAME, PASSWORD)
    browser.get(f"{base_url}/dashboard/queues?queue={web.queue}&state=scheduled")
    assert text_of(browser, "#state-scheduled b") == "2"
    assert text_of(browser, "#run-now") == "Run now"
    # when one is selected and run now, and the confirmation accepted
    click(browser, f'#job-{ids[0]} input[name="id"]')
    browser.find_element(By.ID, "run-now").click()
    wait_for(lambda: "Run 1 scheduled or retrying job(s)" in text_of(browser, "#question"),
             what="the confirmation")
    browser.find_element(By.CSS_SELECTOR, "#confirm button").click()
    # then it runs at once, and the other keeps its time
    wait_for(lambda: (web.sy.state.history.get(ids[0]) or {}).get("status") == "done"
             if not web.sy.state.buffer.flush() else False, what="run now")
    assert web.sy.state.history.get(ids[1])["status"] == "queued"
    browser.get(f"{base_url}/dashboard/queues?queue={web.queue}&state=scheduled")
    assert text_of(browser, "#state-scheduled b") == "1"


def test_the_metrics_page_shows_an_actors_runs_and_run_times(web, base_url, browser,
                                                              screenshot, start_worker):
    from selenium.webdriver.common.by import By

    # given jobs of two actors that ran, one failed for good
    start_worker(web.sy)
    web.fix("a")
    ids = [web.client.post(f"/api/jobs/{actor}", json=body).json()["message_id"]
           for actor, body in ((ECHO, {"text": "x"}), (FLAKY, {"name": "a"}),
                               (FLAKY, {"name": "b"}))]
    wait_for(lambda: all((web.sy.state.history.get(i) or {}).get("status") in ("done", "failed")
                         for i in ids if not web.sy.state.buffer.flush()), what="all ended")
    web.sy.state.buffer.flush()
    # when the operator opens the Metrics page and picks the flaky actor
    log_in(browser, USERNAME, PASSWORD)
    browser.get(f"{base_url}/dashboard/metrics")
    browser.find_element(By.CSS_SELECTOR, f"#actor-{FLAKY} a").click()
    wait_for(lambda: f"{FLAKY}: last hour" in text_of(browser, "#actor-charts"),
             what="the actor's charts")
    # then its row says two runs, half failed, and its charts are drawn
    assert text_of(browser, f"#actor-{FLAKY}").split()[:3] == [FLAKY, "2", "50.0%"]
    assert "failed 1" in text_of(browser, "#chart-minute-runs")
    screenshot("metrics")


def test_a_dead_letters_arguments_are_revealed_from_the_job_page(make_web, browser,
                                                                   screenshot):
    from selenium.webdriver.common.by import By

    from tests.web.conftest import served

    # given the reveal login, and a dead letter with an address and a token in its payload
    web = make_web(web_reveal_username="lead", web_reveal_password="Reveal-pw-0123-zebra")
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=web.queue, actor_name=ECHO, args=(), kwargs={
        "email": "ann@example.com", "token": "t0ken-never-shown"}, options={})
    web.sy.state.dead_letters.add(message, {"error": "PermanentError", "attempts": 1})
    with served(web.app, grace_s=10) as base_url:
        # when the lead operator opens the job and reveals its arguments
        log_in(browser, "lead", "Reveal-pw-0123-zebra")
        browser.get(f"{base_url}/dashboard/jobs?id={message.message_id}")
        browser.find_element(By.CSS_SELECTOR, "#reveal button").click()
        wait_for(lambda: "ann@example.com" in text_of(browser, "#job-arguments"),
                 what="the arguments")
        # then the token stays masked, and the reveal is listed with who
        assert "t0ken-never-shown" not in text_of(browser, "#job-arguments")
        assert "arguments revealed to lead" in text_of(browser, "#job-reveals")
        screenshot("revealed")


@pytest.fixture
def ui_workers(process_env: dict[str, str], queue: str) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses({**process_env, "TEST_QUEUE": f"{queue}-beat"},
                            module="tests.web.ui_worker")
    yield procs
    procs.stop_all()


def test_a_killed_worker_is_marked_silent(web, ui_workers, base_url, browser, screenshot):
    # given a worker process the workers page shows alive
    proc = ui_workers.start()
    log_in(browser, USERNAME, PASSWORD)

    def row_class() -> str:
        browser.get(f"{base_url}/dashboard/workers")
        from selenium.webdriver.common.by import By

        rows = browser.find_elements(By.ID, f"worker-{proc.pid}")
        return str(rows[0].get_attribute("class")) if rows else ""

    wait_for(lambda: row_class() == "alive", what="the worker alive", interval=0.2)

    # when it is killed
    ui_workers.kill(proc)

    # then, three heartbeats later, the page marks it silent
    wait_for(lambda: row_class() == "silent", what="the worker silent", timeout=15,
             interval=0.3)
    screenshot("workers")


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_the_dashboard_shows_nothing_without_logging_in(web, base_url, browser, broker_kind):
    # when a browser that has not logged in opens a dashboard page
    browser.get(f"{base_url}/dashboard/dead-letters")

    # then it was answered with the login challenge's status, and none of the page
    status = browser.execute_script(
        "return performance.getEntriesByType('navigation')[0].responseStatus")
    assert status == 401
    assert "Dead letters" not in browser.page_source


def test_the_busy_page_shows_a_job_that_starts_without_a_reload(web, start_worker, base_url,
                                                                 browser, screenshot):
    import threading

    from pydantic import BaseModel

    from switchyard.runtime.enqueue import enqueue
    from switchyard.runtime.jobs import Context, job

    class Step(BaseModel):
        n: int

    go = threading.Event()

    @job(Step, actor_name="busy_stepping", queue_name=web.queue)
    def busy_stepping(ctx: Context, payload: Step) -> None:
        ctx.progress(0.5, "halfway")
        go.wait(30)

    web.sy.declare([busy_stepping])
    start_worker(web.sy)
    # given an operator on the Busy page while nothing runs
    log_in(browser, USERNAME, PASSWORD)
    browser.get(f"{base_url}/dashboard/busy")
    assert "Nothing runs now." in text_of(browser, "table.busy")
    browser.execute_script("document.body.dataset.loadedOnce = 'yes'")
    try:
        # when a job starts and says its progress
        message_id = enqueue(web.sy, "busy_stepping", {"n": 1}).message_id

        # then the same page shows it, sooner than its 30 s fallback refresh: it
        # followed the job event stream
        def shown() -> bool:
            web.sy.state.buffer.flush()
            return "50% halfway" in text_of(browser, "table.busy")

        wait_for(shown, timeout=20, what="the running job on the page", interval=0.2)
        assert message_id in text_of(browser, "table.busy")
        assert browser.execute_script("return document.body.dataset.loadedOnce") == "yes"
        screenshot("busy")
    finally:
        go.set()

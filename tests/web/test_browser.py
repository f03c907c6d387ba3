"""A person in a real browser: logs into the dashboard, sees a dead letter, replays it,
and sees it gone. Headless Chromium from the system (no browser download); required in
CI, skipped locally when Chromium is not installed."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import missing
from tests.support.waiting import wait_for
from tests.web.conftest import FLAKY, PASSWORD, USERNAME

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage"]


@pytest.fixture
def browser() -> Iterator[object]:
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


def log_in(driver, username: str, password: str) -> None:
    """HTTP basic, as a browser sends it after the login prompt (headless has no prompt)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {token}"}})


def test_a_dead_letter_is_replayed_from_the_dashboard(web, start_worker, base_url, browser):
    from selenium.webdriver.common.by import By

    # given a dead-lettered job
    start_worker(web.sy)
    message_id = web.client.post(f"/api/jobs/{FLAKY}", json={"name": "b"}).json()["message_id"]
    wait_for(lambda: web.sy.state.dead_letters.depth(web.queue), what="dead letter")
    web.fix("b")

    # when a person logs in and opens the dead letters
    log_in(browser, USERNAME, PASSWORD)
    browser.get(f"{base_url}/dashboard/")
    assert web.queue in browser.page_source  # dramatiq-dashboard's queue list
    browser.get(f"{base_url}/dashboard/dead-letters")
    row = browser.find_element(By.ID, f"dl-{message_id}")
    assert "PermanentError" in row.text and FLAKY in row.text

    # and selects it and replays it
    row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    browser.find_element(By.CSS_SELECTOR, f"#replay-{web.queue} button").click()

    # then the page comes back without it, and the job has run again
    wait_for(lambda: not browser.find_elements(By.ID, f"dl-{message_id}"), what="row gone")
    assert "No dead letters." in browser.page_source
    wait_for(lambda: (web.sy.state.buffer.flush() or web.sy.state.history.get(message_id) or {})
             .get("status") == "done", what="replayed job done")


def test_the_dashboard_shows_nothing_without_logging_in(web, base_url, browser):
    browser.get(f"{base_url}/dashboard/dead-letters")

    assert "Queues and dead letters" not in browser.page_source

"""Logs carry ids, not payloads, one WARNING per retry instead of a traceback each, and a
line that repeats once per interval."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import dramatiq
import pytest

from switchyard import logs
from switchyard.enqueue import enqueue
from switchyard.errors import RetryableError
from tests.support.jobs import finished
from tests.support.processes import ROOT
from tests.support.waiting import wait_for


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_retries_log_one_warning_each_and_no_payload(
    build_switchyard, start_worker, queue, caplog
):
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=2, min_backoff=20)
    def send_otp(email: str) -> None:
        raise RetryableError("smtp unavailable")

    caplog.set_level(logging.DEBUG)
    start_worker(sy)
    email = "someone" + "@example.test"
    message = send_otp.send(email)
    wait_for(lambda: finished(sy, message.message_id), what="dead letter")

    warnings = [r for r in caplog.records if r.name == "switchyard.retry"]
    assert [r.levelname for r in warnings] == ["WARNING", "WARNING"]
    assert all(message.message_id in r.getMessage() and not r.exc_info for r in warnings)
    assert not [r for r in caplog.records if r.getMessage().startswith("Failed to process")]
    assert email not in caplog.text


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_job_that_returns_a_value_logs_no_discarded_warning(
    build_switchyard, process_env, queue, tmp_path
):
    # given a worker process (its warnings go to stderr)
    import actors.ping

    sy = build_switchyard()
    sy.declare([actors.ping])
    stderr = tmp_path / "worker.err"
    with stderr.open("w") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.support.worker_app"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=err, text=True, env={**os.environ, **process_env, "TEST_QUEUE": queue,
                                        "PYTHONPATH": str(ROOT)})
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        # when a ping job (which returns a value) runs
        message_id = enqueue(sy, "ping", {"echo": "hi"}).message_id
        assert wait_for(lambda: finished(sy, message_id)) == {message_id: "done"}
    finally:
        worker.terminate()  # a graceful stop: everything it logs is written
        worker.wait(30)
    # then nothing says its value was discarded (the history keeps it)
    assert "returned a value that is not None" not in stderr.read_text()
    assert sy.state.history.get(message_id)["result"]["echo"] == "hi"


def repeat_log(tmp_path: Path, interval_ms: int) -> tuple[logging.Logger, Path]:
    """A logger of its own writing to a file through a `Repeats` filter."""
    path = tmp_path / "repeats.log"
    handler = logging.FileHandler(path)
    handler.addFilter(logs.Repeats(interval_ms=interval_ms))
    logger = logging.getLogger(f"switchyard.test.repeats.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger, path


def test_a_repeated_line_is_logged_once_per_interval_with_the_count_held_back(tmp_path):
    logger, path = repeat_log(tmp_path, interval_ms=1_000)
    # when one failure is logged five times at once (same template, other arguments)
    for attempt in range(5):
        logger.warning("Could not reach %s (attempt %d)", "redis", attempt)
    # then one line shows
    assert path.read_text().splitlines() == ["Could not reach redis (attempt 0)"]

    # and the next one after the interval counts those held back meanwhile
    tries = [0]

    def log_again() -> bool:
        tries[0] += 1
        logger.warning("Could not reach %s (attempt %d)", "redis", 99)
        return len(path.read_text().splitlines()) == 2

    wait_for(log_again, timeout=10, interval=0.05, what="the interval to pass")
    shown = path.read_text().splitlines()[1]
    assert re.fullmatch(r"Could not reach redis \(attempt 99\) "
                        r"\[(\d+) more like this in the last \d+s not shown\]", shown)
    assert shown.split("[")[1].split()[0] == str(4 + tries[0] - 1)  # 4 + the polls held back


def test_other_lines_levels_and_loggers_are_not_held_back(tmp_path):
    logger, path = repeat_log(tmp_path, interval_ms=60_000)
    other = logger.getChild("other")
    logger.warning("Heartbeat failed: %s", "timeout")
    logger.error("Heartbeat failed: %s", "timeout")
    other.warning("Heartbeat failed: %s", "timeout")
    logger.warning("Flush failed: %s", "timeout")
    assert len(path.read_text().splitlines()) == 4


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_lines_logged_while_a_job_runs_are_never_held_back(
    build_switchyard, start_worker, queue, tmp_path
):
    # given a job that logs the same line for each item it handles
    logger, path = repeat_log(tmp_path, interval_ms=60_000)
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def notify(users: list[str]) -> None:
        for user in users:
            logger.warning("Notified %s", user)

    start_worker(sy)
    message = notify.send(["u1", "u2", "u3"])
    wait_for(lambda: finished(sy, message.message_id), what="the job")
    # then each line shows
    assert path.read_text().splitlines() == ["Notified u1", "Notified u2", "Notified u3"]


def test_setup_holds_repeats_back_on_root_handlers_added_later(tmp_path):
    # given logging set up, then a handler added to the root logger
    logs.setup()
    path = tmp_path / "root.log"
    handler = logging.FileHandler(path)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        # when a line repeats / then it shows once
        logger = logging.getLogger(f"switchyard.test.root.{uuid.uuid4().hex}")
        for _ in range(3):
            logger.warning("Consumer encountered a connection error: %s", "timed out")
    finally:
        root.removeHandler(handler)
        handler.close()
    assert path.read_text().splitlines() == ["Consumer encountered a connection error: timed out"]

"""Logs carry ids, not payloads, one WARNING per retry instead of a traceback each, and a
line that repeats once per interval."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dramatiq
import pytest

from switchyard.base import logs
from switchyard.base.errors import RetryableError
from switchyard.runtime.enqueue import enqueue
from tests.support.jobs import finished
from tests.support.processes import ROOT, stop
from tests.support.services import answers, free_port
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


@pytest.mark.worker  # one worker process
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
        stop([worker], grace=30)  # a graceful stop: everything it logs is written
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


@contextmanager
def root_log_file(path: Path, level: int = logging.DEBUG) -> Iterator[Path]:
    """A file handler on the root logger at `level`; text logs again afterwards."""
    handler = logging.FileHandler(path)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        logs.setup()  # text again, as every other test expects


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_json_logs_name_the_job_and_never_show_its_payload_or_a_secret(
    build_switchyard, start_worker, queue, tmp_path
):
    # given JSON logs, and a job that logs, fails once with a secret in its error, and
    # logs an exception with it too
    sy = build_switchyard(log_format="json")
    secret = "123456789:" + uuid.uuid4().hex + "ABCDEFGH"  # a Telegram bot token's shape
    body = f"meet me at the blue door {uuid.uuid4().hex[:6]}"
    logger = logging.getLogger("switchyard.test.json")
    runs: list[str] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=1, min_backoff=20)
    def deliver(text: str, token: str) -> None:
        logger.info("Delivering")
        runs.append(text)
        if len(runs) == 1:
            try:
                raise ConnectionError(f"refused for {token}")
            except ConnectionError:
                logger.exception("Provider call failed")
            raise RetryableError(f"provider refused {token}")

    with root_log_file(tmp_path / "json.log") as path:
        start_worker(sy)
        # when it runs (with Dramatiq's DEBUG lines, which would print its arguments)
        message = deliver.send(body, secret)
        logger.info("Sent the job")
        wait_for(lambda: finished(sy, message.message_id), what="the job")
        sy.state.buffer.flush()
        text = path.read_text()

    # then every line is one JSON object with the time, level, logger and message
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
               for line in lines)
    # and the job's own lines name it, with the attempt they were logged in
    own = [line for line in lines
           if line["logger"] == "switchyard.test.json" and line["message"] != "Sent the job"]
    job = {"message_id": message.message_id, "actor": "deliver", "queue": queue}
    assert [(line["message"], line["attempt"]) for line in own] == [
        ("Delivering", 1), ("Provider call failed", 1), ("Delivering", 2)]
    assert all(job.items() <= line.items() for line in own)
    assert "ConnectionError: refused for [redacted]" in own[1]["exc"]
    [retry] = [line for line in lines if line["logger"] == "switchyard.retry"]
    assert retry["level"] == "WARNING" and retry["attempt"] == 1
    # and neither the payload nor the secret is anywhere
    assert body not in text and secret not in text
    # and lines logged outside the job have no job fields
    [outside] = [line for line in lines if line["message"] == "Sent the job"]
    assert "message_id" not in outside and "attempt" not in outside


def test_text_is_the_default_and_going_back_to_it_restores_each_format(tmp_path):
    # given a handler with a text format of its own
    path = tmp_path / "text.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    logger = logging.getLogger(f"switchyard.test.text.{uuid.uuid4().hex}")
    try:
        # when logs are set up as JSON, then as the default
        logs.setup(log_format="json")
        logger.warning("as json %s", 1)
        logs.setup()
        logger.warning("as text %s", 2)
    finally:
        root.removeHandler(handler)
        handler.close()
        logs.setup()
    # then the first line is JSON and the second the handler's own format again
    first, second = path.read_text().splitlines()
    assert json.loads(first)["message"] == "as json 1"
    assert second == f"WARNING {logger.name}: as text 2"


def test_a_process_without_a_log_handler_writes_json_lines_to_stderr(test_env):
    # given a process (the clock, the bridge, the CLI) that configures no handler
    code = ("import logging; from switchyard.boot import build; "
            "from switchyard.base.settings import load; build(load()); "
            "log = logging.getLogger('switchyard.clock'); "
            "log.warning('Clock pass failed (%s); trying again.', 'TimeoutError')\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('Boom')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, **test_env, "LOG_FORMAT": "json"})
    # when it logs / then each line on stderr is JSON, the exception in `exc`
    assert result.returncode == 0, result.stderr
    warning, error = (json.loads(line) for line in result.stderr.splitlines())
    assert (warning["level"], warning["logger"], warning["message"]) == (
        "WARNING", "switchyard.clock", "Clock pass failed (TimeoutError); trying again.")
    assert error["message"] == "Boom" and "ZeroDivisionError" in error["exc"]
    assert "message_id" not in warning


@pytest.mark.e2e  # a gunicorn master and its uvicorn worker
def test_the_web_process_logs_json_lines_gunicorns_and_uvicorns_too(test_env, tmp_path):
    # given the web process with JSON logs
    port = free_port()
    env = {**os.environ, **test_env, "LOG_FORMAT": "json", "WEB_USERNAME": "operator",
           "WEB_PASSWORD": "pw-correct-horse-battery", "API_TOKEN": "tok-" + "a1b2c3d4" * 4}
    out, err = tmp_path / "web.out", tmp_path / "web.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "--bind",
             f"127.0.0.1:{port}", "--workers", "1"], cwd=ROOT, env=env, stdout=stdout,
            stderr=stderr)
    try:
        # when it serves a request whose URL carries a token
        wait_for(lambda: answers(f"http://127.0.0.1:{port}"), timeout=60, what="gunicorn")
        url = f"http://127.0.0.1:{port}/health?token=s3cr3t-{uuid.uuid4().hex}"
        wait_for(lambda: urllib.request.urlopen(url, timeout=5).status == 200,
                 what="/health")
        wait_for(lambda: "uvicorn.access" in out.read_text() + err.read_text(),
                 what="the access line")
    finally:
        stop([web], grace=30)
    # then every line, gunicorn's and uvicorn's, is JSON, and the token is masked
    lines = [json.loads(line) for line in (out.read_text() + err.read_text()).splitlines()]
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "uvicorn.access"} <= loggers
    [access] = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert "/health?token=[redacted]" in access["message"]

"""`switchyard` as a user runs it, in a subprocess, against real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import dramatiq
import pytest
import redis

import actors.ping
from switchyard.base.errors import PermanentError, UnknownQueue
from switchyard.runtime.enqueue import enqueue
from tests.support.jobs import finished
from tests.support.processes import ROOT, stop
from tests.support.services import answers, free_port
from tests.support.waiting import wait_for


@pytest.fixture
def cli(process_env):
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
        return subprocess.run(
            [sys.executable, "-m", "switchyard.cli", *args], cwd=ROOT, capture_output=True,
            text=True,
            env={**os.environ, **process_env, **(env or {})}, timeout=timeout,
        )

    return run


def test_unknown_actor_exits_non_zero_with_a_clear_line(cli):
    result = cli("send", "nosuch", "{}")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("switchyard: unknown actor 'nosuch' (known: ")
    assert "join_channel, leave_channel, ping, " in result.stderr


@pytest.mark.parametrize("payload, expected", [
    ("{bad", "payload is not valid JSON"),
    ("[1]", "payload must be a JSON object"),
    ('{"nope": 1}', "invalid Ping payload: nope: Extra inputs are not permitted"),
    ('{"echo": ' + "[" * 100 + "]" * 100 + "}",
     "payload is nested too deeply (more than 64 levels)"),
])
def test_bad_payloads_are_refused_before_sending(cli, payload, expected):
    result = cli("send", "ping", payload)
    assert result.returncode == 2 and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_redis_is_one_line(cli):
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = cli("send", "ping", "{}", env={"REDIS_URL": url})
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"switchyard: cannot reach Redis at {url}: Error 111 connecting to "
        f"127.0.0.1:{url.split(':')[2].split('/')[0]}. Connection refused."]


#: What `switchyard send ping` must not load: other families, the database, the RabbitMQ
#: stack on the Redis broker, providers' SDKs, Sentry without a DSN, the web process.
NOT_FOR_A_SEND = ("actors.bot", "actors.media", "processing", "store", "sqlalchemy", "pika",
                  "boto3", "google", "telethon", "sentry_sdk", "periodiq", "fastapi", "web")


def test_a_send_imports_only_what_sending_needs(test_env):
    """On the Redis broker (RabbitMQ's path needs pika, and only that more)."""
    code = ("import sys, runpy; sys.argv = ['switchyard', 'send', 'ping', '{}']\n"
            "try:\n    runpy.run_module('switchyard.cli', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
            "print(' '.join(sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, **test_env}, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = result.stderr.split()
    assert "actors.ping" in loaded and "redis" in loaded
    assert [m for m in loaded if m.split(".")[0] in NOT_FOR_A_SEND or m in NOT_FOR_A_SEND] == []


def test_invalid_setting_names_the_variable(cli):
    result = cli("actors", env={"HISTORY_KEEP_DONE": "lots"})
    assert result.returncode == 2
    assert result.stderr.startswith("switchyard: setting HISTORY_KEEP_DONE is invalid")


def test_send_wait_and_health_with_a_worker(cli, worker_processes):
    assert cli("db", "upgrade").returncode == 0
    assert cli("health").returncode == 1  # no worker yet
    worker_processes.start()
    result = cli("send", "ping", '{"echo": "hello"}', "--wait", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    message_id, body = result.stdout.split("\n", 1)
    job = json.loads(body)
    assert job["id"] == message_id and job["status"] == "done"
    assert job["result"]["echo"] == "hello"
    health = cli("health")
    assert health.returncode == 0, health.stdout
    assert "workers: ok  1 live" in health.stdout


def test_actors_lists_queue_and_options(cli):
    result = cli("actors", "--json")
    assert result.returncode == 0
    listed = {a["actor"]: a for a in json.loads(result.stdout)}
    assert listed["ping"]["queue"] == "default"
    assert listed["ping"]["options"]["max_retries"] == 0


def test_the_seed_job_types_keep_their_names_queues_and_schedules(cli):
    # The names and queues are a contract: other services address jobs by them.
    listed = {a["actor"]: a for a in json.loads(cli("actors", "--json").stdout)}
    queues = {name: listed[name]["queue"] for name in listed if name != "ping"}
    assert queues == {
        "join_channel": "channel-ops", "leave_channel": "channel-ops",
        "invite_user": "bot-operations", "remove_user": "bot-operations",
        "verify_permissions": "bot-operations", "send_otp": "email",
        "send_welcome_email": "email", "send_verification_link": "email",
        "send_push": "notification", "send_email_notification": "notification",
        "send_sms": "notification", "send_batch_notifications": "notification",
        "send_batch_push": "notification", "record_batch_notifications": "notification",
        "process_image": "media", "process_video": "media", "process_audio": "media",
        "discord_interaction": "discord-interactions", "discord_guild_event": "discord-events",
        **{f"cleanup_{kind}": "cleanup" for kind in (
            "stories", "sessions", "messages", "temp_files", "prekeys", "orphaned_media",
            "records")}}
    join = listed["join_channel"]["options"]
    assert (join["concurrency"], join["max_retries"], join["store_results"]) == (1, 0, True)
    invite = listed["invite_user"]["options"]
    assert (invite["min_backoff"], invite["max_backoff"], invite["max_retries"],
            invite["concurrency"]) == (1_000, 900_000, 5, 10)
    assert listed["send_push"]["options"]["concurrency"] == 5


def test_dead_letter_reason_through_jobs_show_and_dlq_and_replay(
    cli, build_switchyard, start_worker, queue
):
    # given a job that failed permanently
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def refund(order: str) -> None:
        runs.append(1)
        raise PermanentError("order not found", code="404", provider="shop")

    start_worker(sy)
    message = refund.send("o-9")
    wait_for(lambda: finished(sy, message.message_id), what="failed")

    # then its reason reads through `jobs show` and `dlq show`
    shown = cli("jobs", "show", message.message_id)
    assert shown.returncode == 0
    job = json.loads(shown.stdout)
    assert job["status"] == "failed" and job["error"]["message"] == "order not found"
    dead = json.loads(cli("dlq", "show", message.message_id).stdout)
    assert dead["reason"]["error"] == "PermanentError" and dead["reason"]["code"] == "404"
    assert "order not found" in cli("dlq", "list", queue).stdout

    # and replay runs it again, purge empties the queue
    replay = cli("dlq", "replay", queue, message.message_id)
    assert replay.returncode == 0 and "replayed 1" in replay.stdout
    wait_for(lambda: len(runs) == 2 and sy.state.dead_letters.depth(queue) == 1, what="rerun")
    assert "purged 1" in cli("dlq", "purge", queue).stdout
    assert sy.state.dead_letters.depth(queue) == 0
    assert cli("dlq", "show", message.message_id).returncode == 1


def test_replaying_a_dead_letter_kept_without_its_payload_says_why(cli, build_switchyard, queue):
    # given a dead letter listed, but kept without its payload (over the cap)
    sy = build_switchyard(max_payload_bytes=1_024)
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name="note", args=(), kwargs={"text": "x" * 2_000}, options={})
    sy.state.dead_letters.add(message, {"error": "Boom", "message": "boom", "attempts": 1})
    assert message.message_id in cli("dlq", "list", queue).stdout

    # when it is replayed, then one line says why it cannot be, and it stays
    result = cli("dlq", "replay", queue, message.message_id)
    assert result.returncode == 1 and "replayed 0" in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"switchyard: cannot replay {message.message_id}: it was kept "
                           "without its payload (") and "over MAX_PAYLOAD_BYTES" in line
    assert sy.state.dead_letters.depth(queue) == 1
    every = cli("dlq", "replay", queue, "--all")  # and so when all are replayed
    assert every.returncode == 1 and every.stderr.splitlines() == [line]


def test_replaying_an_id_of_another_queue_says_where_it_is(cli, build_switchyard, queue):
    sy = build_switchyard()
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name="note", args=(), kwargs={}, options={})
    sy.state.dead_letters.add(message, {"error": "Boom", "message": "boom", "attempts": 1})
    other = f"{queue}-other"
    sy.state.dead_letters.add(message.copy(queue_name=other, message_id="elsewhere-1"),
                              {"error": "Boom", "message": "boom", "attempts": 1})
    result = cli("dlq", "replay", other, message.message_id)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"switchyard: cannot replay {message.message_id}: not in the dead letters of "
        f"{other} (it is in {queue!r})"]


@pytest.mark.parametrize("args", [["purge"], ["replay", "--all"], ["list"]])
def test_an_unknown_queue_fails_with_the_reason_the_api_gives(cli, queue, args):
    unknown = f"{queue}-nosuch"
    result = cli("dlq", args[0], unknown, *args[1:])
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"switchyard: {UnknownQueue(unknown).message}"]


def test_a_payload_over_max_payload_bytes_is_refused_before_any_service(cli):
    payload = json.dumps({"userId": "u-1", "email": "ann@example.com", "title": "Hi",
                          "body": "x" * 5_000})
    result = cli("send", "send_email_notification", payload,
                 env={**no_services(), "MAX_PAYLOAD_BYTES": "1024"})
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("switchyard: the payload is ") and line.endswith(
        " bytes as JSON, over MAX_PAYLOAD_BYTES (1024 bytes)")


@pytest.mark.parametrize("broker_kind", ["redis"])  # what is written, not where jobs go
@pytest.mark.parametrize("args", [
    ["actors", "--json"], ["actors"], ["settings"], ["keys", "generate"], ["dlq", "list"],
])
def test_output_cut_short_by_its_reader_ends_quietly(process_env, args):
    # given stdout piped to a reader that closed it before reading (`| head` had enough)
    read, write = os.pipe()
    reader = subprocess.Popen(["true"], stdin=read)
    os.close(read)
    reader.wait(timeout=10)

    # when a command writes its output there
    try:
        result = subprocess.run(
            [sys.executable, "-m", "switchyard.cli", *args], cwd=ROOT, stdout=write,
            stderr=subprocess.PIPE, text=True, env={**os.environ, **process_env}, timeout=60)
    finally:
        os.close(write)

    # then it stops as a closed pipe stops a command: no traceback, exit 141
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
    assert result.returncode == 141, result.stderr


# Bad input is refused by the one way in's rules, in one line, exit 2, with no service.

def no_services() -> dict[str, str]:
    """Settings whose Redis does not exist: what a refusal must not need."""
    return {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}


def test_a_payload_nested_too_deeply_is_one_line(cli):
    deep = "[" * 40_000 + "]" * 40_000
    result = cli("send", "ping", '{"echo": ' + deep + "}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["switchyard: payload is nested too deeply"]


@pytest.mark.parametrize("options, expected", [
    (["--delay", "-5"], "delay must be between 0 and 604799999 ms (under 7 days)"),
    (["--delay", str(31 * 365 * 86_400_000)], "delay must be between 0 and 604799999 ms"),
    (["--idempotency-key="], "the idempotency key must be 1 to 200 characters"),
    (["--idempotency-key", "k" * 201], "the idempotency key must be 1 to 200 characters"),
])
def test_options_the_api_refuses_are_refused_before_any_service(cli, options, expected):
    result = cli("send", "ping", "{}", *options, env=no_services())
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"switchyard: {expected}")


@pytest.mark.parametrize("args, expected", [
    (["send", "nosuch", "{}"], "switchyard: unknown actor 'nosuch'"),
    (["send", "ping", '{"echo": 5}'], "switchyard: invalid Ping payload: echo:"),
])
def test_unknown_actors_and_invalid_payloads_need_no_service(cli, args, expected):
    result = cli(*args, env=no_services())
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(expected)


@pytest.mark.parametrize("args, expected", [
    (["send", "ping", "{}", "--delay", "soon"], "argument --delay: invalid int value: 'soon'"),
    (["send", "ping", "{}", "--wait", "--timeout", "nan"], "argument --timeout: 'nan' is not"),
    (["dlq", "list", "--limit", "0"], "argument --limit: '0' is not a whole number"),
    (["send", "ping"], "the following arguments are required: payload"),
    (["nosuch"], "argument command: invalid choice: 'nosuch'"),
])
def test_bad_arguments_are_one_line_and_exit_2(cli, args, expected):
    result = cli(*args, env=no_services())
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"switchyard: {expected}"), lines


def test_actors_needs_no_service_running(cli):
    result = cli("actors", env={**no_services(),
                                "BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"})
    assert result.returncode == 0, result.stderr
    assert "ping" in result.stdout.split()


def test_actors_shows_key_functions_by_the_payload_fields_they_read(cli):
    text = cli("actors", env=no_services()).stdout
    listed = json.loads(cli("actors", "--json", env=no_services()).stdout)
    assert " at 0x" not in text and "<locals>" not in text
    invite = next(line for line in text.splitlines() if line.startswith("invite_user "))
    assert "idempotency_key=<function of subscriptionId,channelId,orderId>" in invite
    verify = {a["actor"]: a for a in listed}["verify_permissions"]["options"]
    assert verify["idempotency_key"] == "<function of listingId,channelId>"


@pytest.mark.e2e  # `switchyard redis` (and its server) running, and a send
def test_a_second_shell_finds_the_embedded_redis_on_its_port(tmp_path):
    # given `switchyard redis` started with a port of its own, and no REDIS_URL
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if name not in ("REDIS_URL", "BROKER_URL", "EMBEDDED_REDIS_PORT")}
    env.update(VAR_DIR=str(tmp_path / "var"), SWITCHYARD_ENV="test")
    server = subprocess.Popen([sys.executable, "-m", "switchyard.cli", "redis"], cwd=ROOT,
                              env={**env, "EMBEDDED_REDIS_PORT": str(port)},
                              stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        wait_for(lambda: answers(f"redis://127.0.0.1:{port}"), what="the embedded Redis")
        # when another shell sends a job without knowing the port
        sent = subprocess.run([sys.executable, "-m", "switchyard.cli", "send", "ping", "{}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        # then it reached that Redis
        assert sent.returncode == 0, sent.stderr
        assert client.llen("dramatiq:default") == 1
        client.close()
    finally:
        stop([server])


# The send options a user relies on, against a worker process.

def test_send_with_an_idempotency_key_runs_the_job_once(cli, worker_processes):
    assert cli("db", "upgrade").returncode == 0
    worker_processes.start()
    # when the same key is sent twice, with different payloads
    first = cli("send", "ping", '{"echo": "first"}', "--idempotency-key", "k-1", "--wait")
    again = cli("send", "ping", '{"echo": "again"}', "--idempotency-key", "k-1", "--wait")
    # then the first ran, and the second was recorded as a skipped duplicate (exit 0)
    assert first.returncode == 0 and again.returncode == 0, (first.stderr, again.stderr)
    done = json.loads(first.stdout.split("\n", 1)[1])
    skipped = json.loads(again.stdout.split("\n", 1)[1])
    assert (done["status"], done["result"]["echo"]) == ("done", "first")
    assert skipped["status"] == "skipped" and "result" not in skipped


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_send_with_a_delay_waits_for_it(cli, worker_processes, build_switchyard):
    assert cli("db", "upgrade").returncode == 0
    worker_processes.start()
    # when a job is sent with a 10-minute delay, then one without
    delayed = cli("send", "ping", "{}", "--delay", "600000")
    assert delayed.returncode == 0, delayed.stderr
    now = cli("send", "ping", "{}", "--wait")
    assert now.returncode == 0, now.stderr
    # then the one sent later has run, and the delayed one still waits, held as delayed
    sy = build_switchyard()
    record = sy.state.history.get(delayed.stdout.strip())
    assert record is not None and record["status"] == "queued"
    assert sy.queues.counts("default").delayed == 1


def test_send_wait_exits_1_when_the_job_fails(cli, worker_processes):
    assert cli("db", "upgrade").returncode == 0
    worker_processes.start()
    # when a job that cannot succeed (a join of a channel that does not exist) is sent
    result = cli("send", "join_channel", '{"channelId": "no-such-channel", "username": "nobody"}',
                 "--wait")
    # then the command prints its failed record and exits 1
    assert result.returncode == 1, (result.stdout, result.stderr)
    job = json.loads(result.stdout.split("\n", 1)[1])
    assert job["status"] == "failed" and job["error"]["error"]


# An unmigrated database: said by `db current`, `health` and the jobs that need it.

def test_an_unmigrated_database_is_named_by_db_current_and_health(cli, tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"}
    current = cli("db", "current", env=env)
    assert current.returncode == 1
    assert " at nothing " in current.stdout
    # (a deadline for the checks that a loaded machine meets: the first use of the
    # migrations is slow to import)
    health = cli("health", env={**env, "REDIS_TIMEOUT_MS": "20000"})
    assert health.returncode == 1, (health.stdout, health.stderr)
    (line,) = [x for x in health.stdout.splitlines() if x.startswith("database:")]
    assert line.startswith("database: FAIL") and "run `switchyard db upgrade`" in line
    assert cli("db", "upgrade", env=env).returncode == 0
    assert cli("db", "current", env=env).returncode == 0


def test_a_job_on_an_unmigrated_database_retries_until_it_is_upgraded(
    cli, build_switchyard, start_worker, queue, tmp_path
):
    # given a worker whose database has no schema yet, and a job that needs it
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path}/later.db"
    sy = build_switchyard(database_url=url)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=100, min_backoff=100,
                    max_backoff=200)
    def needs_the_database() -> int:
        with sy.database.session() as session:
            return int(session.execute(text("SELECT 1")).scalar_one())

    start_worker(sy)
    message = needs_the_database.send()

    # then it is retried, saying how to fix it
    def retrying():
        sy.state.buffer.flush()
        job = sy.state.history.get(message.message_id)
        return job if job and job["status"] == "retrying" else None

    job = wait_for(retrying, what="retrying")
    assert job["error"]["error"] == "RetryableError" and job["error"]["code"] == "schema"
    assert "run `switchyard db upgrade`" in job["error"]["message"]

    # and once the database is upgraded, a retry goes through
    assert cli("db", "upgrade", env={"DATABASE_URL": url}).returncode == 0
    wait_for(lambda: finished(sy, message.message_id), timeout=20, what="done")
    assert sy.state.history.get(message.message_id)["status"] == "done"


def test_jobs_cancel_by_id_and_by_key_then_jobs_show_says_who(cli, build_switchyard, queue):
    # given two scheduled jobs, one sent with an idempotency key
    sy = build_switchyard()
    sy.declare([actors.ping])
    later = enqueue(sy, "ping", {"echo": "later"}, delay=60_000)
    keyed = enqueue(sy, "ping", {"echo": "keyed"}, key="nightly-17", delay=60_000,
                    on_duplicate="existing")  # the key reserved as it is sent
    # when the CLI cancels one by id and the other by its key
    by_id = cli("jobs", "cancel", later.message_id, "--reason", "sent twice")
    by_key = cli("jobs", "cancel", "--key", "ping:nightly-17")
    # then each says it is cancelled, and `jobs show` says who and why
    assert (by_id.returncode, by_id.stdout.strip()) == (0, f"{later.message_id} cancelled")
    assert (by_key.returncode, by_key.stdout.strip()) == (0, f"{keyed.message_id} cancelled")
    shown = json.loads(cli("jobs", "show", later.message_id).stdout)
    assert shown["status"] == "cancelled" and shown["cancel_reason"] == "sent twice"
    assert shown["cancelled_by"].startswith("cli:")
    # and what cannot be cancelled ends in one line and exit 1 (2 for a usage mistake)
    again = cli("jobs", "cancel", later.message_id)
    assert again.returncode == 1
    assert again.stderr.strip() == (f"switchyard: job {later.message_id} has already "
                                    "finished (cancelled)")
    assert cli("jobs", "cancel", "no-such-job").returncode == 1
    assert cli("jobs", "cancel", "--key", "ping:never-sent").returncode == 1
    assert cli("jobs", "cancel").returncode == 2
    assert cli("jobs", "cancel", "x", "--key", "ping:k").returncode == 2


def test_jobs_list_shows_a_queues_waiting_jobs_in_order(cli, build_switchyard):
    from state.history import STATES
    from switchyard.cli import JOB_STATES

    assert JOB_STATES == STATES
    # given three pings waiting, no worker running
    sy = build_switchyard()
    sy.declare([actors.ping])
    sent = [enqueue(sy, "ping", {"echo": str(n)}).message_id for n in range(3)]
    # then `jobs list` shows them in order with their positions, a page at a time
    shown = cli("jobs", "list", "default", "--limit", "2")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:2] == [f"#1  {sent[0]}  ping  queued", f"#2  {sent[1]}  ping  queued"]
    assert lines[2] == "... 3 in all; more with --offset 2"
    page = json.loads(cli("jobs", "list", "default", "--offset", "2", "--json").stdout)
    assert [job["id"] for job in page["jobs"]] == [sent[2]] and page["next_offset"] is None
    assert cli("jobs", "list", "default", "--state", "done").stdout.strip() == (
        "no done jobs in default")
    # and a mistake is one line
    assert cli("jobs", "list", "no-such-queue").returncode == 1
    assert cli("jobs", "list", "default", "--state", "lost").returncode == 2

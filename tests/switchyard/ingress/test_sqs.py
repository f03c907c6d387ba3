"""`switchyard sqs`, end to end: seed 001's producer writes bot operations to an SQS FIFO
queue (moto's server), a `switchyard sqs` process enqueues them, the shared `world`'s
worker runs them against the Telegram fake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

import actors
from store import subscriptions
from store.models import User
from switchyard import boot as runtime
from switchyard.base.keys import JobKey
from switchyard.ingress import sqs as sqs_ingress
from tests.actors.conftest import World, unique, world  # noqa: F401  (the shared world)
from tests.fakes.base import html_error
from tests.support.processes import ROOT, stop
from tests.support.services import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.parametrize("world", ["sqlite"], indirect=True)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def sqs(sqs_endpoint: str) -> Any:
    return boto3.session.Session().client("sqs", endpoint_url=sqs_endpoint,
                                          region_name="us-east-1", aws_access_key_id="test",
                                          aws_secret_access_key="test")


@pytest.fixture(scope="module")
def queue_url(sqs: Any) -> Iterator[str]:
    """Seed 001's FIFO queue, with a short visibility timeout for redelivery tests."""
    name = f"bot-operations-{uuid.uuid4().hex[:8]}.fifo"
    url = str(sqs.create_queue(QueueName=name, Attributes={
        "FifoQueue": "true", "VisibilityTimeout": "2"})["QueueUrl"])
    yield url
    sqs.delete_queue(QueueUrl=url)


@pytest.fixture(scope="module")
def consumer_log(world: World, sqs_endpoint: str, queue_url: str,  # noqa: F811
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One `switchyard sqs` process; its log, to read."""
    s = world.sy.settings
    assert s.redis_url is not None
    log = tmp_path_factory.mktemp("sqs") / "stderr.log"
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT), "SWITCHYARD_ENV": "test",
           "REDIS_URL": s.redis_url.get_secret_value(), "KEY_PREFIX": s.key_prefix,
           "BROKER_NAMESPACE": s.broker_namespace, "DATABASE_URL": s.db_url,
           "VAR_DIR": str(s.var_dir), "FLUSH_INTERVAL_MS": "20",
           "BOT_OPERATIONS_QUEUE_URL": queue_url, "SQS_ENDPOINT": sqs_endpoint,
           "SQS_WAIT_MS": "1000"}
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "switchyard.cli", "sqs"], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield log
    finally:
        assert stop([proc], grace=30) == [], "`switchyard sqs` did not stop on SIGTERM"
    assert proc.returncode == 0


def verify_body(chat_id: int, listing_id: str) -> str:
    """Seed 001's VerifyPermissionsOperation, as its producer serializes it."""
    return json.dumps({"operationType": "VERIFY_PERMISSIONS", "channelId": str(chat_id),
                       "listingId": listing_id, "timestamp": "2026-01-01T00:00:00.000Z",
                       "attemptCount": 0, "maxRetries": 3})


def send(sqs: Any, url: str, body: str, dedup: str) -> None:
    sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="VERIFY_PERMISSIONS",
                     MessageDeduplicationId=dedup)


def new_channel(world: World) -> int:  # noqa: F811
    chat_id = -1_000_000_000_000 - int(time.time_ns() % 10**9)
    world.telegram.add_chat(chat_id, f"Paid {chat_id}", can_invite_users=True,
                            can_restrict_members=True)
    return chat_id


def verified(world: World, listing_id: str) -> bool:  # noqa: F811
    with world.db.session() as session:
        listing = subscriptions.listing(session, listing_id)
        return listing is not None and bool(listing.bot_verified)


def in_queue(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def asked(world: World, chat_id: int) -> int:  # noqa: F811
    return sum(1 for r in world.telegram.requests
               if r.path.endswith("/getChatMember") and str(chat_id) in r.body.decode())


def test_a_seed_operation_runs_and_is_deleted(world: World, sqs: Any,  # noqa: F811
                                              queue_url: str, consumer_log: Path) -> None:
    chat_id, listing_id = new_channel(world), unique("listing")
    send(sqs, queue_url, verify_body(chat_id, listing_id), f"verify-{chat_id}-1")
    wait_for(lambda: verified(world, listing_id), timeout=30, what="the listing verified")
    wait_for(lambda: in_queue(sqs, queue_url) == 0, timeout=30, what="the message deleted")


def test_a_malformed_message_is_left_for_redrive_with_its_reason(
    world: World, sqs: Any, queue_url: str, consumer_log: Path,  # noqa: F811
) -> None:
    send(sqs, queue_url, json.dumps({"operationType": "BAN_EVERYONE"}), unique("bad-"))
    wait_for(lambda: "left for redrive" in consumer_log.read_text(), timeout=30,
             what="the log line")
    assert "unknown or missing operationType" in consumer_log.read_text()
    assert in_queue(sqs, queue_url) == 1  # not deleted: SQS's redrive decides
    sqs.purge_queue(QueueUrl=queue_url)


def test_a_message_received_again_runs_once(world: World, sqs: Any,  # noqa: F811
                                            queue_url: str, consumer_log: Path) -> None:
    # given an operation a consumer enqueued, then died before deleting it (handled here
    # as that consumer did: receiving it here would race the running consumer for it)
    chat_id, listing_id = new_channel(world), unique("listing")
    body, dedup = verify_body(chat_id, listing_id), f"verify-{chat_id}-2"
    app = runtime.build(world.sy.settings, actors.families())
    try:
        assert sqs_ingress.handle(app, {"MessageId": unique("m-"), "Body": body,
                                        "Attributes": {"MessageDeduplicationId": dedup}})
        app.state.buffer.flush()
    finally:
        app.close()
    # when the message is received again and the running consumer takes it
    send(sqs, queue_url, body, dedup)
    wait_for(lambda: in_queue(sqs, queue_url) == 0, timeout=30, what="the message deleted")
    # then the operation ran once
    wait_for(lambda: verified(world, listing_id), timeout=30, what="the listing verified")
    counts = world.sy.queues.counts
    wait_for(lambda: counts("bot-operations").depth + counts("bot-operations").active == 0,
             timeout=30, what="the bot-operations queue to empty")
    assert asked(world, chat_id) == 1


def job_made(world: World, actor: str, dedup: str) -> dict[str, Any]:  # noqa: F811
    """The finished job the consumer made of the message with deduplication id `dedup`."""
    message_id = wait_for(lambda: world.sy.state.keys.holder(JobKey(actor, dedup)),
                          timeout=30, what=f"the {actor} job of {dedup}")
    return world.finished(message_id)


def test_a_message_allowing_one_retry_is_dead_lettered_after_two_attempts(
    world: World, sqs: Any, queue_url: str, consumer_log: Path,  # noqa: F811
) -> None:
    # given a Bot API that fails twice, and an operation whose producer allows one retry
    chat_id, listing_id = new_channel(world), unique("listing")
    world.telegram.script(html_error(503, "Service Unavailable"), path="getChatMember",
                          times=2)
    operation = {**json.loads(verify_body(chat_id, listing_id)), "maxRetries": 1}
    dedup = f"verify-{chat_id}-retries"
    # when it comes through SQS
    send(sqs, queue_url, json.dumps(operation), dedup)
    # then the job ran twice (the bot actors alone would retry five times) and is dead
    job = job_made(world, "verify_permissions", dedup)
    assert job["status"] == "failed" and job["runs"] == 2
    assert world.sy.state.dead_letters.show(job["id"]) is not None
    assert asked(world, chat_id) == 2 and not verified(world, listing_id)


def new_user(world: World) -> str:  # noqa: F811
    """A user of ours with a linked Telegram account who started the bot."""
    user_id, telegram_id = unique("u"), int(time.time_ns() % 10**9) + 10_000
    world.telegram.add_user(telegram_id, "Ann", started=True)
    with world.db.session() as session:
        session.add(User(id=user_id, telegram_user_id=telegram_id, name="Ann"))
    return user_id


def calls(world: World, method: str, chat_id: int) -> list[int]:  # noqa: F811
    """Where the Bot API calls of `method` about `chat_id` are among all requests."""
    return [n for n, r in enumerate(list(world.telegram.requests))
            if r.path.endswith(f"/{method}") and r.json().get("chat_id") == chat_id]


def test_an_invite_then_a_removal_in_one_group_apply_in_that_order(
    world: World, sqs: Any, queue_url: str, consumer_log: Path,  # noqa: F811
) -> None:
    # given an invite then a removal of one subscription in one FIFO message group, sent
    # together so that one receive may return both
    chat_id, user_id, subscription_id = new_channel(world), new_user(world), unique("sub")
    fields = {"userId": user_id, "channelId": str(chat_id), "subscriptionId": subscription_id,
              "timestamp": "2026-01-01T00:00:00.000Z", "attemptCount": 0, "maxRetries": 3}
    operations = ({"operationType": "INVITE_USER", **fields, "orderId": unique("order")},
                  {"operationType": "REMOVE_USER", **fields, "reason": "expiry"})
    answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=[
        {"Id": str(n), "MessageBody": json.dumps(operation), "MessageGroupId": subscription_id,
         "MessageDeduplicationId": f"{subscription_id}-{n}"}
        for n, operation in enumerate(operations)])
    assert len(answer["Successful"]) == 2
    # when the consumer enqueues them and the worker runs them
    invited = job_made(world, "invite_user", f"{subscription_id}-0")
    removed = job_made(world, "remove_user", f"{subscription_id}-1")
    # then the invite ran first (its link made, not skipped as superseded), then the removal
    assert invited["status"] == "done" and invited["result"]["inviteCreated"] is True
    assert removed["status"] == "done"
    [link] = calls(world, "createChatInviteLink", chat_id)
    bans = calls(world, "banChatMember", chat_id)
    assert bans and link < bans[0]
    wait_for(lambda: in_queue(sqs, queue_url) == 0, timeout=30, what="both deleted")

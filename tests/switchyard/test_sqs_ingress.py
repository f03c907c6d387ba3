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
from switchyard import app as runtime
from switchyard import sqs_ingress
from tests.actors.conftest import World, unique, world  # noqa: F401  (the shared world)
from tests.support.processes import ROOT
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
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield log
        proc.terminate()
        assert proc.wait(30) == 0


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
    # given an operation a consumer enqueued, then died before deleting it
    chat_id, listing_id = new_channel(world), unique("listing")
    send(sqs, queue_url, verify_body(chat_id, listing_id), f"verify-{chat_id}-2")
    app = runtime.build(world.sy.settings, actors.FAMILIES)
    try:
        [message] = sqs.receive_message(QueueUrl=queue_url, AttributeNames=["All"],
                                        WaitTimeSeconds=5)["Messages"]
        assert sqs_ingress.handle(app, message)
        app.state.buffer.flush()
    finally:
        app.close()
    # when it becomes visible again and the running consumer takes it
    wait_for(lambda: in_queue(sqs, queue_url) == 0, timeout=30, what="the message deleted")
    # then the operation ran once
    wait_for(lambda: verified(world, listing_id), timeout=30, what="the listing verified")
    counts = world.sy.queues.counts
    wait_for(lambda: counts("bot-operations").depth + counts("bot-operations").active == 0,
             timeout=30, what="the bot-operations queue to empty")
    assert asked(world, chat_id) == 1

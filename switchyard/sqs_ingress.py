"""`switchyard sqs`: seed 001's bot operations, from its SQS FIFO queue, become jobs.

It long-polls BOT_OPERATIONS_QUEUE_URL (SQS_ENDPOINT for any SQS-compatible server) and
enqueues each operation through the one way in: `operationType` INVITE_USER,
REMOVE_USER or VERIFY_PERMISSIONS to `invite_user`, `remove_user` or
`verify_permissions`, the seed's bookkeeping fields (`timestamp`, `attemptCount`,
`maxRetries`) dropped, its numeric `userId` read as text. The FIFO deduplication id is
the job's idempotency key, with the duplicate rule `existing`: a message received
again (a consumer that died before deleting it) finds the job it already made.

A message is deleted only after its job is enqueued. One that cannot become a job
(not JSON, an unknown operation, an invalid payload) is left alone with a log line
naming the reason, so SQS's redrive policy moves it to the queue's DLQ after its
maxReceiveCount. While Redis is away nothing is deleted; the poll waits and retries.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import boto3
import dramatiq
import redis
from botocore.exceptions import BotoCoreError, ClientError

from switchyard.enqueue import enqueue
from switchyard.errors import PermanentError

if TYPE_CHECKING:
    from switchyard.app import App
    from switchyard.settings import Settings

logger = logging.getLogger("switchyard.sqs")

#: Seed 001's operation types -> actors.
OPERATIONS = {"INVITE_USER": "invite_user", "REMOVE_USER": "remove_user",
              "VERIFY_PERMISSIONS": "verify_permissions"}
#: The seed's own retry bookkeeping: Switchyard's retry policy replaces it.
BOOKKEEPING = frozenset({"operationType", "timestamp", "attemptCount", "maxRetries"})
#: Most messages one receive returns (SQS's limit).
BATCH = 10
#: Longest wait between polls while Redis or the broker is away (ms).
DEFAULT_MAX_BACKOFF_MS = 10_000


class Malformed(Exception):
    """The message cannot become a job; its text is the reason (never the body)."""


def client(settings: Settings) -> Any:
    return boto3.session.Session().client("sqs", region_name=settings.aws_region,
                                          endpoint_url=settings.sqs_endpoint)


def job_of(body: str) -> tuple[str, dict[str, Any]]:
    """The actor and payload of a seed 001 body, or `Malformed`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise Malformed("the body is not JSON") from None
    if not isinstance(data, dict):
        raise Malformed("the body is JSON but not an object")
    operation = data.get("operationType", data.get("operation"))
    actor = OPERATIONS.get(operation) if isinstance(operation, str) else None
    if actor is None:
        raise Malformed("unknown or missing operationType")
    payload = {k: v for k, v in data.items() if k not in BOOKKEEPING}
    payload["operation"] = operation
    if isinstance(payload.get("userId"), int):
        payload["userId"] = str(payload["userId"])
    return actor, payload


def handle(app: App, message: dict[str, Any]) -> bool:
    """Enqueue one received message's job; False when it is malformed (left to SQS)."""
    key = message.get("Attributes", {}).get("MessageDeduplicationId") or message["MessageId"]
    try:
        actor, payload = job_of(message["Body"])
        enqueue(app, actor, payload, key=key, on_duplicate="existing", flush=False)
    except (Malformed, PermanentError) as error:
        reason = error.message if isinstance(error, PermanentError) else str(error)
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        logger.warning("SQS message %s left for redrive (received %s times): %s",
                       message["MessageId"], receives, reason)
        return False
    return True


def poll_once(app: App, sqs: Any, url: str, wait_ms: int) -> int:
    """Receive a batch, enqueue each, delete the enqueued ones; how many were.

    Redis or the broker not answering stops the batch: what was enqueued is deleted,
    the rest comes back after its visibility timeout; the error is raised.
    """
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=BATCH,
                                 WaitTimeSeconds=wait_ms // 1000, AttributeNames=["All"])
    done: list[dict[str, Any]] = []
    try:
        for message in answer.get("Messages", []):
            if handle(app, message):
                done.append(message)
    finally:
        if done:
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)])
            try:
                app.state.buffer.flush()
            except redis.RedisError:
                logger.warning("History records kept for the next flush")
    return len(done)


class Consumer:
    """The polling loop; `stop()` is safe from a signal handler (it ends after the poll)."""

    def __init__(self, app: App, url: str) -> None:
        self.app, self.url = app, url
        self.sqs = client(app.settings)
        self.stopping = False

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self, ready: Any = None) -> None:
        wait_ms = backoff_ms = 100
        if ready is not None:
            ready()
        while not self.stopping:
            try:
                poll_once(self.app, self.sqs, self.url, self.app.settings.sqs_wait_ms)
                backoff_ms = wait_ms
            except (redis.RedisError, dramatiq.errors.BrokerError, BotoCoreError,
                    ClientError) as error:
                logger.warning("Redis, the broker or SQS is not answering (%s); retrying "
                               "in %d ms", type(error).__name__, backoff_ms)
                time.sleep(backoff_ms / 1000)
                backoff_ms = min(DEFAULT_MAX_BACKOFF_MS, backoff_ms * 2)

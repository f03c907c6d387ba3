"""`switchyard sqs`: seed 001's bot operations, from its SQS FIFO queue, become jobs.

It long-polls BOT_OPERATIONS_QUEUE_URL (SQS_ENDPOINT for any SQS-compatible server) and
enqueues each operation through the one way in: `operationType` INVITE_USER,
REMOVE_USER or VERIFY_PERMISSIONS to `invite_user`, `remove_user` or
`verify_permissions`, its numeric `userId` read as text. The seed's `maxRetries` (less
the `attemptCount` already spent; the body's, else the message attribute's) becomes the
job's `max_retries`, so the job is dead-lettered after that many retries; without it,
the actor's own limit applies. The FIFO deduplication id is the job's idempotency key,
with the duplicate rule `existing`: a message received again (a consumer that died
before deleting it) finds the job it already made.

Order: the messages of one receive are enqueued one at a time, in the order SQS gave
them, which keeps each FIFO message group's order; no message is enqueued before the
ones ahead of it are. The bot actors keep that order when they run (their ordered group,
`group_key`, per subscription).

A message is deleted only after its job is enqueued, and stays invisible to other
consumers until then: while Redis or the broker is away, the consumer waits with
backoff and tries the same message again, and a `Keeper` thread extends the visibility
of every message in hand (ChangeMessageVisibility) each third of the visibility
timeout, however long the enqueue takes. On SIGTERM the messages not enqueued yet are
made visible again at once, in order, for the next consumer. One that cannot become a
job (not JSON, an unknown operation, an invalid payload) is let go with a log line
naming the reason, so SQS's redrive policy moves it to the queue's DLQ after its
maxReceiveCount.

With tracing on, each message is handled in an `sqs receive` span that continues the
trace its producer put in a `traceparent` message attribute (W3C Trace Context).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import dramatiq
import redis
from botocore.exceptions import BotoCoreError, ClientError

from switchyard.base import tracecontext
from switchyard.base.decoding import BadJson, parse_json
from switchyard.base.errors import PermanentError
from switchyard.runtime.enqueue import enqueue

if TYPE_CHECKING:
    from switchyard.base.settings import Settings
    from switchyard.runtime.app import App

logger = logging.getLogger("switchyard.sqs")

#: Seed 001's operation types -> actors.
OPERATIONS = {"INVITE_USER": "invite_user", "REMOVE_USER": "remove_user",
              "VERIFY_PERMISSIONS": "verify_permissions"}
#: The seed's bookkeeping: read here (`retries_of`), never part of the job's payload.
BOOKKEEPING = frozenset({"operationType", "timestamp", "attemptCount", "maxRetries"})
#: The most retries a message may ask for (Dramatiq's default limit); more is cut to it.
MAX_RETRIES = 20
#: Most messages one receive returns (SQS's limit, and ChangeMessageVisibilityBatch's).
BATCH = 10
#: The visibility timeout (s) when the queue's own cannot be read (SQS's default).
DEFAULT_VISIBILITY_S = 30
#: First and longest wait between tries while Redis, the broker or SQS is away (ms).
DEFAULT_MIN_BACKOFF_MS = 100
DEFAULT_MAX_BACKOFF_MS = 10_000
#: Failures that mean Redis or the job broker did not answer: the message is tried again.
UNAVAILABLE: tuple[type[BaseException], ...] = (redis.RedisError, dramatiq.errors.BrokerError)
#: What SQS's client raises when SQS does not answer or refuses a call.
SQS_ERRORS: tuple[type[BaseException], ...] = (BotoCoreError, ClientError)


class Malformed(Exception):
    """The message cannot become a job; its text is the reason (never the body)."""


@dataclass(frozen=True)
class Operation:
    """A seed 001 message as a job: its actor, payload and message options."""

    actor: str
    payload: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


def client(settings: Settings) -> Any:
    return boto3.session.Session().client("sqs", region_name=settings.aws_region,
                                          endpoint_url=settings.sqs_endpoint)


def job_of(body: str, attributes: dict[str, Any] | None = None) -> Operation:
    """The job of a seed 001 message (its body and message attributes), or `Malformed`."""
    try:
        data = parse_json(body)
    except BadJson as error:
        raise Malformed(f"the body is {error}") from None
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
    retries = retries_of(data, attributes or {})
    return Operation(actor, payload, {} if retries is None else {"max_retries": retries})


def retries_of(data: dict[str, Any], attributes: dict[str, Any]) -> int | None:
    """The retries the producer allows: `maxRetries` less the `attemptCount` it already
    spent (the seed's consumer re-sent a failed operation with the count raised), up to
    MAX_RETRIES; None when it says nothing."""
    allowed = _whole(_field(data, attributes, "maxRetries"), "maxRetries")
    if allowed is None:
        return None
    spent = _whole(_field(data, attributes, "attemptCount"), "attemptCount") or 0
    return min(MAX_RETRIES, max(0, allowed - spent))


def _field(data: dict[str, Any], attributes: dict[str, Any], name: str) -> Any:
    """`name` from the body, else from the message attributes (a `StringValue`)."""
    if name in data:
        return data[name]
    attribute = attributes.get(name)
    return attribute.get("StringValue") if isinstance(attribute, dict) else None


def _whole(value: Any, name: str) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise Malformed(f"{name} is not a whole number of 0 or more")


def handle(app: App, message: dict[str, Any]) -> bool:
    """Enqueue one received message's job; False when it is malformed (left to SQS).

    Raises what Redis or the broker raised when they did not answer (`UNAVAILABLE`)."""
    key = message.get("Attributes", {}).get("MessageDeduplicationId") or message["MessageId"]
    try:
        job = job_of(message["Body"], message.get("MessageAttributes"))
        enqueue(app, job.actor, job.payload, key=key, on_duplicate="existing", flush=False,
                options=job.options)
    except (Malformed, PermanentError) as error:
        reason = error.message if isinstance(error, PermanentError) else str(error)
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        logger.warning("SQS message %s left for redrive (received %s times): %s",
                       message["MessageId"], receives, reason)
        return False
    return True


def traced(message: dict[str, Any]) -> tracecontext.Span:
    """The span of handling one message, continuing the trace its producer put in its
    `traceparent` message attribute (W3C Trace Context), if any."""
    if not tracecontext.active():
        return tracecontext.OFF
    attributes = message.get("MessageAttributes") or {}
    carrier = {name: value.get("StringValue") for name, value in attributes.items()
               if isinstance(value, dict)}
    return tracecontext.span("sqs receive", kind="consumer", parent=carrier, attributes={
        "messaging.system": "aws_sqs", "messaging.message.id": message.get("MessageId")})


def visibility_of(sqs: Any, url: str) -> int:
    """The queue's visibility timeout (s), or SQS's default when it cannot be read."""
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
        return int(attributes["Attributes"]["VisibilityTimeout"])
    except (BotoCoreError, ClientError, KeyError, ValueError) as error:
        logger.warning("Could not read the queue's visibility timeout (%s); using %d s",
                       type(error).__name__, DEFAULT_VISIBILITY_S)
        return DEFAULT_VISIBILITY_S


def batches(items: list[Any]) -> Iterable[list[Any]]:
    return (items[n:n + BATCH] for n in range(0, len(items), BATCH))


class Keeper:
    """Keeps the messages in hand invisible to other consumers: each third of the
    visibility timeout it extends theirs, until each is deleted, given back or let go."""

    def __init__(self, sqs: Any, url: str, visibility_s: int) -> None:
        self.sqs, self.url, self.visibility_s = sqs, url, visibility_s
        self.held: dict[str, str] = {}  # message id -> receipt handle
        self.lock = threading.Lock()  # the consumer's thread and the keeper's
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self.run, name="switchyard-sqs-keeper", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()

    def hold(self, messages: Iterable[dict[str, Any]]) -> None:
        with self.lock:
            self.held.update((m["MessageId"], m["ReceiptHandle"]) for m in messages)

    def let_go(self, messages: Iterable[dict[str, Any]]) -> None:
        """Stop extending them: deleted, or left to come back when their time is up."""
        with self.lock:
            for message in messages:
                self.held.pop(message["MessageId"], None)

    def give_back(self, messages: list[dict[str, Any]]) -> None:
        """Make them visible again now (the consumer stops before enqueueing them)."""
        self.let_go(messages)
        self.change(messages, 0)

    def run(self) -> None:
        while not self.stopped.wait(max(0.2, self.visibility_s / 3)):
            with self.lock:
                held = [{"MessageId": i, "ReceiptHandle": h} for i, h in self.held.items()]
            self.change(held, self.visibility_s)

    def change(self, messages: list[dict[str, Any]], visibility_s: int) -> None:
        for some in batches(messages):
            try:
                answer = self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"],
                     "VisibilityTimeout": visibility_s} for n, m in enumerate(some)])
            except SQS_ERRORS as error:
                logger.warning("Could not change the visibility of %d SQS message(s): %s",
                               len(some), type(error).__name__)
                continue
            for failed in answer.get("Failed", []):  # deleted meanwhile, or past 12 h
                logger.warning("Could not change the visibility of SQS message %s: %s",
                               some[int(failed["Id"])]["MessageId"], failed.get("Code"))


class Consumer:
    """The polling loop; `stop()` is safe from a signal handler (it ends after the poll)."""

    def __init__(self, app: App, url: str) -> None:
        self.app, self.url = app, url
        self.sqs = client(app.settings)
        self.stopping = False
        self.backoff_ms = DEFAULT_MIN_BACKOFF_MS

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self, ready: Any = None) -> None:
        keeper = Keeper(self.sqs, self.url, visibility_of(self.sqs, self.url))
        keeper.start()
        if ready is not None:
            ready()
        try:
            while not self.stopping:
                try:
                    self.poll(keeper)
                except SQS_ERRORS as error:
                    self.wait(f"SQS is not answering ({type(error).__name__})")
        finally:
            keeper.stop()

    def poll(self, keeper: Keeper) -> None:
        """Receive a batch and enqueue its messages in order, each once Redis and the
        broker take it; delete the enqueued ones (module docstring)."""
        answer = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=BATCH, VisibilityTimeout=keeper.visibility_s,
            WaitTimeSeconds=self.app.settings.sqs_wait_ms // 1000, AttributeNames=["All"],
            MessageAttributeNames=["All"])
        left: list[dict[str, Any]] = answer.get("Messages", [])
        keeper.hold(left)
        self.backoff_ms = DEFAULT_MIN_BACKOFF_MS
        done: list[dict[str, Any]] = []
        try:
            while left and not self.stopping:
                try:
                    with traced(left[0]):
                        enqueued = handle(self.app, left[0])
                except UNAVAILABLE as error:
                    self.settle(done, keeper)  # deleted before a wait of unknown length
                    self.wait(f"Redis or the broker is not answering ({type(error).__name__})"
                              f"; SQS message {left[0]['MessageId']} kept in hand")
                    continue
                message = left.pop(0)
                if enqueued:
                    done.append(message)
                else:
                    keeper.let_go([message])
        finally:
            keeper.give_back(left)  # stopping: the next consumer takes them, in order
            self.settle(done, keeper)

    def settle(self, done: list[dict[str, Any]], keeper: Keeper) -> None:
        """Delete the messages whose jobs are enqueued, and flush their history records.

        If SQS refuses the delete, they come back and find their jobs (by the key)."""
        try:
            for some in batches(done):
                self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(some)])
        finally:
            keeper.let_go(done)
            done.clear()
        try:
            self.app.state.buffer.flush(everything=False)
        except redis.RedisError:
            logger.warning("History records kept for the next flush")

    def wait(self, why: str) -> None:
        """Wait with backoff before the next try, waking up on `stop()`."""
        logger.warning("%s; retrying in %d ms", why, self.backoff_ms)
        deadline = time.monotonic() + self.backoff_ms / 1000
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        self.backoff_ms = min(DEFAULT_MAX_BACKOFF_MS, self.backoff_ms * 2)

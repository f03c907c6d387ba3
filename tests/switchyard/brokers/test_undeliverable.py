"""What cannot run reaches Switchyard's dead letters at once, with its reason, on both
brokers: an unknown actor, an undecodable body, positional arguments for a payload; and
one poison message never strands the good ones fetched with it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import dramatiq
import pika
import pytest
from pydantic import BaseModel

from switchyard.base import decoding
from switchyard.base.sealing import message_purpose
from switchyard.runtime.app import App
from switchyard.runtime.jobs import Context, job
from tests.support.jobs import finished, send
from tests.support.services import RABBITMQ_URL
from tests.support.waiting import wait_for

SECRET = "ann@example.com +15550001111 tok_0123456789abcdef"
#: Bodies that are not Dramatiq messages, each with a secret inside.
POISON = {
    "not json": f"hello {SECRET}".encode(),
    "invalid utf-8": b"\xff\xfe" + SECRET.encode(),
    "json, not a message": json.dumps({"email": SECRET}).encode(),
    "deep nesting": b"[" * 20_000 + SECRET.encode() + b"]" * 20_000,
}


def publish_raw(sy: App, queue: str, body: bytes) -> None:
    """Put `body` on `queue` as another producer would, bypassing Dramatiq."""
    if sy.settings.uses_rabbitmq:
        broker: Any = sy.broker
        broker.declare_queue(queue, ensure=True)  # or RabbitMQ drops it: unroutable
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        connection.channel().basic_publish("", queue, body)
        connection.close()
        return
    broker = sy.broker
    broker.declare_queue(queue)
    redis_id = str(uuid.uuid4())
    broker.client.hset(f"{broker.namespace}:{queue}.msgs", redis_id, body)
    broker.client.rpush(f"{broker.namespace}:{queue}", redis_id)


def sealed(sy: App, queue: str, content: bytes) -> bytes:
    """A body whose seal verifies with the process's keys, holding `content` inside."""
    envelope = {"queue_name": queue, "actor_name": "note", "options": {},
                "message_id": str(uuid.uuid4()), "message_timestamp": int(time.time() * 1000)}
    keyring = sy.state.sealer.keyring
    assert keyring is not None
    return json.dumps({**envelope, "sealed": keyring.seal(content, message_purpose(envelope))
                       }).encode()


#: What a verified seal can hold that is not a message's arguments, and the reason given.
SEALED_POISON = {
    "deep nesting": (b'{"args": [], "kwargs": {"x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}",
                     "nested too deeply"),
    "not utf-8": (b"\xff\xfe" + SECRET.encode(), "not JSON"),
    "not an object": (json.dumps([SECRET]).encode(), "not a message's arguments"),
    "arguments of the wrong type": (json.dumps({"args": {}, "kwargs": [SECRET]}).encode(),
                                    "not a message's arguments"),
    "options not an object": (json.dumps({"args": [], "kwargs": {}, "options": [SECRET]}
                                         ).encode(), "not a message's arguments"),
}


def dead_letters(sy: App, queue: str, n: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        letters = sy.state.dead_letters.list(queue)
        return letters if len(letters) >= n else None

    return wait_for(found, timeout=20, what=f"{n} dead letter(s)")


@pytest.mark.parametrize("kind", sorted(POISON))
def test_an_undecodable_body_is_dead_lettered_with_its_reason(
    build_switchyard: Any, start_worker: Any, queue: str, kind: str, caplog: Any
) -> None:
    sy = build_switchyard()
    start_worker(sy)
    publish_raw(sy, queue, POISON[kind])
    (dead,) = dead_letters(sy, queue, 1)
    assert dead["reason"]["error"] == "Undecodable" and dead["reason"]["code"] == "undecodable"
    assert dead["reason"]["attempts"] == 1  # at once, no retries
    assert SECRET not in dead["reason"]["message"] and SECRET not in caplog.text
    assert sy.queues.counts(queue).waiting == 0


@pytest.mark.parametrize("kind", sorted(SEALED_POISON))
def test_a_verified_seal_that_holds_no_arguments_is_dead_lettered_with_its_reason(
    build_switchyard: Any, start_worker: Any, queue: str, kind: str, caplog: Any
) -> None:
    # given a sealed body whose seal verifies but whose content cannot be a message's
    sy = build_switchyard()
    start_worker(sy)
    content, reason = SEALED_POISON[kind]
    publish_raw(sy, queue, sealed(sy, queue, content))

    # then it is a dead letter at once, with the reason, and nothing is left unacked
    (dead,) = dead_letters(sy, queue, 1)
    assert dead["reason"]["error"] == "Undecodable" and reason in dead["reason"]["message"]
    assert dead["reason"]["attempts"] == 1 and SECRET not in dead["reason"]["message"]
    assert "Consumer encountered an unexpected error" not in caplog.text
    wait_for(lambda: sy.queues.counts(queue) == type(sy.queues.counts(queue))(),
             what="nothing left waiting or unacked")


@pytest.mark.parametrize("broker_kind", ["redis"])  # only Redis tells the oldest waiting
def test_a_body_that_is_not_a_message_waiting_at_a_queues_head_breaks_no_view(
    build_switchyard: Any, queue: str
) -> None:
    # given poison bodies waiting, no worker yet to take them
    sy = build_switchyard()
    for body in POISON.values():
        publish_raw(sy, queue, body)

    # then the queue views answer, without a time for them
    assert sy.queues.oldest_waiting_ms(queue) is None
    (row,) = [row for row in sy.queues.snapshot() if row["name"] == queue]
    assert row["waiting"] == len(POISON)


@pytest.mark.parametrize(("error", "reason"), [
    (MemoryError(), "the body is too large to parse (8 bytes)"),
    (TypeError("unexpected"), "the body cannot be decoded (TypeError)"),
])
def test_whatever_a_decoder_raises_becomes_a_stand_in(
    monkeypatch: Any, error: Exception, reason: str
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(decoding.json, "loads", fail)
    fields = decoding.SafeEncoder().decode(b'{"a": 1}')
    assert fields["actor_name"] == decoding.UNDECODABLE
    assert fields["kwargs"] == {"reason": reason}


def test_an_unknown_actor_is_dead_lettered_at_once(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    sy = build_switchyard()
    start_worker(sy)
    message = send(sy, queue, "no_such_actor", email="ann@example.com")
    wait_for(lambda: finished(sy, message.message_id), what="the job to fail")
    (dead,) = dead_letters(sy, queue, 1)
    assert (dead["message_id"], dead["reason"]["error"]) == (message.message_id, "UnknownJob")
    assert "no_such_actor" in dead["reason"]["message"] and dead["reason"]["attempts"] == 1
    assert sy.state.history.get(message.message_id)["status"] == "failed"


class Note(BaseModel):
    text: str


def test_positional_arguments_for_a_payload_are_dead_lettered_at_once(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    sy = build_switchyard()
    runs: list[Note] = []

    @job(Note, actor_name=f"note_{queue}", queue_name=queue, max_retries=3, min_backoff=10_000)
    def note(ctx: Context, payload: Note) -> None:
        runs.append(payload)

    sy.declare([note])
    start_worker(sy)
    message = sy.broker.enqueue(dramatiq.Message(
        queue_name=queue, actor_name=f"note_{queue}", args=("hello",), kwargs={}, options={}))
    wait_for(lambda: finished(sy, message.message_id), what="the job to fail")
    (dead,) = dead_letters(sy, queue, 1)
    assert dead["reason"]["error"] == "InvalidPayload" and dead["reason"]["attempts"] == 1
    assert "positional" in dead["reason"]["message"] and not runs


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_one_poison_message_does_not_strand_its_batch(
    build_switchyard: Any, start_worker: Any, queue: str
) -> None:
    # given 15 messages queued before any worker runs: 5 good, a poison one, 9 good
    sy = build_switchyard()
    ran: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def good(n: int) -> None:
        ran.append(n)

    messages = [good.send(n) for n in range(5)]
    publish_raw(sy, queue, POISON["not json"])
    messages += [good.send(n) for n in range(5, 14)]

    # when one worker fetches them (its prefetch takes the whole batch)
    start_worker(sy, threads=8)

    # then every good job ran once, and the poison one is a dead letter
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="the good jobs")
    assert sorted(ran) == list(range(14))
    assert [d["reason"]["error"] for d in dead_letters(sy, queue, 1)] == ["Undecodable"]
    wait_for(lambda: sy.queues.counts(queue) == type(sy.queues.counts(queue))(),
             what="nothing left waiting or unacked")

"""A canary value in every registered actor's payload (those with a field that can hold
one): after jobs done, retried, delayed and dead-lettered, it is nowhere in Redis (every
key of every type, the broker's included), in the RabbitMQ queues' bodies, in the logs
or in the Sentry events of the run."""

from __future__ import annotations

from typing import Any

import pika
import pytest
import sentry_sdk
from dramatiq.common import dq_name, xq_name

import actors
from integrations import sentry
from switchyard.runtime.enqueue import enqueue
from tests.support.sentry_server import SentryServer
from tests.support.services import RABBITMQ_URL
from tests.support.waiting import wait_for

# Built, so no source line a traceback or Sentry shows can hold it.
C = "cnry" + "7f3a9b"
PHONE = "+1555" + "7391846"
NUMBER = "8062" + "91735"  # for the ids that must be digits
EMAIL = f"{C}@example.com"
PAYLOADS: dict[str, dict[str, Any]] = {
    "ping": {"echo": C},
    "join_channel": {"channelId": C, "username": C},
    "leave_channel": {"channelId": C, "telegramId": -1001234567890},
    "invite_user": {"userId": C, "channelId": -1001234567890, "subscriptionId": C},
    "remove_user": {"userId": C, "channelId": -1001234567890, "subscriptionId": C,
                    "reason": "expiry"},
    "verify_permissions": {"channelId": -1001234567890, "listingId": C},
    "send_otp": {"email": EMAIL, "code": C, "name": C},
    "send_welcome_email": {"email": EMAIL, "name": C},
    "send_verification_link": {"email": EMAIL, "link": f"https://example.com/{C}", "name": C},
    "send_push": {"userId": C, "fcmToken": C, "title": C, "body": C, "data": {"k": C}},
    "send_email_notification": {"userId": C, "email": EMAIL, "title": C, "body": C},
    "send_sms": {"userId": C, "phoneNumber": PHONE, "body": C},
    "send_batch_notifications": {"userIds": [C], "title": C, "body": C},
    "send_batch_push": {"batchKey": C, "userId": C, "deviceId": C, "fcmToken": C,
                        "title": C, "body": C},
    "record_batch_notifications": {"batchId": C, "successCount": 0, "failureCount": 0,
                                   "total": 0, "parentId": C},
    "process_image": {"s3Key": f"uploads/{C}.jpg", "userId": C, "messageId": C,
                      "originalName": f"{C}.jpg"},
    "process_video": {"s3Key": f"uploads/{C}.mp4", "userId": C, "messageId": C + "v",
                      "originalName": f"{C}.mp4"},
    "process_audio": {"s3Key": f"uploads/{C}.ogg", "userId": C, "messageId": C + "a",
                      "originalName": f"{C}.ogg"},
    # Discord's event and interaction ids name Redis keys (state, not payload): plain ids.
    "discord_interaction": {"eventId": "e1", "eventType": "interaction.create",
                            "interactionId": "1001", "interactionToken": C, "userId": NUMBER,
                            "data": {"note": C}},
    "discord_guild_event": {"eventId": "e2", "eventType": "member.join", "guildId": NUMBER,
                            "userId": NUMBER, "data": {"note": C}},
}
#: Payloads that can hold nothing but their type (the cleanup jobs).
NO_FREE_FIELD = {"cleanup_stories", "cleanup_sessions", "cleanup_messages",
                 "cleanup_temp_files", "cleanup_prekeys", "cleanup_orphaned_media",
                 "cleanup_records"}
NEEDLES = (C.encode(), PHONE.encode(), PHONE[1:].encode(), NUMBER.encode())


@pytest.fixture
def sentry_server():
    server = SentryServer()
    yield server
    sentry_sdk.get_client().close()
    sentry_sdk.init()
    server.stop()


def redis_values(client: Any, pattern: str) -> list[bytes]:
    """Every key matching `pattern` and everything in it, whatever its type."""
    found: list[bytes] = []
    for key in client.scan_iter(pattern, count=1000):
        found.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            found.append(client.get(key) or b"")
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                found += [field, value]
        elif kind == "list":
            found += client.lrange(key, 0, -1)
        elif kind == "set":
            found += list(client.smembers(key))
        elif kind == "zset":
            found += client.zrange(key, 0, -1)
        elif kind == "stream":
            found += [repr(entry).encode() for entry in client.xrange(key)]
        else:
            raise AssertionError(f"unexpected Redis type {kind}")
    return found


def rabbitmq_bodies(queues: set[str]) -> list[bytes]:
    """Every body in these queues (and their .DQ and .XQ), read and requeued."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    bodies: list[bytes] = []
    try:
        for queue in queues:
            for name in (queue, dq_name(queue), xq_name(queue)):
                channel = connection.channel()
                while True:
                    method, _, body = channel.basic_get(name)
                    if method is None:
                        break
                    bodies.append(body)
                channel.close()  # unacked: back to the queue
    finally:
        connection.close()
    return bodies


def settled(sy: Any, ids: list[str]) -> dict[str, str] | None:
    """Each job's status once every job is done, failed or waiting for its retry, with
    at least one of each (the bot jobs retry for half a minute: one retry is enough)."""
    statuses = {i: (sy.state.history.get(i) or {}).get("status", "") for i in ids}
    if not set(statuses.values()) <= {"done", "failed", "skipped", "retrying"}:
        return None
    return statuses if {"done", "failed", "retrying"} <= set(statuses.values()) else None


def test_the_canary_is_nowhere_at_rest(build_switchyard, start_worker, broker_kind,
                                       sentry_server, make_settings, caplog):
    # given every family, Sentry on, quick retries, and no database (jobs that need
    # one retry, then are dead-lettered)
    overrides = {"sentry_dsn": sentry_server.dsn, "min_backoff_ms": 50,
                 "max_backoff_ms": 100, "max_retries": 1, "storage_backend": "local"}
    assert sentry.init(make_settings(**overrides))
    sy = build_switchyard(**overrides)
    sy.declare(actors.families())
    assert set(sy.jobs) == set(PAYLOADS) | NO_FREE_FIELD, "a new actor needs a canary"
    worker = start_worker(sy)

    # when each job runs now, and once more delayed for an hour
    now = [enqueue(sy, name, payload).message_id for name, payload in PAYLOADS.items()]
    later = [enqueue(sy, name, payload, delay=3_600_000).message_id
             for name, payload in PAYLOADS.items()]
    statuses = wait_for(lambda: settled(sy, now), timeout=120, what="every outcome")
    worker.stop(timeout=10_000)
    sy.state.buffer.flush()
    sentry_sdk.flush(timeout=5)

    # then the run had every outcome
    assert {"done", "failed", "retrying"} <= set(statuses.values()), statuses
    assert all(sy.state.history.get(i)["status"] == "queued" for i in later)
    assert sy.state.dead_letters.queues()
    # and the canary is in no Redis key or value, no queued body, no log, no Sentry event
    stored = redis_values(sy.state.client, f"{sy.settings.key_prefix}*")
    if broker_kind == "rabbitmq":
        stored += rabbitmq_bodies({job.queue_name for job in sy.jobs.values()})
        assert len(stored) > len(PAYLOADS)
    assert not [value for value in stored if any(n in value for n in NEEDLES)]
    assert not any(n.decode() in caplog.text for n in NEEDLES)
    assert sentry_server.events(), "the dead letters alerted"
    assert not [e for e in sentry_server.envelopes if any(n in e for n in NEEDLES)]

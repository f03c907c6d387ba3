"""`switchyard bridge`, end to end: the seeds' producers publish to a real RabbitMQ (a
vhost of this module's own), a bridge process turns each delivery into a job, and the
shared `world`'s worker runs it against the provider fakes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest
import redis

import actors
from state.dead_letters import summary
from switchyard import boot as runtime
from switchyard.base import settings
from switchyard.base.keys import JobKey
from switchyard.ingress import routes as ingress
from switchyard.ingress.bridge import Delivery, Unavailable, handle_many
from tests.actors.conftest import World, unique, world  # noqa: F401  (the shared world)
from tests.support.processes import ROOT, outlive, stop
from tests.support.services import RABBITMQ_URL, answers, missing
from tests.support.sockets import readable
from tests.support.waiting import wait_for

pytestmark = pytest.mark.parametrize("world", ["sqlite"], indirect=True)

#: Seed 003's bodies, exactly as its documentation shows them.
PUSH = {"type": "push", "userId": "user-uuid", "fcmToken": "firebase-token",
        "title": "New Message", "body": "John: Hey, how are you?",
        "data": {"type": "message", "chatId": "chat-uuid", "senderId": "sender-uuid"}}
EMAIL = {"type": "email", "userId": "user-uuid", "email": "user@example.com",
         "title": "Password Reset", "body": "Click the link below to reset your password",
         "data": {"resetLink": "https://app.supmessenger.com/reset/token123",
                  "expiresIn": "1 hour"}}
SMS = {"type": "sms", "userId": "user-uuid", "phoneNumber": "+1234567890",
       "title": "OTP Code", "body": "Your verification code is: 123456"}


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def own_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of our own (its URL), deleted afterwards."""
    if not answers(RABBITMQ_URL):
        missing("RabbitMQ")
    vhost = f"switchyard-bridge-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield RABBITMQ_URL.rsplit("/", 1)[0] + "/" + vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    with own_vhost() as url:
        yield url


class Bridges:
    """`switchyard bridge` processes pointed at the world and the vhost; `lasting`: the
    module's, which outlive each test."""

    def __init__(self, world: World, amqp_url: str, *, lasting: bool = False) -> None:  # noqa: F811
        s = world.sy.settings
        assert s.redis_url is not None
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "SWITCHYARD_ENV": "test",
                    "REDIS_URL": s.redis_url.get_secret_value(), "KEY_PREFIX": s.key_prefix,
                    "BROKER_NAMESPACE": s.broker_namespace, "DATABASE_URL": s.db_url,
                    "VAR_DIR": str(s.var_dir), "FLUSH_INTERVAL_MS": "20",
                    "AMQP_URL": amqp_url, "BRIDGE_RECHECK_MS": "200",
                    "BRIDGE_MAX_BACKOFF_MS": "500", "REDIS_TIMEOUT_MS": "500"}
        self.procs: list[subprocess.Popen[str]] = []
        self.lasting = lasting

    def start(self, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "switchyard.cli", "bridge"], cwd=ROOT,
                                env={**self.env, **env}, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        if self.lasting:
            outlive(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the bridge consumes
        if line.strip() != "ready":
            stop([proc])
            raise AssertionError(f"bridge did not start: {line!r}")
        return proc

    def running(self) -> bool:
        return any(proc.poll() is None for proc in self.procs)

    def stop_all(self) -> None:
        """Stop them all (SIGTERM, SIGKILL 30 s later); each stopped cleanly (exit 0), or
        was killed by the test (-9)."""
        killed = stop(self.procs, grace=30)
        assert not killed, f"bridges {killed} did not stop within 30 s of SIGTERM"
        assert all(proc.returncode in (0, -9) for proc in self.procs), [
            proc.returncode for proc in self.procs]


@pytest.fixture(scope="module")
def bridges(world: World, amqp_url: str) -> Iterator[Bridges]:  # noqa: F811
    """Seed 004's queues declared as its producer does, then one bridge running."""
    with publisher(amqp_url) as channel:
        channel.queue_declare(ingress.INTERACTIONS, durable=True,
                              arguments={"x-max-priority": 10})
        channel.queue_declare(ingress.GUILD_EVENTS, durable=True)
    running = Bridges(world, amqp_url, lasting=True)
    try:
        running.start()
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def own_bridges(world: World, amqp_url: str) -> Iterator[Bridges]:  # noqa: F811
    """Bridges of the test's own, stopped after it whatever its outcome."""
    started = Bridges(world, amqp_url)
    try:
        yield started
    finally:
        started.stop_all()


class publisher:
    """A channel to publish on, as the seeds' producers do (closed on exit)."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))

    def __enter__(self) -> Any:
        channel = self.connection.channel()
        channel.confirm_delivery()
        return channel

    def __exit__(self, *exc: object) -> None:
        self.connection.close()


def publish(url: str, routing_key: str, body: Any, *, message_id: str | None = None,
            exchange: str = ingress.EXCHANGE) -> None:
    with publisher(url) as channel:
        send(channel, routing_key, body, message_id=message_id, exchange=exchange)


def send(channel: Any, routing_key: str, body: Any, *, message_id: str | None = None,
         exchange: str = ingress.EXCHANGE) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                      message_id=message_id)
    channel.basic_publish(exchange, routing_key, data, properties, mandatory=True)


def pushes(world: World, token: str) -> int:  # noqa: F811
    return sum(1 for d in world.fcm.sent if d.token == token)


def dead_letter(world: World, queue: str, routing_key: str,  # noqa: F811
                key: str) -> dict[str, Any]:
    """The dead letter the bridge recorded for the delivery with id `key`."""
    def found() -> dict[str, Any] | None:
        return next((r for r in world.sy.state.dead_letters.list(queue, limit=1000)
                     if r["message"]["options"].get("ingress_routing_key") == routing_key
                     and r["message"]["options"].get("idempotency_key") == key), None)
    return wait_for(found, timeout=20, what=f"a dead letter for {routing_key}")


def test_the_seeds_bodies_run_their_actors(world: World, bridges: Bridges,  # noqa: F811
                                           amqp_url: str) -> None:
    # given seed 003's exact bodies (ids of this test's own where the fakes tell them apart)
    token, to = unique("tok"), f"{unique('ann')}@example.com"
    phone = "+1555" + str(int(unique().encode().hex(), 16) % 10**7).zfill(7)
    # when its producer publishes them to sup_exchange, persistent, as JSON
    publish(amqp_url, "notification.push", {**PUSH, "fcmToken": token})
    publish(amqp_url, "notification.email", {**EMAIL, "email": to})
    publish(amqp_url, "notification.sms", {**SMS, "phoneNumber": phone})
    # then each runs its actor, once
    wait_for(lambda: pushes(world, token), timeout=30, what="the push")
    wait_for(lambda: [d for d in world.resend.sent if d.body["to"] in (to, [to])],
             timeout=30, what="the email")
    wait_for(lambda: [d for d in world.twilio.sent if d.to == phone], timeout=30,
             what="the SMS")
    assert pushes(world, token) == 1


@pytest.mark.parametrize(("routing_key", "body", "actor"), [
    ("media.image", {"type": "image", "s3Key": "uploads/user123/image.jpg",
                     "userId": "user-uuid-123", "messageId": "message-uuid-456",
                     "originalName": "vacation.jpg"}, "process_image"),
    ("cleanup.stories", {"type": "stories"}, "cleanup_stories"),
])
def test_media_and_cleanup_bodies_become_their_jobs(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
    routing_key: str, body: dict[str, Any], actor: str,
) -> None:
    message_id = unique("mc-")
    publish(amqp_url, routing_key, body, message_id=message_id)
    job_id = wait_for(lambda: world.sy.state.keys.holder(JobKey(actor, message_id)),
                      timeout=30, what=f"the {actor} job")
    assert world.finished(job_id)["actor"] == actor


def test_a_redelivered_message_makes_one_job(world: World, bridges: Bridges,  # noqa: F811
                                             amqp_url: str) -> None:
    # given a push published twice with the same message_id (a producer's retry)
    token, marker, message_id = unique("tok"), unique("tok"), unique("m-")
    with publisher(amqp_url) as channel:
        send(channel, "notification.push", {**PUSH, "fcmToken": token}, message_id=message_id)
        send(channel, "notification.push", {**PUSH, "fcmToken": token}, message_id=message_id)
        send(channel, "notification.push", {**PUSH, "fcmToken": marker})
    # then the bridge made one job of it: its key points at that job
    wait_for(lambda: pushes(world, marker), timeout=30, what="the marker push")
    wait_for(lambda: pushes(world, token), timeout=30, what="the push")
    wait_for(lambda: world.sy.queues.counts("notification").depth == 0
             and world.sy.queues.counts("notification").active == 0, timeout=30,
             what="the notification queue to empty")
    assert pushes(world, token) == 1


@pytest.mark.parametrize(("routing_key", "body", "code", "queue"), [
    ("notification.push", b"{not json", "not_json", "notification"),
    ("notification.sms", {**SMS, "phoneNumber": 1234567890}, "invalid", "notification"),
    ("notification.fax", {**SMS}, "no_actor_yet", "notification"),
])
def test_a_bad_message_is_dead_lettered_with_its_reason(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
    routing_key: str, body: Any, code: str, queue: str,
) -> None:
    message_id = unique("bad-")
    publish(amqp_url, routing_key, body, message_id=message_id)
    record = dead_letter(world, queue, routing_key, message_id)
    shown = summary(record, detail=True)
    assert shown["code"] == code and routing_key in shown["note"], shown
    if isinstance(body, dict):
        assert record["message"]["kwargs"] == body
    else:
        assert record["message"]["options"]["ingress_body"] == body.decode()


def test_an_interaction_on_the_priority_queue_not_in_seed_004s_shape_is_dead_lettered(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    # the queue was declared by its producer with x-max-priority: the bridge consumes it
    # without contradicting that (a passive declare), so no 406; a body that is not seed
    # 004's DiscordEventPayload is refused by the Discord job's model
    interaction_id = unique("int-")
    interaction = {"id": interaction_id, "type": 2, "guildId": "1", "data": {"name": "verify"}}
    with publisher(amqp_url) as channel:
        channel.basic_publish("", ingress.INTERACTIONS, json.dumps(interaction).encode(),
                              pika.BasicProperties(delivery_mode=2, priority=5,
                                                   content_type="application/json"))
    record = dead_letter(world, "discord-interactions", ingress.INTERACTIONS, interaction_id)
    assert record["reason"]["code"] == "invalid"


def test_a_guild_event_not_in_seed_004s_shape_is_dead_lettered(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    event_id = unique("evt-")
    event = {"eventId": event_id, "type": "member.join", "guildId": "1", "userId": "2"}
    publish(amqp_url, ingress.GUILD_EVENTS, event, exchange="")
    record = dead_letter(world, "discord-events", ingress.GUILD_EVENTS, event_id)
    assert record["reason"]["code"] == "invalid"
    assert record["message"]["kwargs"] == event
    # and `switchyard dlq list` shows it with its reason
    listed = subprocess.run([sys.executable, "-m", "switchyard.cli", "dlq", "list",
                             "discord-events"], cwd=ROOT, env=bridges.env,
                            capture_output=True, text=True, timeout=60)
    assert f"{record['message_id']}  discord-events  discord_guild_event  InvalidPayload: " \
           f"invalid GuildEventPayload payload" in listed.stdout, listed


def test_a_replayed_dead_letter_runs_its_actor_with_the_body(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    # given an SMS dead-lettered by the bridge (a number that is not E.164)
    message_id = unique("bad-")
    publish(amqp_url, "notification.sms", {**SMS, "phoneNumber": "12345"},
            message_id=message_id)
    record = dead_letter(world, "notification", "notification.sms", message_id)
    # when it is replayed
    replayed = world.sy.state.dead_letters.replay(world.sy.broker, "notification",
                                                  [record["message_id"]])
    # then the worker ran send_sms with the body, which still fails the same check
    assert replayed == [record["message_id"]]
    job = world.finished(record["message_id"])
    assert job["actor"] == "send_sms" and job["status"] == "failed"
    assert job["error"]["error"] == "InvalidPayload"


def delivery(tag: int, routing_key: str, message_id: str | None, body: Any) -> Delivery:
    """A delivery of `switchyard.ingress.notification`, as the bridge buffers it."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Delivery(tag, "switchyard.ingress.notification", routing_key, message_id, data)


def test_a_batch_of_deliveries_makes_each_its_job_or_its_dead_letter_once(
    world: World,  # noqa: F811
) -> None:
    # given one batch, as the bridge handles it, mixing good, bad and twice-sent deliveries
    token, marker = unique("tok"), unique("tok")
    twice, bad, not_json = unique("b-"), unique("b-"), unique("b-")

    batch = [delivery(1, "notification.push", twice, {**PUSH, "fcmToken": token}),
             delivery(2, "notification.sms", bad, {**SMS, "phoneNumber": 1234567890}),
             delivery(3, "notification.push", twice, {**PUSH, "fcmToken": token}),
             delivery(4, "notification.push", not_json, b"{not json"),
             delivery(5, "notification.push", unique("b-"), {**PUSH, "fcmToken": marker})]
    # when a bridge's app (the product's families declared) handles it
    app = runtime.build(world.sy.settings, actors.families())
    try:
        handle_many(app, batch)
        app.state.buffer.flush()
        # then each got its own outcome, the copy found the first's job, each ran once
        assert [d.outcome for d in batch] == ["enqueued", "dead", "duplicate", "dead",
                                              "enqueued"]
        job = app.state.keys.holder(JobKey("send_push", twice))
        assert job is not None
        wait_for(lambda: pushes(world, marker) and pushes(world, token), timeout=30,
                 what="both pushes")
        assert world.finished(job)["status"] == "done" and pushes(world, token) == 1
        assert summary(dead_letter(world, "notification", "notification.sms", bad),
                       detail=True)["code"] == "invalid"
        assert summary(dead_letter(world, "notification", "notification.push", not_json),
                       detail=True)["code"] == "not_json"
        # and handling the batch again (as after an outage) does nothing more
        handle_many(app, batch)
        assert app.queues.counts("notification").depth == 0
    finally:
        app.close()


def test_a_batch_whose_dead_letter_redis_did_not_take_is_retried_without_a_second_job(
    world: World, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    # given a batch of an invalid delivery and a push with no id (no key to dedupe it)
    token = unique("tok")
    batch = [delivery(1, "notification.sms", unique("b-"), {**SMS, "phoneNumber": 1}),
             delivery(2, "notification.push", None, {**PUSH, "fcmToken": token})]
    app = runtime.build(world.sy.settings, actors.families())
    try:
        # when Redis goes away after the push is enqueued, as the dead letter is written
        real, calls = app.state.dead_letters.add, []

        def add_once_refused(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise redis.ConnectionError("Redis went away")
            return real(*args, **kwargs)

        monkeypatch.setattr(app.state.dead_letters, "add", add_once_refused)
        with pytest.raises(Unavailable):
            handle_many(app, batch)
        # then the push is handled, the invalid one left for the retry, which adds only it
        assert [d.outcome for d in batch] == [None, "enqueued"]
        handle_many(app, batch)
        assert [d.outcome for d in batch] == ["dead", "enqueued"]
        app.state.buffer.flush()
        wait_for(lambda: pushes(world, token), timeout=30, what="the push")
        wait_for(lambda: world.sy.queues.counts("notification").depth == 0
                 and world.sy.queues.counts("notification").active == 0, timeout=30,
                 what="the notification queue to empty")
        assert pushes(world, token) == 1
    finally:
        app.close()


def test_a_bridge_killed_while_messages_flow_loses_none_and_doubles_none(
    world: World, bridges: Bridges, amqp_url: str, own_bridges: Bridges,  # noqa: F811
) -> None:
    tokens = [unique("k") for _ in range(300)]
    extra = own_bridges
    proc = extra.start()
    with publisher(amqp_url) as channel:
        for n, token in enumerate(tokens):
            send(channel, "notification.push", {**PUSH, "fcmToken": token},
                 message_id=f"kill-{token}")
            if n % 100 == 50:  # SIGKILL one bridge mid-flow, start another
                proc.kill()
                proc.wait(10)
                proc = extra.start()
    wait_for(lambda: all(pushes(world, t) for t in tokens), timeout=90,
             what="every push to be sent")
    extra.stop_all()
    assert [t for t in tokens if pushes(world, t) != 1] == []


class CuttableProxy:
    """A TCP proxy to Redis that the test can cut (connections dropped, new refused)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.links: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.links += [client, upstream]
            threading.Thread(target=self.pump, args=(client, upstream), daemon=True).start()

    def pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                for side in readable([a, b], 0.2):
                    data = side.recv(65536)
                    if not data:
                        return
                    (b if side is a else a).sendall(data)
        except OSError:
            return
        finally:  # either end gone: both closed, not left open until the proxy closes
            for end in (a, b):
                end.close()

    def cut(self) -> None:
        self.open.clear()
        for link in self.links:
            link.close()
        self.links.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.server.close()


ProxiedBridge = Callable[..., tuple[CuttableProxy, subprocess.Popen[str]]]


@pytest.fixture
def behind_proxy(world: World, bridges: Bridges,  # noqa: F811
                 own_bridges: Bridges) -> Iterator[ProxiedBridge]:
    """Start a bridge of the test's own that reaches Redis through a proxy (the module's
    bridge is stopped meanwhile: it would take the deliveries). After the test, whatever
    its outcome, that bridge is stopped, the proxy closed and the module's bridge runs."""
    proxies: list[CuttableProxy] = []

    def start(**env: str) -> tuple[CuttableProxy, subprocess.Popen[str]]:
        s = world.sy.settings
        assert s.redis_url is not None
        redis_url = s.redis_url.get_secret_value()
        port = int(redis_url.split(":")[2].split("/")[0])
        proxy = CuttableProxy(("127.0.0.1", port))
        proxies.append(proxy)
        bridges.stop_all()
        proc = own_bridges.start(REDIS_URL=redis_url.replace(f":{port}/", f":{proxy.port}/"),
                                 **env)
        return proxy, proc

    try:
        yield start
    finally:
        try:
            own_bridges.stop_all()
        finally:
            for proxy in proxies:
                proxy.close()
            if not bridges.running():
                bridges.start()


def publish_pushes(amqp_url: str, n: int, tag: str) -> list[str]:
    tokens = [unique(tag) for _ in range(n)]
    with publisher(amqp_url) as channel:
        for token in tokens:
            send(channel, "notification.push", {**PUSH, "fcmToken": token},
                 message_id=f"{tag}-{token}")
    return tokens


INGRESS_NOTIFICATION = "switchyard.ingress.notification"


def test_while_redis_is_unreachable_nothing_is_acked_and_all_runs_after(
    world: World, behind_proxy: ProxiedBridge, amqp_url: str,  # noqa: F811
) -> None:
    # given a bridge whose Redis is cut
    proxy, proc = behind_proxy()
    proxy.cut()
    # when pushes are published meanwhile
    tokens = publish_pushes(amqp_url, 20, "r")
    # then the bridge takes them but acks none while Redis is away
    wait_for(lambda: counts(amqp_url, INGRESS_NOTIFICATION)[1] > 0, timeout=30,
             what="deliveries")
    assert counts(amqp_url, INGRESS_NOTIFICATION)[0] == len(tokens)
    assert not any(pushes(world, t) for t in tokens)
    # and every one runs, once, after it is back
    proxy.restore()
    wait_for(lambda: all(pushes(world, t) for t in tokens), timeout=60,
             what="every push after Redis is back")
    assert [t for t in tokens if pushes(world, t) != 1] == []
    assert proc.poll() is None


def test_sigterm_while_redis_is_away_leaves_the_deliveries_to_the_next_bridge(
    world: World, bridges: Bridges, behind_proxy: ProxiedBridge,  # noqa: F811
    amqp_url: str,
) -> None:
    # given a bridge holding deliveries it cannot enqueue (Redis cut)
    proxy, proc = behind_proxy(BRIDGE_SHUTDOWN_TIMEOUT_MS="1000")
    proxy.cut()
    tokens = publish_pushes(amqp_url, 10, "s")
    wait_for(lambda: counts(amqp_url, INGRESS_NOTIFICATION)[1] > 0, timeout=30,
             what="deliveries")
    # when it is told to stop
    proc.terminate()
    # then it stops within its shutdown timeout, acking none
    assert proc.wait(15) == 0
    assert counts(amqp_url, INGRESS_NOTIFICATION) == (len(tokens), 0)
    # and the next bridge runs each of them once
    proxy.restore()
    proxy.close()
    bridges.start()
    wait_for(lambda: all(pushes(world, t) for t in tokens), timeout=60,
             what="every push through the next bridge")
    assert [t for t in tokens if pushes(world, t) != 1] == []


def counts(amqp_url: str, queue: str) -> tuple[int, int]:
    """(messages not acked, of which delivered) of a queue, as RabbitMQ counts them."""
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", amqp_url.rsplit("/", 1)[1],
                          "name", "messages", "messages_unacknowledged"],
                         capture_output=True, text=True, timeout=60).stdout
    rows = [line.split() for line in out.splitlines()]
    return next(((int(r[1]), int(r[2])) for r in rows if r and r[0] == queue), (0, 0))


def test_a_sup_exchange_job_that_dies_is_published_to_its_dead_queue(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    # given a push to a token FCM no longer knows (final at once)
    token = unique("dead")
    world.fcm.dead_tokens.add(token)
    # when seed 003's producer publishes it and the job dies
    publish(amqp_url, "notification.push", {**PUSH, "fcmToken": token},
            message_id=unique("d-"))

    # then seed 003's `notification.dead` gets its body, the reason in the headers
    def dead_one() -> tuple[Any, dict[str, Any]] | None:
        with publisher(amqp_url) as channel:
            channel.queue_declare("notification.dead", durable=True)
            while True:
                method, properties, body = channel.basic_get("notification.dead",
                                                             auto_ack=True)
                if method is None:
                    return None
                if properties.content_type == "application/json" \
                        and json.loads(body).get("fcmToken") == token:
                    return properties.headers, json.loads(body)
    headers, body = wait_for(dead_one, timeout=30, what="the dead push on notification.dead")
    assert body == {**PUSH, "fcmToken": token}
    assert headers["x-error"] == "DeadToken" and headers["x-actor"] == "send_push"
    assert headers["x-routing-key"] == "notification.push"


def test_on_a_rabbitmq_job_broker_the_delivery_is_acked_once_the_job_is_confirmed(
    world: World, tmp_path: Path,  # noqa: F811
) -> None:
    # given a Switchyard whose job broker is RabbitMQ (publisher confirms) and a bridge
    from store.migrate import upgrade
    from switchyard.ingress import bridge as ingress_bridge

    s = world.sy.settings
    assert s.redis_url is not None
    database = f"sqlite:///{tmp_path}/bridge.db"
    upgrade(database)
    with own_vhost() as url:
        sy = runtime.build(settings.load(
            _env_file=None, redis_url=s.redis_url.get_secret_value(), broker_url=url,
            key_prefix=s.key_prefix, switchyard_env="test", var_dir=str(tmp_path),
            database_url=database, bridge_recheck_ms=200), actors.families())
        ready = threading.Event()
        running = ingress_bridge.Bridge(sy, url, ready=ready.set)
        thread = threading.Thread(target=running.run, daemon=True)
        thread.start()
        try:
            assert ready.wait(30)
            # when seed 003's producer publishes a push
            publish(url, "notification.push", {**PUSH, "fcmToken": unique("tok")},
                    message_id=unique("rq-"))
            # then the job is on the broker's `notification` queue and the delivery acked
            wait_for(lambda: sy.queues.counts("notification").waiting == 1, timeout=30,
                     what="the job on RabbitMQ")
            wait_for(lambda: counts(url, "switchyard.ingress.notification") == (0, 0),
                     timeout=30, what="the delivery acked")
        finally:
            running.stop()
            thread.join(30)
            sy.close()


def test_a_seed_004_queue_declared_after_the_bridge_started_is_consumed(
    world: World,  # noqa: F811
) -> None:
    # given a bridge running before seed 004's producer declared its queues
    from switchyard.ingress import bridge as ingress_bridge

    with own_vhost() as url:
        ready = threading.Event()
        quick = world.sy.settings.model_copy(update={"bridge_recheck_ms": 200})
        running = ingress_bridge.Bridge(dataclasses.replace(world.sy, settings=quick), url,
                                        ready=ready.set)
        thread = threading.Thread(target=running.run, daemon=True)
        thread.start()
        try:
            assert ready.wait(30)
            # when the producer declares its queue (its own arguments) and publishes
            event_id = unique("late-")
            with publisher(url) as channel:
                channel.queue_declare(ingress.GUILD_EVENTS, durable=True,
                                      arguments={"x-message-ttl": 86_400_000})
            publish(url, ingress.GUILD_EVENTS, {"eventId": event_id, "type": "guild.create"},
                    exchange="")
            # then the bridge finds the queue and takes the event (no actor yet)
            record = dead_letter(world, ingress.DISCORD_QUEUE, ingress.GUILD_EVENTS, event_id)
            assert record["reason"]["code"] == "no_actor_yet"
        finally:
            running.stop()
            thread.join(30)

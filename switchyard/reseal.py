"""`switchyard keys rotate`: re-seal what is stored under the newest payload key.

A rotation is: put the new key first in PAYLOAD_KEYS (the old one after it) on every
process, run `switchyard keys rotate`, then drop the old key. Rotating re-seals, each
in place and only if it did not change meanwhile (compare and set), so it can run
while workers do:

- dead letters (the state store, both brokers);
- jobs waiting in their lanes (`state.lanes`: their bodies, kept until published) and
  batches' callback payloads (`state.batches`);
- the Redis broker's message bodies: waiting, delayed (`.DQ`) and its own `.XQ`;
- results (Dramatiq's result backend) and the job history's results;
- RabbitMQ: the messages ready in each job queue, its `.DQ` and `.XQ`, taken and
  published again re-sealed (confirmed, then acked). Messages a running worker holds
  (RabbitMQ's delayed jobs wait in the worker that fetched them) are out of reach:
  rotate with the workers stopped, or keep the old key until they have run.

What was stored in clear (before encryption was switched on) is sealed too, so a rotation
is also how a running deployment starts sealing what it already holds. What cannot be
opened (a key already removed, a damaged seal) is counted and left as is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pika
from dramatiq.common import dq_name, xq_name

from state.batches import CALLBACK_PURPOSE
from switchyard.base.sealing import Sealer, Unsealable

if TYPE_CHECKING:
    from switchyard.runtime.app import App

# Replaces a hash field only if it still holds what was read. KEYS: hash. ARGV: field,
# old, new.
_HSET_IF_SAME = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
# Replaces a list item only if it still holds what was read. KEYS: list. ARGV: index,
# old, new.
_LSET_IF_SAME = """
if redis.call('lindex', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('lset', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


@dataclass
class Resealed:
    """How many stored values were re-sealed, by place, and how many could not be."""

    dead_letters: int = 0
    messages: int = 0
    results: int = 0
    history: int = 0
    lanes: int = 0
    batches: int = 0
    unopenable: int = 0


def rotate(app: App) -> dict[str, Any]:
    """Re-seal everything reachable under the newest key; the counts, by place."""
    sealer = app.state.sealer
    if not sealer.sealing or sealer.keyring is None:
        raise Unsealable("payload encryption is off or has no key: nothing to rotate to")
    done = Resealed()
    client: Any = app.state.client
    hset = client.register_script(_HSET_IF_SAME)
    prefix = app.settings.key_prefix
    store = app.state.dead_letters
    for queue in store.queues():
        done.dead_letters += _hash(client, hset, f"{prefix}:dlq:q:{queue}:items",
                                   lambda raw: _dead_letter(sealer, raw), done)
    done.history += _each_hash(client, hset, f"{prefix}:job:*", "result",
                               lambda raw: sealer.reseal_value(raw.decode()), done)
    done.lanes += _hash(client, hset, f"{prefix}:lanes:jobs",
                        lambda raw: _lane_record(sealer, raw), done)
    done.batches += _each_hash(client, hset, f"{prefix}:batch:*", "callback",
                               lambda raw: _callback(sealer, raw), done)
    done.results += _results(client, f"{prefix}:results:*", sealer, done)
    if app.settings.uses_rabbitmq:
        done.messages += _rabbitmq(app, sealer, done)
    else:
        broker: Any = app.broker
        for key in _keys(broker.client, f"{broker.namespace}:*.msgs", "hash"):
            done.messages += _hash(broker.client, broker.client.register_script(_HSET_IF_SAME),
                                   key, lambda raw: _body(sealer, raw), done)
    return {**asdict(done), "key_id": sealer.keyring.newest}


def _keys(client: Any, pattern: str, kind: str) -> Iterator[str]:
    for key in client.scan_iter(pattern, count=1000, _type=kind):
        yield key.decode() if isinstance(key, bytes) else key


def _hash(client: Any, hset: Any, key: str, reseal: Callable[[bytes], Any],
          done: Resealed, only: str | None = None) -> int:
    """Re-seal the fields of one hash (or only the field `only`); how many changed."""
    changed = 0
    for field, raw in client.hscan_iter(key, match=only):
        try:
            new = reseal(raw)
        except (Unsealable, ValueError):
            done.unopenable += 1
            continue
        if new is not None:
            changed += int(hset(keys=[key], args=[field, raw, new]))
    return changed


def _each_hash(client: Any, hset: Any, pattern: str, field: str,
               reseal: Callable[[bytes], Any], done: Resealed) -> int:
    return sum(_hash(client, hset, key, reseal, done, only=field)
               for key in _keys(client, pattern, "hash"))


def _results(client: Any, pattern: str, sealer: Sealer, done: Resealed) -> int:
    lset = client.register_script(_LSET_IF_SAME)
    changed = 0
    for key in _keys(client, pattern, "list"):
        for index, raw in enumerate(client.lrange(key, 0, -1)):
            try:
                new = sealer.reseal_value(json.loads(raw))
            except (Unsealable, ValueError):
                done.unopenable += 1
                continue
            if new is not None:
                changed += int(lset(keys=[key], args=[index, raw, json.dumps(new)]))
    return changed


def _lane_record(sealer: Sealer, raw: bytes) -> str | None:
    """A lane's record of a waiting job, its body re-sealed."""
    record = json.loads(raw)
    body = _body(sealer, str(record.get("b", "")).encode())
    return None if body is None else json.dumps({**record, "b": body.decode()})


def _callback(sealer: Sealer, raw: bytes) -> str | None:
    """A batch's callback, its payload re-sealed."""
    callback = json.loads(raw)
    payload = sealer.reseal_value(callback.get("payload"), CALLBACK_PURPOSE)
    return None if payload is None else json.dumps({**callback, "payload": payload})


def _dead_letter(sealer: Sealer, raw: bytes) -> str | None:
    record = json.loads(raw)
    message = sealer.reseal_message(record.get("message") or {})
    return None if message is None else json.dumps({**record, "message": message})


def _body(sealer: Sealer, raw: bytes) -> bytes | None:
    fields = json.loads(raw)
    if not isinstance(fields, dict) or not {"message_id", "actor_name"} <= fields.keys():
        return None  # not a message: the consumer dead-letters it
    resealed = sealer.reseal_message(fields)
    return None if resealed is None else json.dumps(resealed, separators=(",", ":")).encode()


def _rabbitmq(app: App, sealer: Sealer, done: Resealed) -> int:
    """Take each ready message once and publish it again (re-sealed when needed)."""
    connection = pika.BlockingConnection(
        pika.URLParameters(app.settings.rabbitmq_url.split(";")[0]))
    changed = 0
    try:
        channel = None
        for queue in sorted({job.queue_name for job in app.jobs.values()}):
            for name in (queue, dq_name(queue), xq_name(queue)):
                if channel is None or channel.is_closed:  # a missing queue closes it
                    channel = connection.channel()
                    channel.confirm_delivery()
                changed += _rabbitmq_queue(channel, name, sealer, done)
    finally:
        connection.close()
    return changed


def _rabbitmq_queue(channel: Any, name: str, sealer: Sealer, done: Resealed) -> int:
    try:
        ready = channel.queue_declare(name, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:  # no such queue: nothing to re-seal
        return 0
    changed = 0
    for _ in range(ready):
        method, properties, body = channel.basic_get(name)
        if method is None:
            break
        try:
            new = _body(sealer, body)
        except (Unsealable, ValueError):
            done.unopenable += 1
            new = None
        channel.basic_publish("", name, new or body, properties)
        channel.basic_ack(method.delivery_tag)
        changed += new is not None
    return changed

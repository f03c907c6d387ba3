"""Our pipelines' own round trip (`run_pipeline`): the replies redis-py would give, a
dropped connection dialled again, and a connection never handed back out of step."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from switchyard.base import redis_client as clients
from switchyard.base.redis_client import TimedRedis, queue_script, redis_client, run_pipeline


@pytest.fixture
def client(make_settings: Callable[..., Any], redis_url: str) -> Iterator[TimedRedis]:
    made = redis_client(redis_url, make_settings())
    yield made
    made.close()


def commands(client: TimedRedis, prefix: str) -> Callable[[Any], None]:
    script = client.register_script("return {KEYS[1], ARGV[1]}")

    def queue(pipe: Any) -> None:
        pipe.set(f"{prefix}:s", "v")
        pipe.get(f"{prefix}:s")
        pipe.get(f"{prefix}:missing")
        pipe.hset(f"{prefix}:h", mapping={"a": 1, "b": "2"})
        pipe.hgetall(f"{prefix}:h")
        pipe.zadd(f"{prefix}:z", {"x": 1.5, "y": 2})
        pipe.zrange(f"{prefix}:z", 0, -1, withscores=True)
        pipe.incr(f"{prefix}:s")  # refused: not a number
        pipe.set(f"{prefix}:m", memoryview(b"bytes"))  # not hiredis's: redis-py packs it
        pipe.get(f"{prefix}:m")
        pipe.exists(f"{prefix}:s", f"{prefix}:missing")
        pipe.client_id()  # a command of two words
        queue_script(pipe, script, [f"{prefix}:k"], ["arg"])

    return queue


def shown(reply: Any, prefix: str) -> Any:
    if isinstance(reply, Exception):
        return (type(reply).__name__, str(reply).split(" of pipeline caused error: ")[-1])
    if isinstance(reply, int) and not isinstance(reply, bool) and reply > 100:
        return "a client id"
    return repr(reply).replace(prefix, "PREFIX")


def test_a_pipeline_answers_as_redis_py_would(client: TimedRedis) -> None:
    theirs, ours = (f"pipelines-{uuid.uuid4().hex[:8]}" for _ in range(2))
    client.script_load("return {KEYS[1], ARGV[1]}")
    try:
        with client.pipeline(transaction=False) as pipe:
            commands(client, theirs)(pipe)
            expected = pipe.execute(raise_on_error=False)
        with client.pipeline(transaction=False) as pipe:
            commands(client, ours)(pipe)
            got = run_pipeline(pipe)
            assert pipe.command_stack == []  # sent: the pipeline is empty again
    finally:
        client.delete(*(f"{p}:{k}" for p in (theirs, ours) for k in "shzm"))
    assert [shown(r, ours) for r in got] == [shown(r, theirs) for r in expected]
    assert got[7].__class__ is redis.ResponseError  # a refusal is a reply, not raised
    assert got[4] == {b"a": b"1", b"b": b"2"} and got[6] == [(b"x", 1.5), (b"y", 2.0)]


def dropped(client: TimedRedis) -> int:
    """Have Redis close the client's pooled connection (a restart, a failover); its id."""
    own_id = client.client_id()
    redis.Redis(connection_pool=redis.ConnectionPool(
        **{k: v for k, v in client.connection_pool.connection_kwargs.items()
           if k in ("host", "port", "db")})).client_kill_filter(_id=str(own_id))
    return int(own_id)


def test_a_dropped_connection_is_dialled_again_and_the_pipeline_sent_once(
        client: TimedRedis) -> None:
    # given a pooled connection Redis has since closed (a restart, a failover)
    key = f"pipelines-{uuid.uuid4().hex[:8]}"
    own_id = dropped(client)
    # when a pipeline goes through it
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        replies = run_pipeline(pipe)
    # then it was sent again on a new connection, and applied once
    assert replies == [1]
    assert client.client_id() != own_id
    client.delete(key)


def test_an_error_between_two_replies_never_hands_back_a_connection_out_of_step(
        client: TimedRedis) -> None:
    # given a pipeline whose first reply's reading fails before the second is read (a
    # job's time limit raised there)
    key = f"pipelines-{uuid.uuid4().hex[:8]}"
    client.set(f"{key}:first", "first")
    client.set(f"{key}:second", "second")
    client.set(f"{key}:third", "third")
    fail = [True]

    def read_get(reply: Any, **_: Any) -> Any:
        if fail.pop() if fail else False:
            raise TimeoutError("a time limit, say")
        return reply

    client.set_response_callback("GET", read_get)
    with client.pipeline(transaction=False) as pipe:
        pipe.get(f"{key}:first")
        pipe.get(f"{key}:second")
        with pytest.raises(TimeoutError):
            run_pipeline(pipe)
    # when the next pipeline borrows a connection of the pool
    with client.pipeline(transaction=False) as pipe:
        pipe.get(f"{key}:third")
        replies = run_pipeline(pipe)
    # then it reads its own reply, not the second one left on the wire
    assert replies == [b"third"]
    client.delete(f"{key}:first", f"{key}:second", f"{key}:third")


def test_a_single_command_answers_as_redis_py_would_and_a_refusal_is_raised(
        client: TimedRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    key = f"pipelines-{uuid.uuid4().hex[:8]}"

    def asked() -> list[Any]:
        client.delete(key, f"{key}:h", f"{key}:z")
        got: list[Any] = [client.set(key, "v"), client.get(key), client.get(f"{key}:none"),
                          client.hset(f"{key}:h", mapping={"a": 1}), client.hgetall(f"{key}:h"),
                          client.zadd(f"{key}:z", {"x": 1.5}),
                          client.zrange(f"{key}:z", 0, -1, withscores=True),
                          client.exists(key, f"{key}:none"), bool(client.client_id())]
        with pytest.raises(redis.ResponseError, match="not an integer"):
            client.incr(key)
        return got

    ours = asked()
    monkeypatch.setattr(clients, "traced", True)  # through redis-py's own call
    assert asked() == ours
    assert ours[:2] == [True, b"v"] and ours[4] == {b"a": b"1"} and ours[6] == [(b"x", 1.5)]
    client.delete(key, f"{key}:h", f"{key}:z")


def test_a_single_command_on_a_dropped_connection_is_sent_again_once(
        client: TimedRedis) -> None:
    key = f"pipelines-{uuid.uuid4().hex[:8]}"
    own_id = dropped(client)
    assert client.incr(key) == 1
    assert client.client_id() != own_id
    client.delete(key)

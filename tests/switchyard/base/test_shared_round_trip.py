"""One round trip for a batch's lookups: what each caller queues within
`one_round_trip` is sent together, and each caller gets its own replies or error."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from switchyard.base import redis_client
from switchyard.base.redis_client import later, one_round_trip


def test_lookups_within_one_round_trip_share_one_pipeline_each_with_its_replies(
        state: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    real = redis_client.execute_loading

    def counted(pipe: Any, **options: Any) -> list[Any]:
        sent.append(len(pipe.command_stack))
        return real(pipe, **options)

    monkeypatch.setattr(redis_client, "execute_loading", counted)
    state.set(f"{prefix}:a", "1")
    state.set(f"{prefix}:text", "not a number")
    got: dict[str, Any] = {}

    def caller(name: str, *commands: tuple[str, ...]) -> None:
        later(state, lambda pipe: [pipe.execute_command(*c) for c in commands],
              lambda replies: got.__setitem__(name, replies),
              lambda error: got.__setitem__(name, error))

    # given three callers within one round trip, the second asking what Redis refuses
    with one_round_trip():
        caller("first", ("GET", f"{prefix}:a"), ("INCR", f"{prefix}:n"))
        caller("refused", ("INCR", f"{prefix}:text"))
        caller("third", ("GET", f"{prefix}:n"))
        assert got == {} and sent == []  # nothing sent yet
    # then one pipeline carried them all, in order, and each got its own answer
    assert sent == [4]
    assert got["first"] == [b"1", 1] and got["third"] == [b"1"]
    assert isinstance(got["refused"], redis.ResponseError)

    # and outside one, a caller's commands go at once
    caller("alone", ("GET", f"{prefix}:a"))
    assert got["alone"] == [b"1"] and sent == [4, 1]


def test_a_redis_that_does_not_answer_fails_every_caller_of_the_round_trip() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    failed: list[BaseException] = []
    with one_round_trip():
        for _ in range(2):
            later(dead, lambda pipe: pipe.get("k"), lambda replies: None, failed.append)
    assert len(failed) == 2 and all(isinstance(e, redis.ConnectionError) for e in failed)

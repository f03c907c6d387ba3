"""The state store's write buffer: what a job records is written once, even when Redis
has forgotten the scripts the buffer runs (a restart, SCRIPT FLUSH, a new primary)."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import pytest

import state.buffer
from tests.support.waiting import wait_for

REDIS_ONLY = pytest.mark.parametrize("broker_kind", ["redis"])


@REDIS_ONLY
def test_a_flush_after_redis_forgot_its_scripts_writes_each_record_once(
        build_switchyard: Any, queue: str) -> None:
    # given buffered records (a history update, run by a script, and a counter) and a
    # Redis that has forgotten every script
    sy = build_switchyard()
    message: dramatiq.Message[Any] = dramatiq.Message(queue_name=queue, actor_name="a",
                                                      args=(), kwargs={}, options={})
    sy.state.history.record(message, 1, {"status": "queued", "actor": "a"})
    sy.state.metrics.count("a", queue, "done")
    sy.state.client.script_flush()

    # when the buffer is flushed
    sy.state.buffer.flush()

    # then the script ran (loaded again) and the counter, in the same pipeline, was not
    # applied twice
    assert (sy.state.history.get(message.message_id) or {}).get("status") == "queued"
    assert sy.state.metrics.counters()[("a", queue, "done")] == 1

    # and an enqueue, whose script Redis forgot too, still lands once
    sy.state.client.script_flush()
    sy.broker.declare_queue(queue)
    sy.broker.enqueue(message)
    assert sy.broker.client.llen(f"{sy.broker.namespace}:{queue}") == 1


@REDIS_ONLY
def test_acks_travel_after_the_writes_and_a_refused_write_is_not_applied_twice(
        build_switchyard: Any, queue: str, caplog: pytest.LogCaptureFixture) -> None:
    # given buffered records, one of which Redis refuses (its key holds another type),
    # and a Redis that has forgotten every script
    sy = build_switchyard()
    client = sy.state.client
    bad, good = (f"{sy.settings.key_prefix}:{name}" for name in ("not-a-counter", "good"))
    client.set(bad, "text")
    sy.state.buffer.add(lambda pipe: pipe.hincrby(bad, "n", 1))
    sy.state.buffer.add(lambda pipe: pipe.hincrby(good, "n", 1))  # a done mark, say
    client.script_flush()

    # when the caller's commands go with the flush (as a fetch's acks do)
    replies = sy.state.buffer.flush_or_raise(lambda pipe: (pipe.incr(f"{bad}:after"),
                                                       pipe.hget(good, "n")))

    # then they ran after the writes, and their replies are the caller's
    assert [int(r) for r in replies] == [1, 1]
    # and the refused write is reported, not kept to be sent again with the good one
    assert "state writes failed" in caplog.text
    sy.state.buffer.flush_or_raise()
    assert int(client.hget(good, "n")) == 1

    # and so does the flushing thread's own flush
    sy.state.buffer.add(lambda pipe: pipe.hincrby(bad, "n", 1))
    sy.state.buffer.add(lambda pipe: pipe.hincrby(good, "n", 1))
    sy.state.buffer.flush()
    sy.state.buffer.flush()
    assert int(client.hget(good, "n")) == 2


@REDIS_ONLY
def test_callers_waiting_on_a_flush_are_served_together_each_with_its_replies(
        build_switchyard: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # given ten threads that each flush with commands of their own (a release, acks),
    # all arriving while another flush is on the wire
    sy = build_switchyard()
    buffer, key = sy.state.buffer, f"{sy.settings.key_prefix}:group"
    round_trips: list[int] = []
    real = state.buffer.execute_loading

    def counted(pipe: Any, **options: Any) -> list[Any]:
        round_trips.append(len(pipe.command_stack))
        return real(pipe, **options)

    monkeypatch.setattr(state.buffer, "execute_loading", counted)
    replies: dict[int, list[Any]] = {}

    def finish(n: int) -> None:
        buffer.add(lambda pipe: pipe.rpush(key, f"write-{n}"))  # its done mark
        replies[n] = buffer.flush_or_raise(lambda pipe: (pipe.rpush(key, f"then-{n}"),
                                                         pipe.set(f"{key}:{n}", n)))

    threads = [threading.Thread(target=finish, args=(n,)) for n in range(10)]
    with buffer._flushing:  # the flush on the wire
        for thread in threads:
            thread.start()
        wait_for(lambda: len(buffer._tickets) == 10, what="ten callers waiting")
    for thread in threads:
        thread.join(10)

    # then one round trip served them all, every write before any caller's commands,
    # and each caller got the replies of its own commands
    assert len(round_trips) == 1
    written = [item.decode() for item in sy.state.client.lrange(key, 0, -1)]
    assert sorted(written[:10]) == sorted(f"write-{n}" for n in range(10))
    assert sorted(written[10:]) == sorted(f"then-{n}" for n in range(10))
    for n, own in replies.items():
        assert own[1] is True and int(own[0]) == 10 + written[10:].index(f"then-{n}") + 1
    assert len(replies) == 10


@REDIS_ONLY
def test_counts_wait_for_the_interval_while_the_writes_a_caller_waits_on_go_at_once(
        build_switchyard: Any, queue: str) -> None:
    # given a process whose buffer flushes on its own once a minute, with a job's
    # record and its counts (metrics, timeline) buffered
    sy = build_switchyard(flush_interval_ms=60_000)
    message: dramatiq.Message[Any] = dramatiq.Message(queue_name=queue, actor_name="a",
                                                      args=(), kwargs={}, options={})
    sy.state.history.record(message, 1, {"status": "queued", "actor": "a"})
    sy.state.metrics.count("a", queue, "done")
    sy.state.timeline.ended(queue, "a", "done", 3.0)

    # when a worker's acks and an enqueue's record are flushed
    sy.state.buffer.flush_or_raise(lambda pipe: pipe.ping())
    sy.state.buffer.flush(everything=False)

    # then the record is written, and the counts are not: one HINCRBY per field per
    # interval, not with every job
    assert (sy.state.history.get(message.message_id) or {}).get("status") == "queued"
    assert sy.state.metrics.counters() == {}
    assert done_in_the_last_hour(sy, queue) == 0

    # and the interval's flush (or a process's last, `flush()`) writes them, once
    sy.state.metrics.count("a", queue, "done")
    sy.state.buffer.flush()
    sy.state.buffer.flush()
    assert sy.state.metrics.counters() == {("a", queue, "done"): 2}
    assert done_in_the_last_hour(sy, queue) == 1


def done_in_the_last_hour(sy: Any, queue: str) -> int:
    return sum(point["done"] for point in sy.state.timeline.series("minute", queue)["points"])


@REDIS_ONLY
def test_counts_reach_the_store_within_the_interval_without_any_flush(
        build_switchyard: Any, queue: str) -> None:
    # given a process flushing every 50 ms
    sy = build_switchyard(flush_interval_ms=50)
    # when a job is counted and nobody flushes
    sy.state.metrics.count("a", queue, "done")
    # then its count reaches the store on its own
    wait_for(lambda: sy.state.metrics.counters() == {("a", queue, "done"): 1}, timeout=5,
             what="the count written by the interval's flush")


@REDIS_ONLY
def test_retention_trims_a_finished_set_at_the_intervals_flush_not_with_each_job(
        build_switchyard: Any, queue: str) -> None:
    # given a history that keeps two done jobs, in a process whose buffer flushes on its
    # own once a minute, and five jobs that finished
    sy = build_switchyard(flush_interval_ms=60_000, history_keep_done=2)
    history = sy.state.history
    done: list[dramatiq.Message[Any]] = [
        dramatiq.Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={})
        for _ in range(5)]
    for message in done:
        history.record(message, 1, {"status": "done", "actor": "a"}, kind="done")
        # when each one's record goes with a worker's acks
        sy.state.buffer.flush_or_raise()
    # then they are all written, and the set waits for its trim
    finished_set = history.finished_key(queue, "done")
    assert all(history.get(m.message_id) for m in done)
    assert sy.state.client.zcard(finished_set) == 5
    # and the interval's flush trims it to what the settings keep, once
    sy.state.buffer.flush()
    assert sy.state.client.zcard(finished_set) == 2
    assert len([m for m in done if history.get(m.message_id)]) == 2

"""The two ways a job's idempotency key is taken, each on its own: with its fetched
batch, in one round trip (`after_fetch`, on the Redis broker), or by the job as it
starts (`before_process_message`: RabbitMQ, and whatever the batch could not take); and
what gives back a key taken for a job that never started (`after_unfetch`, a skip).

Either path alone keeps the promise, so a test that lets one fall back to the other
cannot tell a broken one: these call the middleware's hooks as a consumer and a worker
thread would, on the real state store, and read who holds each key in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from middleware.idempotency import Idempotency
from state.idempotency import IdempotencyKeys
from switchyard.base.keys import JobKey
from switchyard.base.outcome import Deferred, StateStoreUnavailable, running
from tests.support.waiting import wait_for

pytestmark = pytest.mark.parametrize("broker_kind", ["redis"])  # hooks called directly


class Hooks:
    """A Switchyard's idempotency middleware, an actor keyed by its `order` argument,
    and what its state store holds."""

    def __init__(self, sy: Any, queue: str) -> None:
        self.sy = sy
        self.keys: IdempotencyKeys = sy.state.keys
        self.middleware = next(m for m in sy.broker.middleware if isinstance(m, Idempotency))

        def order_key(order: str) -> str:
            if order == "unkeyable":
                raise ValueError("no key for this payload")
            return f"order:{order}"

        @dramatiq.actor(broker=sy.broker, queue_name=queue, idempotency_key=order_key,
                        idempotency_ttl=600_000)
        def charge(order: str) -> None:
            pass

        @dramatiq.actor(broker=sy.broker, queue_name=queue)
        def ping() -> None:
            pass

        self.actor, self.unkeyed = charge, ping

    def message(self, order: str, **options: Any) -> MessageProxy:
        return MessageProxy(self.actor.message_with_options(args=(order,), **options))

    def key(self, order: str) -> JobKey:
        return JobKey("charge", f"order:{order}")

    def fetched(self, *messages: MessageProxy) -> None:
        self.middleware.after_fetch(self.sy.broker, list(messages))

    def start(self, message: MessageProxy) -> None:
        self.middleware.before_process_message(self.sy.broker, message)

    def succeed(self, message: MessageProxy) -> None:
        """The job's run ends well, and its ack is about to be sent: the done mark is
        buffered, and the buffer is flushed before any ack."""
        self.middleware.after_process_message(self.sy.broker, message, result=None)
        self.sy.state.buffer.flush()

    def fail(self, message: MessageProxy) -> None:
        self.middleware.after_process_message(self.sy.broker, message,
                                              exception=ConnectionError("reset"))

    def value(self, order: str, key: JobKey | None = None) -> str | None:
        """What Redis holds under the key of `order` (or `key`)."""
        raw = self.sy.state.client.get(self.keys.redis_key(key or self.key(order)))
        return raw.decode() if raw is not None else None

    def pttl(self, order: str) -> int:
        return int(self.sy.state.client.pttl(self.keys.redis_key(self.key(order))))

    def held_by(self, order: str, key: JobKey | None = None) -> str | None:
        """The message id whose lease holds the key of `order` (or `key`; None: not held)."""
        value = self.value(order, key)
        if value is None or not value.startswith("run:"):
            return None
        return value[4:].split("/")[0]

    def close(self) -> None:
        """Stop renewing the leases the test left held (their keys go with the test's)."""
        for name in list(self.keys.leases._held):
            self.keys.leases.drop(name)


@pytest.fixture
def make_hooks(build_switchyard: Any, queue: str) -> Iterator[Callable[..., Hooks]]:
    made: list[Hooks] = []

    def make(lease_ms: int = 5_000) -> Hooks:
        made.append(Hooks(build_switchyard(idempotency_lease_ms=lease_ms), queue))
        return made[-1]

    yield make
    for hooks in made:
        hooks.close()


@pytest.fixture
def hooks(make_hooks: Callable[..., Hooks]) -> Hooks:
    return make_hooks()


class Race:
    """The state store's client, with what another process does to a key between the
    SET NX and the GET of `take` (`before_get`), or between that GET and the SET that
    follows it (`after_get`), or before a claim's MGET (`before_mget`)."""

    def __init__(self, client: Any, **moves: Callable[[], Any]) -> None:
        self.client, self.moves = client, moves

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if str(args[0]).upper() == "GET" and "before_get" in self.moves:
            self.moves.pop("before_get")()
            answer = self.client.execute_command(*args, **options)
            if "after_get" in self.moves:
                self.moves.pop("after_get")()
            return answer
        return self.client.execute_command(*args, **options)

    def mget(self, *args: Any, **options: Any) -> Any:
        if "before_mget" in self.moves:
            self.moves.pop("before_mget")()
        return self.client.mget(*args, **options)


# The batch's path: keys taken as the batch is fetched.

def test_a_fetched_batch_holds_each_jobs_key_before_any_starts(hooks):
    # given a batch of three jobs, fetched
    first, second, third = (hooks.message(order) for order in ("b-1", "b-2", "b-3"))
    hooks.fetched(first, second, third)
    # then each key is held by its own job, for one lease, though none has started
    assert [hooks.held_by(o) for o in ("b-1", "b-2", "b-3")] == [
        first.message_id, second.message_id, third.message_id]
    assert 4_000 < hooks.pttl("b-2") <= 5_000


def test_a_job_whose_key_came_with_its_batch_runs_on_that_hold_and_marks_it_done(hooks):
    # given a batch of two jobs whose keys were taken as it was fetched
    first, second = hooks.message("h-1"), hooks.message("h-2")
    hooks.fetched(first, second)
    # when the first starts (nothing else may take its key) and succeeds
    hooks.start(first)
    hooks.succeed(first)
    # then its key is done for the actor's TTL, and the second's is still held by it
    assert hooks.value("h-1") == f"done:{first.message_id}"
    assert 590_000 < hooks.pttl("h-1") <= 600_000
    assert hooks.held_by("h-2") == second.message_id


def test_a_job_whose_key_came_with_its_batch_and_fails_lets_it_go(hooks):
    message = hooks.message("f-1")
    hooks.fetched(message)
    hooks.start(message)
    hooks.fail(message)
    assert hooks.value("f-1") is None


def test_a_batch_leaves_a_done_or_running_key_to_its_job_which_is_then_turned_away(hooks):
    # given one key done and another held by a running job
    done, running = hooks.message("d-1"), hooks.message("r-1")
    hooks.start(done)
    hooks.succeed(done)
    hooks.start(running)
    # when a batch brings a copy of each, and a fresh job after them
    copy_of_done, copy_of_running, fresh = (hooks.message(o) for o in ("d-1", "r-1", "n-1"))
    hooks.fetched(copy_of_done, copy_of_running, fresh)
    # then the batch took only the fresh key; the copies, as they start, are skipped
    # (done) and deferred (running) by the key's own state
    assert hooks.held_by("n-1") == fresh.message_id
    assert hooks.value("d-1") == f"done:{done.message_id}"
    assert hooks.held_by("r-1") == running.message_id
    with pytest.raises(SkipMessage):
        hooks.start(copy_of_done)
    with pytest.raises(Deferred) as deferred:
        hooks.start(copy_of_running)
    assert deferred.value.delay_ms == hooks.sy.settings.defer_ms


def test_a_delayed_job_in_a_batch_is_not_taken_but_those_after_it_are(hooks):
    # given a batch whose first job waits for its eta (it is fetched again when due)
    delayed = hooks.message("e-1", eta=10**13)
    after = hooks.message("e-2")
    hooks.fetched(delayed, after)
    # then its key is free, and the next job's is held
    assert hooks.value("e-1") is None
    assert hooks.held_by("e-2") == after.message_id


def test_a_job_whose_key_cannot_be_made_is_left_out_of_its_batch(hooks):
    # given a batch whose first job's key function fails on its payload
    unkeyable, after = hooks.message("unkeyable"), hooks.message("k-2")
    hooks.fetched(unkeyable, after)
    # then the rest of the batch is taken; the failing job fails as it starts, saying why
    assert hooks.held_by("k-2") == after.message_id
    with pytest.raises(ValueError, match="no key for this payload"):
        hooks.start(unkeyable)


def test_a_batch_whose_keys_redis_refuses_leaves_each_job_to_take_its_own(hooks, monkeypatch):
    # given a state store that fails the batch's round trip
    def unreachable(items: Any, then: Any, fail: Any) -> None:
        fail(redis.ConnectionError("connection refused"))

    monkeypatch.setattr(hooks.keys, "take_many", unreachable)
    message = hooks.message("u-1")
    # when the batch is fetched, nothing fails; the job takes its key as it starts
    hooks.fetched(message)
    assert hooks.value("u-1") is None
    hooks.start(message)
    assert hooks.held_by("u-1") == message.message_id


# The job's own path: no batch (RabbitMQ), or a key the batch could not take.

def test_without_a_batch_a_job_takes_its_key_as_it_starts_and_marks_it_done(hooks):
    message = hooks.message("s-1")
    hooks.start(message)
    assert hooks.held_by("s-1") == message.message_id
    assert 4_000 < hooks.pttl("s-1") <= 5_000
    hooks.succeed(message)
    assert hooks.value("s-1") == f"done:{message.message_id}"
    assert 590_000 < hooks.pttl("s-1") <= 600_000


def test_without_a_batch_a_copy_of_a_running_job_is_deferred_and_of_a_done_one_skipped(hooks):
    first, copy = hooks.message("s-2"), hooks.message("s-2")
    hooks.start(first)
    with pytest.raises(Deferred):
        hooks.start(copy)
    assert hooks.held_by("s-2") == first.message_id  # the copy did not let it go
    hooks.succeed(first)
    later = hooks.message("s-2")
    with pytest.raises(SkipMessage):
        hooks.start(later)
    assert hooks.value("s-2") == f"done:{first.message_id}"


def test_without_a_batch_a_failed_job_lets_its_key_go_for_its_retry(hooks):
    message = hooks.message("s-3")
    hooks.start(message)
    hooks.fail(message)
    assert hooks.value("s-3") is None
    retry = hooks.message("s-3")
    hooks.start(retry)
    assert hooks.held_by("s-3") == retry.message_id


def test_without_a_batch_a_state_store_that_does_not_answer_stops_the_job(hooks, monkeypatch):
    def unreachable(key: Any, message_id: str) -> Any:
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(hooks.keys, "take", unreachable)
    with pytest.raises(StateStoreUnavailable, match="connection refused"):
        hooks.start(hooks.message("s-4"))


# Keys taken for jobs that never start.

def test_jobs_fetched_then_given_back_without_starting_let_their_keys_go(hooks):
    # given a batch of two, fetched (their keys taken), and given back unstarted (a
    # consumer closing, a paused queue)
    first, second = hooks.message("g-1"), hooks.message("g-2")
    hooks.fetched(first, second)
    hooks.middleware.after_unfetch(hooks.sy.broker, [first, second])
    # then both keys are free at once (not at the end of their lease), and when the jobs
    # come back they take them again
    assert (hooks.value("g-1"), hooks.value("g-2")) == (None, None)
    hooks.fetched(first)
    assert hooks.held_by("g-1") == first.message_id


def test_a_fetched_job_skipped_before_it_starts_lets_its_key_go(hooks):
    # given a fetched job that another middleware turns away before it starts
    message = hooks.message("k-1")
    hooks.fetched(message)
    hooks.middleware.after_skip_message(hooks.sy.broker, message)
    assert hooks.value("k-1") is None


def test_a_fetched_job_given_back_after_another_took_its_key_leaves_that_key(hooks):
    # given a fetched job whose hold expired and whose key another job took meanwhile
    message = hooks.message("x-1")
    hooks.fetched(message)
    hooks.sy.state.client.delete(hooks.keys.redis_key(JobKey("charge", "order:x-1")))
    other = hooks.message("x-1")
    hooks.start(other)
    # when it is given back, the other's hold is untouched
    hooks.middleware.after_unfetch(hooks.sy.broker, [message])
    assert hooks.held_by("x-1") == other.message_id


# Either way, the job holds its key while it runs, and its context has it.

@pytest.mark.parametrize("path", ["batch", "start"])
def test_a_key_taken_either_way_is_held_past_its_lease_while_its_job_holds_it(
    make_hooks, path
):
    # given keys leased for 600 ms, and a job holding its key (taken with its batch, or
    # as it started)
    hooks = make_hooks(lease_ms=600)
    message = hooks.message("l-1")
    if path == "batch":
        hooks.fetched(message)
    else:
        hooks.start(message)
    # when twice its lease has passed
    time.sleep(1.2)  # the scenario: past the lease, so only renewals keep the key
    # then it still holds it, and once it succeeds the key is done
    assert hooks.held_by("l-1") == message.message_id
    if path == "batch":
        hooks.start(message)
    hooks.succeed(message)
    assert hooks.value("l-1") == f"done:{message.message_id}"


@pytest.mark.parametrize("path", ["batch", "start"])
def test_a_job_started_either_way_has_its_key_in_its_context(hooks, path):
    message = hooks.message("c-1")
    if path == "batch":
        hooks.fetched(message)
    hooks.start(message)
    outcome = running(message.message_id)
    assert outcome is not None and outcome.key == hooks.key("c-1")


def test_a_failed_job_without_a_key_lets_its_message_id_go_at_once(hooks):
    # given a job without a key (its message id is its key: done marks are buffered)
    message = MessageProxy(hooks.unkeyed.message())
    key = JobKey("ping", message.message_id, False)
    hooks.fetched(message)
    hooks.start(message)
    # when it fails, its retry may run at once: nothing waits for the buffer
    hooks.fail(message)
    assert hooks.value("", key) is None


def test_a_job_skipped_after_it_took_its_key_lets_it_go(hooks):
    # given a job that took its key as it started, then turned away by a later hook
    message = hooks.message("t-1")
    hooks.start(message)
    hooks.middleware.after_skip_message(hooks.sy.broker, message)
    # then the key is free: it was not marked done
    assert hooks.value("t-1") is None


def test_the_holder_of_a_key_is_named_whole_by_an_id_with_colons(hooks):
    # given a job whose message id another producer chose, with colons in it
    message = MessageProxy(hooks.actor.message_with_options(args=("i-1",)).copy(
        message_id="sqs:eu-west-1:42"))
    hooks.start(message)
    assert hooks.keys.holder(hooks.key("i-1")) == "sqs:eu-west-1:42"
    hooks.succeed(message)
    assert hooks.keys.holder(hooks.key("i-1")) == "sqs:eu-west-1:42"


# Races between a take's two round trips.

def test_a_key_whose_lease_ran_out_between_two_round_trips_is_taken(hooks):
    # given a key held by another job, whose lease runs out just after a job's SET NX
    # found it held and before its GET
    name = hooks.keys.redis_key(hooks.key("z-1"))
    hooks.sy.state.client.set(name, "run:other/1", px=5_000)
    hooks.keys.client = Race(hooks.keys.client,
                             before_get=lambda: hooks.sy.state.client.delete(name))
    # when the job starts, it takes the key after all, for a lease, instead of waiting
    message = hooks.message("z-1")
    hooks.start(message)
    assert hooks.held_by("z-1") == message.message_id
    assert 4_000 < hooks.pttl("z-1") <= 5_000


def test_a_key_taken_by_a_third_job_after_the_lease_ran_out_defers_the_job(hooks):
    # given a key whose lease runs out between a job's SET NX and its GET, and that a
    # third job takes before the job's second SET NX
    name = hooks.keys.redis_key(hooks.key("z-2"))
    hooks.sy.state.client.set(name, "run:other/1", px=5_000)
    hooks.keys.client = Race(
        hooks.keys.client, before_get=lambda: hooks.sy.state.client.delete(name),
        after_get=lambda: hooks.sy.state.client.set(name, "run:third/1", px=5_000))
    # then the job is deferred, and the third job keeps the key
    with pytest.raises(Deferred):
        hooks.start(hooks.message("z-2"))
    assert hooks.held_by("z-2") == "third"


def test_a_claim_lost_to_a_marker_that_expired_before_it_was_read_names_no_job(hooks):
    # given a key claimed by a job whose claim expires between another claim's SET NX
    # and its read of who holds the key
    key = hooks.key("q-1")
    assert hooks.keys.claim(key, "first", 60_000) is None
    marker = hooks.keys.redis_key(key) + ":queued"
    hooks.keys.client = Race(hooks.keys.client,
                             before_mget=lambda: hooks.sy.state.client.delete(marker))
    # then the second claim is refused without a job's id
    assert hooks.keys.claim(key, "second", 60_000) == ""


def test_a_lock_lost_while_its_job_ran_is_reported_when_the_done_mark_is_written(
        make_hooks, caplog):
    # given a job holding its key, whose lease ran out (its worker stalled: no renewal)
    # and which another job took meanwhile
    hooks = make_hooks(lease_ms=300)
    message = hooks.message("lost-1")
    hooks.start(message)
    hooks.close()  # renewals stop
    wait_for(lambda: hooks.value("lost-1") is None, timeout=5, what="the lease to run out")
    other = hooks.message("lost-1")
    hooks.start(other)
    # when the first job ends and its done mark is written
    hooks.succeed(message)
    # then the key stays the new holder's, and the loss is said, naming the job
    assert hooks.held_by("lost-1") == other.message_id
    assert "Lost the idempotency lock of 1 job(s)" in caplog.text
    assert message.message_id in caplog.text

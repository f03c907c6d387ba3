"""Lanes: admission through gates, in order, with nothing lost when a hold lapses or a
publisher dies before confirming."""

from __future__ import annotations

import json
import time

import dramatiq
import pytest
import redis

from state.buffer import WriteBuffer
from state.lanes import GROUP, LIMIT, THROUGH, WAITING, Lanes
from switchyard.base.priority import PRIORITY


@pytest.fixture
def lanes(state: redis.Redis, prefix: str) -> Lanes:
    return Lanes(state, prefix=prefix, hold_ms=60_000, stale_ms=200)


def body(n: int) -> bytes:
    return f'{{"n": {n}}}'.encode()


def test_a_full_lane_keeps_jobs_in_order_and_lets_them_through_one_per_release(lanes: Lanes):
    gate = [("limit:ops", 1, LIMIT)]
    assert lanes.admit("m1", "q", body(1), gate) == (THROUGH, [])
    for n in (2, 3, 4):
        assert lanes.admit(f"m{n}", "q", body(n), gate) == (WAITING, [])
    assert lanes.waiting("limit:ops") == ["m2", "m3", "m4"]

    admitted = lanes.release("m1", gate)
    assert [(a.message_id, a.queue, a.body) for a in admitted] == [("m2", "q", body(2))]
    lanes.published(["m2"])
    assert [a.message_id for a in lanes.release("m2", gate)] == ["m3"]
    assert lanes.waiting("limit:ops") == ["m4"] and lanes.holders("limit:ops") == ["m3"]


def test_a_late_publish_confirmation_leaves_a_retry_waiting_under_the_same_id(
        lanes: Lanes, state: redis.Redis, prefix: str):
    # given a job let in by a release, whose publish confirmation is buffered, and which
    # then ran and ended; its retry comes while another job holds the lane's one slot
    gate = [("limit:late", 1, LIMIT)]
    assert lanes.admit("m1", "q", body(1), gate)[0] == THROUGH
    assert lanes.admit("m2", "q", body(2), gate)[0] == WAITING
    assert [a.message_id for a in lanes.release("m1", gate)] == ["m2"]
    lanes.release("m2", gate)
    assert lanes.admit("m3", "q", body(3), gate)[0] == THROUGH
    assert lanes.admit("m2", "q", body(20), gate)[0] == WAITING
    # when the confirmation lands at last (the buffer's next flush)
    buffered = Lanes(state, prefix=prefix, hold_ms=60_000, buffer=WriteBuffer(
        state, interval_ms=60_000))
    buffered.published(["m2"])
    assert lanes.waiting("limit:late") == ["m2"]  # nothing written yet
    assert buffered.buffer is not None
    buffered.buffer.flush()
    # then the retry still waits with its record, and the next release lets it in
    assert [(a.message_id, a.body) for a in lanes.release("m3", gate)] == [("m2", body(20))]


def test_a_limit_of_n_admits_n_and_a_new_job_queues_behind_those_waiting(lanes: Lanes):
    gate = [("limit:k", 2, LIMIT)]
    assert [lanes.admit(f"m{n}", "q", body(n), gate)[0] for n in range(4)] == [
        THROUGH, THROUGH, WAITING, WAITING]
    assert [a.message_id for a in lanes.release("m0", gate)] == ["m2"]
    # a newcomer does not overtake m3, even with room briefly free after m1 ends
    assert [a.message_id for a in lanes.release("m1", gate)] == ["m3"]
    assert lanes.admit("m4", "q", body(4), gate) == (WAITING, [])


def test_a_group_then_a_limit_admit_in_turn(lanes: Lanes):
    # two subscriptions' groups behind one queue-wide limit of 1
    a, b, limit = ("group:q:a", 1, GROUP), ("group:q:b", 1, GROUP), ("limit:q", 1, LIMIT)
    assert lanes.admit("a1", "q", body(1), [a, limit])[0] == THROUGH
    assert lanes.admit("a2", "q", body(2), [a, limit])[0] == WAITING  # waits for its group
    assert lanes.admit("b1", "q", body(3), [b, limit])[0] == WAITING  # waits for the limit
    # a1's run ends but it retries: it lets go of the limit only, and b1 goes through
    assert [x.message_id for x in lanes.release("a1", [limit])] == ["b1"]
    assert lanes.waiting("group:q:a") == ["a2"]
    # a1 ends for good: a2 passes its group and waits at the limit b1 holds
    assert lanes.release("a1", [a]) == []
    assert lanes.waiting("limit:q") == ["a2"]
    assert [x.message_id for x in lanes.release("b1", [b, limit])] == ["a2"]


def test_a_claim_keeps_a_hold_and_a_lost_place_goes_back_to_the_head(lanes: Lanes):
    gate = [("limit:k", 1, LIMIT)]
    assert lanes.admit("m1", "q", body(1), gate)[0]
    assert lanes.claim("m1", gate) is True
    assert lanes.admit("m2", "q", body(2), gate)[0] == WAITING
    # m3 lost its hold (lapsed) while m1 holds the only slot: it must not run, and waits
    # ahead of the jobs that came after it
    assert lanes.claim("m3", gate) is False
    assert lanes.hold_back("m3", "q", body(3), gate) is False
    assert lanes.waiting("limit:k") == ["m3", "m2"]


def test_a_lapsed_hold_lets_the_next_job_through_at_the_next_sweep(state, prefix):
    lanes = Lanes(state, prefix=prefix, hold_ms=300)
    gate = [("group:q:g", 1, GROUP)]
    assert lanes.admit("lost", "q", body(1), gate)[0]  # its message is deleted by hand
    assert lanes.admit("next", "q", body(2), gate)[0] == WAITING
    assert lanes.sweep() == []  # not lapsed yet
    time.sleep(0.4)
    assert [a.message_id for a in lanes.sweep()] == ["next"]


def test_an_admitted_job_not_confirmed_published_is_handed_out_again(lanes: Lanes):
    gate = [("limit:k", 1, LIMIT)]
    lanes.admit("m1", "q", body(1), gate)
    lanes.admit("m2", "q", body(2), gate)
    assert [a.message_id for a in lanes.release("m1", gate)] == ["m2"]
    # the releasing worker died before publishing m2
    assert lanes.sweep() == []
    time.sleep(0.3)
    assert [(a.message_id, a.body) for a in lanes.sweep()] == [("m2", body(2))]
    lanes.published(["m2"])
    time.sleep(0.3)
    assert lanes.sweep() == []


def test_a_copy_of_an_admitted_job_enqueued_before_its_publish_was_confirmed_goes_through(
        lanes: Lanes):
    # m2 was admitted by a release whose worker died before confirming its publish; the
    # published copy ran, was deferred, and comes due: it is not a job waiting in a lane
    gate = [("group:q:g", 1, GROUP)]
    lanes.admit("m1", "q", body(1), gate)
    lanes.admit("m2", "q", body(2), gate)
    assert [a.message_id for a in lanes.release("m1", gate)] == ["m2"]
    assert lanes.admit("m2", "q", body(2), gate) == (THROUGH, [])
    # and the copy is the one that runs: the sweep does not hand out another
    time.sleep(0.3)
    assert lanes.sweep() == []
    assert lanes.holders("group:q:g") == ["m2"]


def test_a_resend_of_a_job_waiting_in_its_lane_stays_one_job(lanes: Lanes):
    gate = [("limit:k", 1, LIMIT)]
    lanes.admit("m1", "q", body(1), gate)
    assert lanes.admit("m2", "q", body(2), gate) == (WAITING, [])
    assert lanes.admit("m2", "q", body(2), gate) == (WAITING, [])
    assert lanes.waiting("limit:k") == ["m2"]


def test_nothing_is_left_once_every_job_ended(lanes: Lanes, state, prefix):
    gate = [("group:q:g", 1, GROUP), ("limit:q", 3, LIMIT)]
    for n in range(5):
        lanes.admit(f"m{n}", "q", body(n), gate)
    for n in range(5):
        admitted = lanes.release(f"m{n}", gate)
        lanes.published([a.message_id for a in admitted])
    assert list(state.scan_iter(f"{prefix}:lanes:*")) == []


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_with_the_queues_in_its_redis_a_lane_publishes_what_it_admits_itself(
        build_switchyard, queue):
    # given the default deployment: the Redis broker's queues in the state store's Redis
    sy = build_switchyard()
    broker, lanes = sy.broker, sy.state.lanes
    assert lanes.direct, "the lanes were not told the broker's queues are theirs"

    @dramatiq.actor(broker=broker, queue_name=queue, concurrency=1)
    def limited(n: int) -> None:
        pass

    # when three jobs are sent through a limit of one, the last with a priority
    first = limited.send(1)
    second = limited.send(2)
    third = limited.send_with_options(args=(3,), **{PRIORITY: 4})  # type: ignore[arg-type]
    base = f"{broker.namespace}:{queue}"
    assert broker.client.lrange(base, 0, -1) == [first.options["redis_message_id"].encode()]
    assert lanes.waiting(f"limit:{limited.actor_name}") == [second.message_id,
                                                            third.message_id]
    bell = broker.doorbell_key(queue)
    broker.client.delete(bell)

    # then each release puts the next job on its queue itself (the caller has nothing
    # to publish), its body under its Redis id, a priority on its priority's list, the
    # doorbell rung; and nothing is left for the sweep to hand out again
    gates = [(f"limit:{limited.actor_name}", 1, LIMIT)]
    assert lanes.release(first.message_id, gates) == []
    second_id = json.loads(broker.client.hget(f"{base}.msgs", second_id_of(broker, base))
                           )["message_id"]
    assert second_id == second.message_id
    assert broker.client.llen(bell) == 1
    assert lanes.release(second.message_id, gates) == []
    [listed] = broker.client.lrange(f"{base}.p4", 0, -1)
    assert json.loads(broker.client.hget(f"{base}.msgs", listed))["message_id"] == \
        third.message_id
    assert broker.client.zcard(f"{lanes.prefix}:lanes:moving") == 0
    assert broker.client.hlen(f"{lanes.prefix}:lanes:jobs") == 0
    # and a consumer fetches them: the priority first
    fetched = broker.fetch(queue, 10, maintain=False)
    assert [json.loads(b)["message_id"] for b in fetched] == [
        third.message_id, first.message_id, second.message_id]


def second_id_of(broker, base: str) -> bytes:
    return broker.client.lrange(base, 0, -1)[-1]


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_record_an_older_release_left_in_a_lane_is_published_with_its_priority(
        build_switchyard, queue):
    # given a job waiting in a lane under an older release's record (no Redis id or
    # priority beside its body)
    sy = build_switchyard()
    broker, lanes = sy.broker, sy.state.lanes

    @dramatiq.actor(broker=broker, queue_name=queue, concurrency=1)
    def limited(n: int) -> None:
        pass

    first = limited.send(1)
    waiting = limited.send_with_options(args=(2,), **{PRIORITY: 6})  # type: ignore[arg-type]
    jobs = f"{lanes.prefix}:lanes:jobs"
    record = json.loads(broker.client.hget(jobs, waiting.message_id))
    assert (record["r"], record["p"]) == (waiting.options["redis_message_id"], 6)
    del record["r"], record["p"]
    broker.client.hset(jobs, waiting.message_id, json.dumps(record))
    # when the job ahead of it ends, it is published here all the same, on its priority
    assert lanes.release(first.message_id, [(f"limit:{limited.actor_name}", 1, LIMIT)]) == []
    base = f"{broker.namespace}:{queue}"
    assert broker.client.lrange(f"{base}.p6", 0, -1) == [
        waiting.options["redis_message_id"].encode()]

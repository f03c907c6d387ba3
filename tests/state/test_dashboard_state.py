"""The state the dashboard reads is bounded and right: time buckets expire by the
settings, wait percentiles come from the histogram, dead-letter filters stay true after
replays and purges and are capped like the dead letters, and worker details expire."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from state.timeline import percentile
from tests.support.waiting import wait_for

REDIS_ONLY = pytest.mark.parametrize("broker_kind", ["redis"])


def dead(sy: Any, queue: str, actor: str, error: str) -> str:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=(), kwargs={}, options={})
    sy.state.dead_letters.add(message, {"error": error, "attempts": 1})
    return message.message_id


def test_percentiles_are_interpolated_within_their_bucket() -> None:
    # 90 in (0, 5], 8 in (50, 100], 2 in (500, 1000]
    waits = {"5": 90, "100": 8, "1000": 2}

    assert percentile(waits, 0.5) == 2.8  # the 50th of 90 spread over (0, 5]
    assert percentile(waits, 0.95) == 81.2  # the 5th of 8 over (50, 100]
    assert percentile(waits, 0.99) == 750.0
    assert percentile({"250": 4}, 0.95) == 242.5  # no longer flat on the bound
    assert percentile({"+Inf": 3}, 0.5) == 3_600_000.0
    assert percentile({}, 0.5) is None


@REDIS_ONLY
def test_every_time_bucket_expires_by_the_settings(build_switchyard: Any, start_worker: Any,
                                                   queue: str, prefix: str) -> None:
    # given short bucket TTLs, and jobs that ran: one done, one dead
    sy = build_switchyard(timeline_minute_ttl_ms=3_600_000, timeline_hour_ttl_ms=86_400_000)

    @dramatiq.actor(broker=sy.broker, queue_name=queue, max_retries=0)
    def work(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    start_worker(sy)
    work.send(False)
    work.send(True)

    # when their counts are flushed
    def counted() -> dict[str, Any] | None:
        sy.state.buffer.flush()
        point = sy.state.timeline.series("minute", queue)["points"][-1]
        return point if point["done"] and point["dead"] else None

    point = wait_for(counted, what="both counted")

    # then the buckets count them and every bucket key has its TTL
    assert (point["done"], point["dead"]) == (1, 1) and point["wait_p50_ms"] is not None
    per_actor = sy.state.timeline.actor_series("minute")["actors"]["work"]
    assert per_actor["total"]["runs"] == 2 and per_actor["total"]["failed"] == 1
    assert per_actor["total"]["failure_rate"] == 0.5
    assert per_actor["points"][-1]["run_p99_ms"] is not None
    keys = list(sy.state.client.scan_iter(f"{prefix}:timeline:*"))
    assert {k.decode().split(":")[2] for k in keys} == {"m", "h"}
    for key in keys:
        limit = 3_600_000 if b":m:" in key else 86_400_000
        assert 0 < sy.state.client.pttl(key) <= limit


@REDIS_ONLY
def test_filters_forget_replayed_and_purged_dead_letters(build_switchyard: Any,
                                                         queue: str) -> None:
    # given dead letters of two actors
    sy = build_switchyard()
    store = sy.state.dead_letters
    gone = [dead(sy, queue, "a", "PermanentError") for _ in range(3)]
    dead(sy, queue, "b", "NotFound")

    # when two of actor a's are replayed
    store.replay(sy.broker, queue, gone[:2])

    # then the filter finds only what is left, and the facets list what was seen
    items, matching = store.page(queue, filters={"actor": "a"})
    assert [i["message_id"] for i in items] == [gone[2]] and matching == 1
    assert store.facet_values(queue, "actor") == ["a", "b"]
    assert store.page(queue, filters={"actor": "a", "error": "NotFound"}) == ([], 0)

    # and after a purge nothing is left of the filters
    store.purge(queue)
    assert store.page(queue, filters={"actor": "b"}) == ([], 0)
    assert store.facet_values(queue, "actor") == []


@REDIS_ONLY
def test_filter_indexes_are_capped_and_expire_like_the_dead_letters(build_switchyard: Any,
                                                                    queue: str,
                                                                    prefix: str) -> None:
    sy = build_switchyard(dead_letter_keep=3, dead_letter_ttl_ms=60_000)
    for _ in range(5):
        dead(sy, queue, "a", "PermanentError")

    items, matching = sy.state.dead_letters.page(queue, filters={"actor": "a"})

    kept = {record["message_id"] for record in sy.state.dead_letters.list(queue)}
    assert {i["message_id"] for i in items} == kept and len(kept) == matching == 3
    for key in sy.state.client.scan_iter(f"{prefix}:dlq:q:{queue}:*"):
        assert 0 < sy.state.client.pttl(key) <= 60_000, key


@REDIS_ONLY
def test_worker_details_expire_and_a_silent_worker_is_marked(build_switchyard: Any) -> None:
    sy = build_switchyard(worker_heartbeat_ms=100)
    workers = sy.state.workers
    workers.beat("w1", {"id": "w1", "host": "h", "pid": 1, "in_flight": 2})

    [alive] = workers.all()
    assert alive["silent"] is False and alive["in_flight"] == 2
    assert 0 < sy.state.client.pttl(workers.info_key) <= 100 * 100

    [silent] = wait_for(lambda: [w for w in workers.all() if w["silent"]], what="silent")
    assert silent["id"] == "w1"

"""Dead letters: depth, replay of many and all, purge, on both brokers."""

from __future__ import annotations

import dramatiq

from switchyard.base.errors import PermanentError
from tests.support.jobs import finished, status
from tests.support.waiting import wait_for


def test_replay_all_and_purge(build_switchyard, start_worker, queue):
    # given three dead letters
    sy = build_switchyard()
    runs: list[int] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def reject(n: int) -> None:
        runs.append(n)
        if len(runs) <= 3:
            raise PermanentError("rejected")

    start_worker(sy)
    messages = [reject.send(n) for n in range(3)]
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="dead letters")
    assert sy.state.dead_letters.depth(queue) == 3 and sy.state.dead_letters.queues() == [queue]

    # when all are replayed (and now succeed)
    replayed = sy.state.dead_letters.replay(sy.broker, queue)

    # then each ran once more, is done, and the dead-letter queue is empty
    assert sorted(replayed) == sorted(m.message_id for m in messages)
    wait_for(lambda: len(runs) == 6, what="replays")
    wait_for(lambda: all(status(sy, m.message_id) == "done" for m in messages), what="done")
    assert sy.state.dead_letters.depth(queue) == 0 and sorted(runs[3:]) == [0, 1, 2]
    assert sy.state.dead_letters.purge(queue) == 0


def test_replay_of_selected_ids_leaves_the_others(build_switchyard, start_worker, queue):
    sy = build_switchyard()

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def reject(n: int) -> None:
        raise PermanentError("rejected")

    messages = [reject.send(n) for n in range(3)]
    start_worker(sy)
    wait_for(lambda: finished(sy, *(m.message_id for m in messages)), what="dead letters")
    sy.broker.join(queue, timeout=10_000)
    chosen = [messages[0].message_id, "no-such-id"]
    assert sy.state.dead_letters.replay(sy.broker, queue, chosen) == [messages[0].message_id]
    assert {d["message_id"] for d in sy.state.dead_letters.list(queue)} >= {
        messages[1].message_id, messages[2].message_id}
    assert sy.state.dead_letters.purge(queue) >= 2


def test_delayed_send_runs_no_earlier_than_its_delay(build_switchyard, start_worker, queue):
    import time

    sy = build_switchyard()
    started: list[float] = []

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def later() -> None:
        started.append(time.time())

    sent_at = time.time()
    message = later.send_with_options(delay=1_500)
    sy.state.buffer.flush()
    assert sy.state.history.get(message.message_id)["status"] == "queued"
    assert sy.queues.depth(queue) == 1  # before a worker holds it (RabbitMQ counts ready ones)
    start_worker(sy)
    wait_for(lambda: finished(sy, message.message_id), what="done")
    assert started[0] - sent_at >= 1.5


def broker_dead_messages(sy, queue: str) -> int:
    """Messages in the broker's own dead-letter queue (`<queue>.XQ`) for `queue`."""
    from dramatiq.common import xq_name

    if sy.settings.uses_rabbitmq:
        declared = sy.broker.channel.queue_declare(xq_name(queue), durable=True, passive=True)
        return int(declared.method.message_count)
    return int(sy.broker.client.zcard(f"{sy.broker.namespace}:{xq_name(queue)}"))


def test_a_dead_letter_the_store_refuses_lands_in_the_brokers_own_queue(
    build_switchyard, start_worker, queue, state, prefix
):
    # given a state store that answers but refuses the dead-letter write (the queue's
    # dead-letter index is a key of another type, as a full or broken Redis would refuse)
    sy = build_switchyard()
    state.set(f"{prefix}:dlq:q:{queue}", "not a sorted set")

    @dramatiq.actor(broker=sy.broker, queue_name=queue)
    def reject() -> None:
        raise PermanentError("rejected")

    # when a job fails for good
    start_worker(sy)
    message = reject.send()

    # then it is not lost: the broker keeps it in its own dead-letter queue
    wait_for(lambda: broker_dead_messages(sy, queue) == 1, what="the message in .XQ")
    assert status(sy, message.message_id) == "failed"
    assert sy.state.dead_letters.show(message.message_id) is None

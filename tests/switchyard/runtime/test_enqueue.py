"""The one way in: validation, the duplicate rules and delays, as every producer sees them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field

from switchyard.base.errors import DuplicateJob, InvalidOptions, InvalidPayload, UnknownJob
from switchyard.base.keys import JobKey
from switchyard.runtime.enqueue import Enqueued, Request, enqueue, enqueue_many
from switchyard.runtime.jobs import Context, Payload, job
from tests.support.jobs import status
from tests.support.waiting import wait_for


class Charge(Payload):
    order_id: str = Field(min_length=1)
    amount: int = Field(ge=1)
    note: str | None = None


@pytest.fixture
def charges(build_switchyard: Any, queue: str) -> Any:
    """A Switchyard with a `charge` job that records each run's payload and key."""
    sy = build_switchyard()
    runs: list[tuple[dict[str, Any], str]] = []

    @job(Charge, actor_name=f"charge_{queue}", queue_name=queue)
    def charge(ctx: Context, payload: Charge) -> None:
        runs.append((payload.model_dump(by_alias=True), str(ctx.key)))

    sy.declare([charge])
    sy.runs = runs  # type: ignore[attr-defined]
    return sy


def name(sy: Any) -> str:
    return next(iter(sy.jobs))


def test_an_unknown_job_type_is_refused_naming_the_known_ones(charges: Any) -> None:
    with pytest.raises(UnknownJob) as refused:
        enqueue(charges, "no_such_job", {})
    assert "no_such_job" in refused.value.message and name(charges) in refused.value.message


def test_an_invalid_payload_names_the_field_not_the_value(charges: Any) -> None:
    with pytest.raises(InvalidPayload) as refused:
        enqueue(charges, name(charges), {"orderId": "o-1", "amount": "lots-of-money"})
    assert "amount" in refused.value.message and "lots-of-money" not in refused.value.message


@pytest.mark.parametrize("options", [{"delay": -1}, {"delay": 7 * 86_400_000},
                                     {"key": ""}, {"key": "k" * 201}])
def test_out_of_range_options_are_refused(charges: Any, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptions):
        enqueue(charges, name(charges), {"orderId": "o-1", "amount": 1}, **options)


def test_the_payload_is_queued_in_the_seeds_shape(charges: Any, start_worker: Any) -> None:
    # given snake_case names from a Python producer
    sent = enqueue(charges, name(charges), {"order_id": "o-1", "amount": 5})
    start_worker(charges)
    wait_for(lambda: status(charges, sent.message_id) == "done", what="done")
    # the job saw the camelCase payload, unset fields left out, and its key is the id
    assert charges.runs == [({"orderId": "o-1", "amount": 5, "note": None},
                             f"{name(charges)}:{sent.message_id}")]


def test_skip_queues_duplicates_and_runs_the_key_once(charges: Any, start_worker: Any) -> None:
    payload = {"orderId": "o-2", "amount": 5}
    first = enqueue(charges, name(charges), payload, key="order-2")
    second = enqueue(charges, name(charges), payload, key="order-2")
    assert first.message_id != second.message_id and not second.duplicate
    start_worker(charges)
    wait_for(lambda: {status(charges, first.message_id), status(charges, second.message_id)}
             == {"done", "skipped"}, what="one done, one skipped")
    assert [key for _, key in charges.runs] == [f"{name(charges)}:order-2"]


def test_refuse_names_the_job_that_has_the_key(charges: Any, start_worker: Any) -> None:
    payload = {"orderId": "o-3", "amount": 5}
    first = enqueue(charges, name(charges), payload, key="order-3", on_duplicate="refuse")
    with pytest.raises(DuplicateJob) as queued:
        enqueue(charges, name(charges), payload, key="order-3", on_duplicate="refuse")
    assert queued.value.existing == first.message_id
    start_worker(charges)
    wait_for(lambda: status(charges, first.message_id) == "done", what="done")
    with pytest.raises(DuplicateJob) as done:  # done is still a duplicate, for the key's TTL
        enqueue(charges, name(charges), payload, key="order-3", on_duplicate="refuse")
    assert done.value.existing == first.message_id
    assert len(charges.runs) == 1


def test_existing_returns_the_first_job(charges: Any) -> None:
    payload = {"orderId": "o-4", "amount": 5}
    first = enqueue(charges, name(charges), payload, key="order-4", on_duplicate="existing")
    again = enqueue(charges, name(charges), payload, key="order-4", on_duplicate="existing")
    assert again == type(again)(first.message_id, duplicate=True)
    assert charges.queues.depth(charges.jobs[name(charges)].queue_name) == 1


def test_a_delayed_job_waits_in_the_delay_queue(charges: Any) -> None:
    enqueue(charges, name(charges), {"orderId": "o-5", "amount": 5}, delay=60_000)
    counts = charges.queues.counts(charges.jobs[name(charges)].queue_name)
    assert (counts.waiting, counts.delayed) == (0, 1)


def test_a_producer_dying_after_its_enqueue_leaves_no_phantom_job(
    charges: Any, start_worker: Any
) -> None:
    # given a job queued with its key, whose producer died before recording the key
    payload = {"orderId": "o-6", "amount": 5}
    queued = enqueue(charges, name(charges), payload, key="order-6")  # the skip rule records none
    # when the producer's retry asks for the existing job
    again = enqueue(charges, name(charges), payload, key="order-6", on_duplicate="existing")
    # then it gets a job that exists, and the key's side effect runs once
    start_worker(charges)
    ids = {queued.message_id, again.message_id}
    wait_for(lambda: {status(charges, i) for i in ids} <= {"done", "skipped"}
             and None not in {status(charges, i) for i in ids}, what="both finished")
    assert len(charges.runs) == 1


def test_enqueue_many_answers_each_request_as_enqueue_would(
    charges: Any, start_worker: Any
) -> None:
    sy, job_name = charges, name(charges)
    held = enqueue(sy, job_name, {"orderId": "o-7", "amount": 5}, key="order-7")
    sy.state.keys.claim(JobKey(job_name, "order-7"), held.message_id, 60_000)
    results = enqueue_many(sy, [
        Request(job_name, {"orderId": "o-8", "amount": 1}, key="order-8",
                on_duplicate="existing"),
        Request(job_name, {"orderId": "o-9", "amount": "lots-of-money"}),
        Request(job_name, {"orderId": "o-8", "amount": 1}, key="order-8",
                on_duplicate="existing"),  # the first's key, within the batch
        Request(job_name, {"orderId": "o-7", "amount": 5}, key="order-7",
                on_duplicate="refuse"),  # held before the batch
        Request("no_such_job", {}),
        Request(job_name, {"orderId": "o-10", "amount": 2}),
    ])
    first, invalid, again, refused, unknown, last = results
    assert isinstance(first, Enqueued) and not first.duplicate
    assert isinstance(invalid, InvalidPayload) and "lots-of-money" not in invalid.message
    assert again == Enqueued(first.message_id, duplicate=True)
    assert isinstance(refused, DuplicateJob) and refused.existing == held.message_id
    assert isinstance(unknown, UnknownJob)
    assert isinstance(last, Enqueued) and not last.duplicate
    # the first is now the key's holder, as a one-by-one enqueue would have left it, and
    # only the three accepted jobs were queued
    assert sy.state.keys.holder(JobKey(job_name, "order-8")) == first.message_id
    assert sy.queues.depth(sy.jobs[job_name].queue_name) == 3
    start_worker(sy)
    ids = [held.message_id, first.message_id, last.message_id]
    wait_for(lambda: all(status(sy, i) == "done" for i in ids), what="three done")
    assert sorted(payload["orderId"] for payload, _ in sy.runs) == ["o-10", "o-7", "o-8"]


def test_enqueue_many_keeps_the_batch_in_order(charges: Any, start_worker: Any) -> None:
    job_name = name(charges)
    sent = enqueue_many(charges, [Request(job_name, {"orderId": f"o-{n}", "amount": 1})
                                  for n in range(30)])
    assert all(isinstance(result, Enqueued) for result in sent)
    start_worker(charges, threads=1)
    wait_for(lambda: len(charges.runs) == 30, what="all run")
    assert [payload["orderId"] for payload, _ in charges.runs] == [f"o-{n}" for n in range(30)]

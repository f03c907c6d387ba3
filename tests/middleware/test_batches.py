"""Batches: a callback that runs once, when every member has ended, with exact counts,
on both brokers: under retries, duplicates and a batch sent twice."""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, ConfigDict

from switchyard.base.errors import PermanentError
from switchyard.runtime.batches import send_batch
from switchyard.runtime.jobs import Context, job
from tests.support.jobs import finished
from tests.support.waiting import wait_for


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int
    outcome: str = "ok"


class Counts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batchId: str  # noqa: N815 (the callback's payload is camelCase on the wire)
    successCount: int  # noqa: N815
    failureCount: int  # noqa: N815
    total: int
    note: str = ""


def declare(sy: Any, queue: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    callbacks: list[dict[str, Any]] = []
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    @job(Member, actor_name="batch_member", queue_name=queue, max_retries=3, min_backoff=50,
         max_backoff=100)
    def batch_member(ctx: Context, payload: Member) -> dict[str, Any]:
        with lock:
            attempts[str(payload.n)] = attempts.get(str(payload.n), 0) + 1
            tries = attempts[str(payload.n)]
        if payload.outcome == "dead":
            raise PermanentError("refused for good")
        if payload.outcome == "flaky" and tries == 1:
            raise RuntimeError("try again")
        return {"ok": payload.outcome != "refused"}

    @job(Counts, actor_name="batch_callback", queue_name=queue, max_retries=0)
    def batch_callback(ctx: Context, payload: Counts) -> dict[str, Any]:
        with lock:
            callbacks.append(payload.model_dump())
        return {"successCount": payload.successCount, "failureCount": payload.failureCount}

    sy.declare([batch_member, batch_callback])
    return callbacks, attempts


def test_the_callback_runs_once_with_the_counts_when_the_last_member_ends(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    callbacks, attempts = declare(sy, queue)
    start_worker(sy, threads=4)
    outcomes = ["ok", "ok", "flaky", "refused", "dead"]
    sent = send_batch(sy, [("batch_member", {"n": n, "outcome": o})
                           for n, o in enumerate(outcomes)],
                      callback=("batch_callback", {"note": "n"}))

    wait_for(lambda: finished(sy, sent.callback_id), timeout=30, what="the callback")
    assert callbacks == [{"batchId": sent.batch_id, "successCount": 3, "failureCount": 2,
                          "total": 5, "note": "n"}]
    assert attempts["2"] == 2  # the flaky one was retried, and counted once
    progress = sy.state.batches.get(sent.batch_id)
    assert (progress["done"], progress["failed"], progress["pending"]) == (3, 2, 0)
    assert progress["fired_at"] is not None
    assert sy.state.history.get(sent.callback_id)["result"] == {"successCount": 3,
                                                                  "failureCount": 2}


def test_a_batch_sent_again_runs_its_members_and_its_callback_once(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    callbacks, attempts = declare(sy, queue)
    jobs = [("batch_member", {"n": n}) for n in range(4)]
    first = send_batch(sy, jobs, callback=("batch_callback", {}), batch_id="fan-out-1")
    again = send_batch(sy, jobs, callback=("batch_callback", {}), batch_id="fan-out-1")
    assert again.message_ids == first.message_ids and again.callback_id == first.callback_id
    start_worker(sy, threads=4)

    wait_for(lambda: finished(sy, first.callback_id), timeout=30, what="the callback")
    wait_for(lambda: finished(sy, *first.message_ids), timeout=30, what="the members")
    assert [c["successCount"] for c in callbacks] == [4]
    assert sorted(attempts) == ["0", "1", "2", "3"] and set(attempts.values()) == {1}


def test_a_batch_with_nothing_to_run_calls_back_at_once(build_switchyard, start_worker, queue):
    sy = build_switchyard()
    callbacks, _ = declare(sy, queue)
    start_worker(sy)
    sent = send_batch(sy, [], callback=("batch_callback", {}), failed=2)
    wait_for(lambda: finished(sy, sent.callback_id), what="the callback")
    assert [(c["successCount"], c["failureCount"], c["total"]) for c in callbacks] == [(0, 2, 2)]


def test_a_bad_callback_payload_is_refused_before_anything_is_sent(build_switchyard, queue):
    import pytest

    from switchyard.base.errors import InvalidPayload

    sy = build_switchyard()
    declare(sy, queue)
    with pytest.raises(InvalidPayload):
        send_batch(sy, [("batch_member", {"n": 1})], callback=("batch_callback", {"x": 1}))
    assert sy.queues.counts(queue).waiting == 0


def test_a_batchs_progress_is_in_the_api_and_the_cli(build_switchyard, queue, test_env,
                                                     broker_kind):
    import json
    import os
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from tests.support.processes import ROOT
    from web.app import create_app

    token = "tok-0123456789abcdef0123456789"
    sy = build_switchyard(web_username="op", web_password="pw-correct-horse-battery",
                          api_token=token)
    declare(sy, queue)
    sent = send_batch(sy, [("batch_member", {"n": n}) for n in range(3)],
                      callback=("batch_callback", {}))
    client = TestClient(create_app(sy), headers={"Authorization": f"Bearer {token}"})
    answer = client.get(f"/api/batches/{sent.batch_id}")
    assert answer.status_code == 200
    assert {k: answer.json()[k] for k in ("total", "done", "failed", "pending")} == {
        "total": 3, "done": 0, "failed": 0, "pending": 3}
    assert client.get("/api/batches/nosuch").status_code == 404
    shown = subprocess.run([sys.executable, "-m", "switchyard.cli", "batches", "show",
                            sent.batch_id], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, **test_env,
                                **({"BROKER_URL": str(sy.settings.queue_url)}
                                   if broker_kind == "rabbitmq" else {})}, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["pending"] == 3


def test_a_member_is_counted_before_its_key_is_marked_done(build_switchyard, start_worker,
                                                            queue):
    # given a batch of one refused and one delivered member, and a look at the batch's
    # counts at the moment each member's key is marked done
    sy = build_switchyard()
    declare(sy, queue)
    seen: list[tuple[int, int]] = []
    mark = sy.state.keys.finish

    def finish(key: Any, token: str, ttl: int, **kwargs: Any) -> bool:
        if ttl and key.value.startswith("batch:") and "callback" not in key.actor:
            progress = sy.state.batches.get(key.value.split(":")[1]) or {}
            seen.append((progress.get("done", 0), progress.get("failed", 0)))
        return mark(key, token, ttl, **kwargs)

    sy.state.keys.finish = finish  # type: ignore[method-assign]
    start_worker(sy, threads=1)

    # when they run
    sent = send_batch(sy, [("batch_member", {"n": 0, "outcome": "refused"}),
                           ("batch_member", {"n": 1})], callback=("batch_callback", {}))
    wait_for(lambda: finished(sy, sent.callback_id), timeout=30, what="the callback")

    # then each was counted before it was done: a worker killed between the two leaves a
    # member whose redelivery, skipped as done, has nothing left to count (a refusal
    # counted as a success was the failure this guards against)
    assert sorted(seen) == [(0, 1), (1, 1)], seen


class Fanout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: int


def test_a_job_that_sends_a_batch_shows_the_batchs_progress(build_switchyard, start_worker,
                                                            queue):
    from fastapi.testclient import TestClient

    from web.app import create_app

    token = "tok-0123456789abcdef0123456789"
    sy = build_switchyard(api_token=token)
    callbacks, _ = declare(sy, queue)

    @job(Fanout, actor_name="batch_parent", queue_name=queue)
    def batch_parent(ctx: Context, payload: Fanout) -> str:
        return send_batch(ctx.app, [("batch_member", {"n": n, "outcome": "dead" if n == 0
                                                      else "ok"})
                                    for n in range(payload.members)],
                          callback=("batch_callback", {})).batch_id

    sy.declare([batch_parent])
    start_worker(sy)
    parent = batch_parent.send(members=4)
    wait_for(lambda: callbacks, what="the callback")
    wait_for(lambda: finished(sy, parent.message_id), what="the parent's record")
    client = TestClient(create_app(sy), headers={"Authorization": f"Bearer {token}"})
    shown = client.get(f"/api/jobs/{parent.message_id}").json()
    assert shown["batch_id"] == callbacks[0]["batchId"]
    batch = shown["batch"]
    assert (batch["total"], batch["done"], batch["failed"], batch["pending"]) == (4, 3, 1, 0)
    assert batch["progress"] == 1.0

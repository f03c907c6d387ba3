"""Payloads sealed at rest: bodies, results and dead letters hold no argument in clear;
what cannot be opened (tampered, unknown key id, not sealed) is a dead letter with its
reason; a rotation keeps every stored job runnable after the old key is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import dramatiq
import pytest
from pydantic import BaseModel

from switchyard.base import settings
from switchyard.base.sealing import DEV_KEYS_FILE, Keyring, Sealer, dev_keys, generate_entry
from switchyard.reseal import rotate
from switchyard.runtime.app import App
from switchyard.runtime.jobs import Context, job
from tests.support.jobs import finished
from tests.support.processes import ROOT
from tests.support.waiting import wait_for

SECRET = "ann@example.com +15550001111"
OLD, NEW = generate_entry("old"), generate_entry("new")


class Note(BaseModel):
    text: str


def declare_note(sy: App, queue: str, runs: list[str]) -> dramatiq.Actor[..., Any]:
    @job(Note, actor_name=f"note_{queue}", queue_name=queue, max_retries=0,
         store_results=True)
    def note(ctx: Context, payload: Note) -> dict[str, str]:
        runs.append(payload.text)
        return {"echo": payload.text}

    sy.declare([note])
    assert note.actor is not None
    return note.actor


def stored_bodies(sy: App, queue: str) -> list[bytes]:
    """Every message body the Redis broker holds for `queue` (waiting, delayed, XQ)."""
    broker: Any = sy.broker
    return [body for name in (queue, f"{queue}.DQ", f"{queue}.XQ")
            for body in broker.client.hvals(f"{broker.namespace}:{name}.msgs")]


def dead_letters(sy: App, queue: str, n: int) -> list[dict[str, Any]]:
    return wait_for(lambda: (lambda found: found if len(found) >= n else None)(
        sy.state.dead_letters.list(queue)), timeout=20, what=f"{n} dead letter(s)")


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_queued_body_keeps_its_envelope_readable_and_its_arguments_sealed(
        build_switchyard, queue):
    sy = build_switchyard()
    note = declare_note(sy, queue, [])
    message = note.send_with_options(kwargs={"text": SECRET}, delay=60_000)
    (body,) = stored_bodies(sy, queue)
    assert SECRET.encode() not in body
    fields = json.loads(body)
    assert (fields["message_id"], fields["actor_name"]) == (message.message_id, note.actor_name)
    assert fields["options"]["eta"] and "args" not in fields and "kwargs" not in fields
    assert fields["sealed"].startswith("sy1.test.")


def test_a_sealed_job_runs_and_its_result_and_history_are_sealed(
        build_switchyard, start_worker, queue):
    sy = build_switchyard()
    runs: list[str] = []
    note = declare_note(sy, queue, runs)
    start_worker(sy)
    message = note.send(text=SECRET)
    backend = sy.broker.get_results_backend()
    assert backend.get_result(message, block=True, timeout=10_000) == {"echo": SECRET}
    assert runs == [SECRET]
    wait_for(lambda: finished(sy, message.message_id), what="the job's record")
    assert sy.state.history.get(message.message_id)["result"] == {"echo": SECRET}
    for key in sy.state.client.scan_iter(f"{sy.settings.key_prefix}*", count=1000):
        kind = sy.state.client.type(key)
        if kind == b"hash":
            assert SECRET.encode() not in b"".join(sy.state.client.hvals(key))
        elif kind == b"list":
            assert SECRET.encode() not in b"".join(sy.state.client.lrange(key, 0, -1))


def tamper(body: bytes) -> bytes:
    fields = json.loads(body)
    version, key_id, blob = fields["sealed"].split(".")
    flipped = ("A" if blob[20] != "A" else "B")
    fields["sealed"] = f"{version}.{key_id}.{blob[:20]}{flipped}{blob[21:]}"
    return json.dumps(fields).encode()


def other_key(body: bytes) -> bytes:
    fields = json.loads(body)
    fields["sealed"] = fields["sealed"].replace("sy1.test.", "sy1.gone.", 1)
    return json.dumps(fields).encode()


def moved(body: bytes) -> bytes:
    fields = json.loads(body)  # the seal is bound to the message id
    fields["message_id"] = "0" * 8 + fields["message_id"][8:]
    return json.dumps(fields).encode()


def plain(body: bytes) -> bytes:
    fields = json.loads(body)
    del fields["sealed"]
    return json.dumps({**fields, "args": [], "kwargs": {"text": SECRET}}).encode()


@pytest.mark.parametrize(("change", "reason"), [
    (tamper, "changed after sealing"), (other_key, "key id 'gone', not in PAYLOAD_KEYS"),
    (moved, "changed after sealing"), (plain, "the body is not sealed"),
])
def test_a_body_that_cannot_be_opened_is_a_dead_letter_with_its_reason(
        build_switchyard, start_worker, queue, change, reason, caplog):
    # given a sealed message, changed on its way (or sent by a producer without keys)
    sy = build_switchyard()
    runs: list[str] = []
    note = declare_note(sy, queue, runs)
    sealed = note.message_with_options(kwargs={"text": SECRET}).encode()
    from tests.switchyard.brokers.test_undeliverable import publish_raw

    publish_raw(sy, queue, change(sealed))
    # when a worker takes it, then it is dead-lettered at once with the reason
    start_worker(sy)
    (dead,) = dead_letters(sy, queue, 1)
    assert dead["reason"]["error"] == "Undecodable" and reason in dead["reason"]["message"]
    assert dead["reason"]["attempts"] == 1 and not runs
    assert SECRET not in dead["reason"]["message"] and SECRET not in caplog.text
    assert sy.queues.counts(queue).waiting == 0
    assert not stored_secrets(sy)  # the dead letter keeps the body sealed


def test_a_plain_producers_message_is_replayed_sealed_under_its_own_id(
        build_switchyard, start_worker, queue, caplog):
    # given a message from a Dramatiq producer without the keys, refused as not sealed
    sy = build_switchyard()
    runs: list[str] = []
    note = declare_note(sy, queue, runs)
    from tests.switchyard.brokers.test_undeliverable import publish_raw

    sealed = note.message_with_options(kwargs={"text": SECRET}).encode()
    message_id = json.loads(sealed)["message_id"]
    publish_raw(sy, queue, plain(sealed))
    start_worker(sy)
    (dead,) = dead_letters(sy, queue, 1)

    # then `dlq show` and `jobs show` find it by the producer's id, with the reason
    assert dead["message_id"] == message_id and not runs
    assert sy.state.dead_letters.show(message_id)["reason"]["error"] == "Undecodable"
    wait_for(lambda: finished(sy, message_id), what="its history record")
    assert sy.state.history.get(message_id)["error"]["message"].startswith(
        "the body is not sealed")
    assert not stored_secrets(sy) and SECRET not in caplog.text

    # when an operator replays it, then it runs sealed, under the producer's id
    assert sy.state.dead_letters.replay(sy.broker, queue, [message_id]) == [message_id]
    assert not stored_secrets(sy)
    wait_for(lambda: runs, what="the replayed job")
    assert runs == [SECRET]
    wait_for(lambda: (sy.state.history.get(message_id) or {}).get("status") == "done",
             what="its record done")
    assert sy.state.history.get(message_id)["actor"] == note.actor_name
    assert sy.state.dead_letters.show(message_id) is None and not stored_secrets(sy)


def stored_secrets(sy: App) -> list[bytes]:
    """Redis keys of this test (state store and broker) holding SECRET anywhere."""
    found = []
    client: Any = sy.state.client
    for key in client.scan_iter(f"{sy.settings.key_prefix}*", count=1000):
        kind = client.type(key)
        values = (b"".join(client.hvals(key)) if kind == b"hash" else
                  b"".join(client.lrange(key, 0, -1)) if kind == b"list" else
                  client.get(key) or b"" if kind == b"string" else b"")
        if SECRET.encode() in key + values:
            found.append(key)
    return found


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_with_encryption_off_a_plain_producer_is_accepted(build_switchyard, start_worker,
                                                          queue):
    sy = build_switchyard(payload_encryption=False)
    runs: list[str] = []
    note = declare_note(sy, queue, runs)
    from tests.switchyard.brokers.test_undeliverable import publish_raw

    fields = note.message_with_options(kwargs={"text": SECRET}).asdict()
    publish_raw(sy, queue, json.dumps({**fields, "args": list(fields["args"])}).encode())
    start_worker(sy)
    wait_for(lambda: runs or None, what="the plain job to run")
    assert runs == [SECRET]


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_dead_letter_over_the_payload_cap_keeps_its_payload_options_sealed(
        build_switchyard, queue):
    sy = build_switchyard(max_payload_bytes=1_024)
    note = declare_note(sy, queue, [])
    message = note.message_with_options(kwargs={"text": "x" * 2_000},
                                        ingress_body=f"preview {SECRET}")
    sy.state.dead_letters.add(message, {"error": "Boom", "message": "boom", "attempts": 1})
    (dead,) = sy.state.dead_letters.list(queue)
    assert dead["message"]["payload_dropped_bytes"] > 1_024
    assert dead["message"]["options"]["ingress_body"] == f"preview {SECRET}"
    assert not stored_secrets(sy)


def test_rotation_keeps_stored_jobs_runnable_once_the_old_key_is_gone(
        build_switchyard, start_worker, queue, broker_kind):
    # given, under the old key, a job done with its result, a delayed job and a dead letter
    old = build_switchyard(payload_keys=OLD)
    note = declare_note(old, queue, [])
    worker = start_worker(old)
    done = note.send(text="done")
    wait_for(lambda: finished(old, done.message_id), what="the first job")
    worker.stop(timeout=10_000)
    old.state.buffer.flush()
    delayed = note.send_with_options(kwargs={"text": "later"}, delay=1_500)
    dead = note.message_with_options(kwargs={"text": "again"})
    old.state.dead_letters.add(dead, {"error": "Boom", "message": "boom", "attempts": 1})
    # and a batch's callback payload, and a job waiting in its lane behind another
    old.state.batches.open(f"{queue}-batch", 1, {"actor": "note", "queue": queue,
                                                 "payload": {"text": "callback"},
                                                 "message_id": f"{queue}-callback"})
    gate = [(f"limit:{queue}", 1, "limit")]
    first = note.message_with_options(kwargs={"text": "first"})
    waiting = note.message_with_options(kwargs={"text": "waiting"})
    old.state.lanes.admit(first.message_id, queue, first.encode(), gate)
    assert not old.state.lanes.admit(waiting.message_id, queue, waiting.encode(), gate)[0]

    # when the new key goes first, what is stored is rotated, and the old key is removed
    both = build_switchyard(payload_keys=f"{NEW},{OLD}")
    declare_note(both, queue, [])
    counts = rotate(both)
    assert counts == {"dead_letters": 1, "messages": 1, "results": 1, "history": 1,
                      "lanes": 1, "batches": 1, "unopenable": 0, "key_id": "new"}
    if broker_kind == "redis":
        assert all(b'"sy1.new.' in body for body in stored_bodies(both, queue))
    assert rotate(both)["messages"] == 0  # nothing left to re-seal
    new = build_switchyard(payload_keys=NEW)
    runs: list[str] = []
    declare_note(new, queue, runs)

    # then the result and the history still open, and the delayed and replayed jobs run
    backend = new.broker.get_results_backend()
    assert backend.get_result(done) == {"echo": "done"}
    fired = new.state.batches.finish(f"{queue}-batch", "member-0", ok=True)
    assert fired is not None and fired.callback["payload"] == {"text": "callback"}
    [admitted] = new.state.lanes.release(first.message_id, gate)
    assert dramatiq.Message.decode(admitted.body).kwargs == {"text": "waiting"}
    assert new.state.history.get(done.message_id)["result"] == {"echo": "done"}
    start_worker(new)
    assert new.state.dead_letters.replay(new.broker, queue) == [dead.message_id]
    wait_for(lambda: finished(new, delayed.message_id, dead.message_id), timeout=20,
             what="both jobs")
    assert sorted(runs) == ["again", "later"]


def test_keys_rotate_on_the_command_line_reports_counts(test_env, queue):
    env = {**os.environ, **test_env, "PAYLOAD_KEYS": f"{NEW},{OLD}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "switchyard.cli", "keys", "rotate"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts == {"dead_letters": 0, "messages": 0, "results": 0, "history": 0,
                      "lanes": 0, "batches": 0, "unopenable": 0, "key_id": "new"}


def test_keys_generate_prints_an_entry_the_settings_accept(test_env):
    result = subprocess.run([sys.executable, "-m", "switchyard.cli", "keys", "generate"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    entry = result.stdout.strip()
    assert result.returncode == 0 and settings.load(_env_file=None, payload_keys=entry)
    assert Keyring.from_entries([entry]).newest == entry.split(":")[0]


def test_production_refuses_to_start_without_a_key_in_one_line(make_settings, capsys):
    from switchyard.base.sealing import keyring_for

    config = make_settings(switchyard_env="production", payload_keys="",
                           database_url="postgresql://x@127.0.0.1/x")
    with pytest.raises(SystemExit):
        keyring_for(config)
    err = capsys.readouterr().err
    assert err.startswith("switchyard: PAYLOAD_KEYS is required when SWITCHYARD_ENV=production")
    assert err.count("\n") == 1
    off = make_settings(switchyard_env="production", payload_keys="",
                        payload_encryption=False, database_url="postgresql://x@127.0.0.1/x")
    assert keyring_for(off) is None


@pytest.mark.parametrize("value", ["nocolon", "a:short", "bad id:" + "A" * 43, f"{OLD},{OLD}"],
                         ids=["no-colon", "short", "bad-id", "same-id-twice"])
def test_a_bad_key_entry_is_refused_without_echoing_it(value, capsys):
    with pytest.raises(SystemExit):
        settings.load(_env_file=None, payload_keys=value)
    err = capsys.readouterr().err
    secret = value.partition(":")[2][:10]
    assert err.startswith("switchyard: setting PAYLOAD_KEYS is invalid") and err.count("\n") == 1
    assert not secret or secret not in err


def test_development_generates_one_key_under_var_once(tmp_path):
    first = dev_keys(tmp_path)
    assert first == dev_keys(tmp_path) and len(first) == 1
    assert (tmp_path / DEV_KEYS_FILE).stat().st_mode & 0o777 == 0o600


def test_switched_off_seals_nothing_but_still_opens_what_was_sealed():
    ring = Keyring.from_entries([NEW])
    sealed = Sealer(ring).seal_message({"message_id": "m", "actor_name": "a", "queue_name": "q",
                                        "args": [], "kwargs": {"x": SECRET}, "options": {}})
    off = Sealer(ring, seal=False)
    assert off.open_message(sealed)["kwargs"] == {"x": SECRET}
    plain_fields = {"message_id": "m", "actor_name": "a", "args": [], "kwargs": {}, "options": {}}
    assert off.seal_message(plain_fields) == plain_fields


class Started(Exception):
    """Stands in for exec'ing honcho."""


def test_switchyard_dev_generates_the_key_its_processes_share(monkeypatch, tmp_path, capsys):
    # given no PAYLOAD_KEYS (and no .env)
    from switchyard import cli
    from switchyard.base.sealing import keyring_for

    saved = dict(os.environ)
    for name in ("PAYLOAD_KEYS", "SWITCHYARD_ENV", "DATABASE_URL", "WEB_PASSWORD", "API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    settings.get.cache_clear()

    def execvp(file: str, argv: list[str]) -> None:
        raise Started

    monkeypatch.setattr(os, "execvp", execvp)
    try:
        # when `switchyard dev` starts
        with pytest.raises(Started):
            cli.main(["dev"])
    finally:
        settings.get.cache_clear()
        os.environ.clear()
        os.environ.update(saved)
    # then it made var/payload-keys, said so, and a process of the run seals with it
    assert f"keys    {tmp_path / DEV_KEYS_FILE}" in capsys.readouterr().out
    config = settings.load(_env_file=None, var_dir=str(tmp_path), payload_keys="")
    ring = keyring_for(config)
    assert ring is not None and ring.ids == ["dev"]


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_rotating_seals_what_was_stored_before_encryption_was_on(
        build_switchyard, start_worker, queue):
    # given a waiting job, a dead letter and a result stored with encryption off
    before = build_switchyard(payload_encryption=False, payload_keys="")
    note = declare_note(before, queue, [])
    worker = start_worker(before)
    done = note.send(text=SECRET)
    wait_for(lambda: finished(before, done.message_id), what="the first job")
    worker.stop(timeout=10_000)
    before.state.buffer.flush()
    waiting = note.send(text=SECRET)
    before.state.dead_letters.add(note.message_with_options(kwargs={"text": SECRET}),
                                  {"error": "Boom", "message": "boom", "attempts": 1})
    assert stored_secrets(before)
    # when encryption is switched on and stored values rotated
    after = build_switchyard(payload_keys=NEW)
    runs: list[str] = []
    declare_note(after, queue, runs)
    counts = rotate(after)
    # then nothing is left in clear, and everything still reads and runs
    assert (counts["messages"], counts["dead_letters"], counts["results"],
            counts["history"]) == (1, 1, 1, 1)
    assert not stored_secrets(after)
    assert after.state.history.get(done.message_id)["result"] == {"echo": SECRET}
    start_worker(after)
    wait_for(lambda: finished(after, waiting.message_id), what="the waiting job")
    assert runs == [SECRET]

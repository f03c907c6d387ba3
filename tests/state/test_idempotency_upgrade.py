"""An upgrade keeps the promise of the keys stored before it: idempotency keys that an
older release stored under their value in clear are renamed to the hashed names, with
their TTLs, by `switchyard db upgrade` (the Procfile's release phase)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from state.idempotency import DONE
from switchyard.base.keys import JobKey

ROOT = Path(__file__).resolve().parents[2]
REDIS_ONLY = pytest.mark.parametrize("broker_kind", ["redis"])
DAY_MS = 86_400_000


def store_in_clear(sy: Any, actor: str, value: str, message_id: str) -> None:
    """What an older release left: a done mark and its queued marker, named in clear."""
    name = f"{sy.settings.key_prefix}:idem:{actor}:{value}"
    sy.state.client.set(name, f"done:{message_id}", px=DAY_MS)
    sy.state.client.set(f"{name}:queued", message_id, px=DAY_MS)


def names(sy: Any) -> list[str]:
    return [k.decode() for k in sy.state.client.scan_iter(f"{sy.settings.key_prefix}:*")]


@REDIS_ONLY
def test_keys_stored_in_clear_keep_turning_duplicates_away_after_the_upgrade(
    build_switchyard: Any,
) -> None:
    # given the done mark of a job keyed by an address, stored by an older release
    sy = build_switchyard()
    key = JobKey("send_otp", "otp:ann@example.com")
    store_in_clear(sy, key.actor, key.value, "first-job")
    # when the upgrade runs (twice: it is safe to repeat)
    assert sy.state.keys.adopt_legacy_names() == 2
    assert sy.state.keys.adopt_legacy_names() == 0
    # then the same key is still held by the first job, done, for the rest of its day
    assert sy.state.keys.holder(key) == "first-job"
    state, _ = sy.state.keys.take(key, "second-job")
    assert state == DONE
    assert sy.state.client.pttl(sy.state.keys.redis_key(key)) > DAY_MS - 60_000
    # and the address is in no key name any more
    assert not [name for name in names(sy) if "ann@example.com" in name]


@REDIS_ONLY
def test_db_upgrade_renames_the_keys(build_switchyard: Any, process_env: dict[str, str],
                                     tmp_path: Path) -> None:
    sy = build_switchyard()
    store_in_clear(sy, "send_sms", "+15550100", "sms-job")
    env = {**os.environ, **process_env, "DATABASE_URL": f"sqlite:///{tmp_path}/up.db"}
    done = subprocess.run([sys.executable, "-m", "switchyard.cli", "db", "upgrade"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "idempotency keys: 2 renamed to hashed names" in done.stdout
    assert sy.state.keys.holder(JobKey("send_sms", "+15550100")) == "sms-job"
    assert not [name for name in names(sy) if "+15550100" in name]


@REDIS_ONLY
def test_a_queued_marker_keeps_naming_its_job_under_the_hashed_name(
    build_switchyard: Any,
) -> None:
    # given a job still queued under a key an older release stored in clear (no done
    # mark yet: only the marker names it)
    sy = build_switchyard()
    key = JobKey("send_sms", "sms:+15550100:otp")
    sy.state.client.set(f"{sy.settings.key_prefix}:idem:{key.actor}:{key.value}:queued",
                        "queued-job", px=DAY_MS)
    # when the upgrade runs
    assert sy.state.keys.adopt_legacy_names() == 1
    # then the marker is the hashed key's, with its TTL, and it alone names the job
    marker = sy.state.keys.redis_key(key) + ":queued"
    assert sy.state.client.get(marker) == b"queued-job"
    assert sy.state.client.pttl(marker) > DAY_MS - 60_000
    assert sy.state.client.get(sy.state.keys.redis_key(key)) is None
    assert sy.state.keys.holder(key) == "queued-job"
    assert sy.state.keys.claim(key, "second-job", DAY_MS) == "queued-job"


@REDIS_ONLY
def test_a_mark_stored_since_under_the_hashed_name_wins_over_the_one_in_clear(
    build_switchyard: Any,
) -> None:
    # given a key done by a job after the new release started, and the older release's
    # mark of the same key, in clear
    sy = build_switchyard()
    key = JobKey("send_otp", "otp:bob@example.com")
    sy.state.client.set(sy.state.keys.redis_key(key), "done:new-job", px=DAY_MS)
    sy.state.client.set(f"{sy.settings.key_prefix}:idem:{key.actor}:{key.value}",
                        "done:old-job", px=DAY_MS)
    # when the upgrade runs
    assert sy.state.keys.adopt_legacy_names() == 1
    # then the newer mark stays, and the one in clear is gone
    assert sy.state.keys.holder(key) == "new-job"
    assert not [name for name in names(sy) if "bob@example.com" in name]


@REDIS_ONLY
def test_the_upgrade_renames_every_name_in_clear_among_hashed_ones_and_leaves_the_rest(
    build_switchyard: Any,
) -> None:
    # given many keys stored under hashed names, several in clear, and names that are no
    # key's (no value, no actor)
    sy = build_switchyard()
    prefix = sy.settings.key_prefix
    hashed = [JobKey("send_push", f"push:{n}") for n in range(30)]
    for key in hashed:
        sy.state.client.set(sy.state.keys.redis_key(key), "done:hashed-job", px=DAY_MS)
    clear = [JobKey("send_email", f"mail:{n}") for n in range(5)]
    for key in clear:
        sy.state.client.set(f"{prefix}:idem:{key.actor}:{key.value}", "done:clear-job",
                            px=DAY_MS)
    odd = [f"{prefix}:idem:send_email:", f"{prefix}:idem::mail:9", f"{prefix}:idem:loose"]
    for name in odd:
        sy.state.client.set(name, "done:odd", px=DAY_MS)
    before = sorted(sy.state.client.get(name) for name in odd)
    # when the upgrade runs
    assert sy.state.keys.adopt_legacy_names(batch=10) == 5
    # then every key in clear was renamed, the hashed ones and the odd names left as
    # they were
    assert [sy.state.keys.holder(key) for key in clear] == ["clear-job"] * 5
    assert [sy.state.keys.holder(key) for key in hashed] == ["hashed-job"] * 30
    assert sorted(sy.state.client.get(name) for name in odd) == before
    assert not [name for name in names(sy) if "send_email:mail" in name]

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
from switchyard.keys import JobKey

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

"""The clock: every slot enqueued once however many clocks run (one killed halfway),
missed slots caught up once, UTC unless a schedule names its zone, Sundays fire.

Time is injected: the clocks read a fake time the test moves, so hours of slots take
a second; nothing sleeps through real minutes.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import dramatiq
import pytest
import redis
from periodiq import cron

from actors import cleanup
from schedules import SCHEDULES, Schedule
from switchyard import boot as runtime
from switchyard.clock import Clock, slots_between
from tests.support.processes import ROOT, WorkerProcesses
from tests.support.waiting import wait_for

UTC = datetime.UTC
START = datetime.datetime(2026, 11, 27, 22, 58, 30, tzinfo=UTC)  # a Friday
FIVE = datetime.timedelta(minutes=5)
FIRST_SLOT = datetime.datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
EVERY_5 = Schedule("every_5", "cleanup_stories", "*/5 * * * *", payload={"type": "stories"})


class FakeTime:
    def __init__(self, at: datetime.datetime) -> None:
        self.at = at

    def __call__(self) -> datetime.datetime:
        return self.at


@pytest.fixture
def app(make_settings: Callable[..., Any]) -> Iterator[runtime.App]:
    built = runtime.build(make_settings(clock_lease_ms=1_000), [cleanup])
    yield built
    built.close()


def sent(state: redis.Redis, namespace: str, prefix: str) -> Counter[str]:
    """How many cleanup messages carry each idempotency key: queued, or waiting in the
    queue's one-at-a-time lane (state.lanes)."""
    bodies = list(state.hvals(f"{namespace}:cleanup.msgs"))
    for raw in state.hvals(f"{prefix}:lanes:jobs"):
        record = json.loads(raw)
        if record["q"] == "cleanup":
            bodies.append(record["b"].encode())
    return Counter(dramatiq.Message.decode(body if isinstance(body, bytes) else body.encode())
                   .options.get("idempotency_key", "") for body in bodies)


def has_sent(state: redis.Redis, namespace: str, prefix: str, wanted: str) -> int:
    return sent(state, namespace, prefix)[wanted]


def key(schedule: str, slot: datetime.datetime) -> str:
    return f"clock:{schedule}@{slot.isoformat(timespec='minutes')}"


def test_two_clocks_one_dying_mid_slot_send_every_slot_once(app, state):
    # given two clocks on a five-minute schedule over two hours of simulated time
    time = FakeTime(START)
    clocks = [Clock(app, [EVERY_5], now=time), Clock(app, [EVERY_5], now=time)]
    slots = [FIRST_SLOT + FIVE * i for i in range(24)]
    for number, slot in enumerate(slots):
        time.at = slot + datetime.timedelta(seconds=1)
        if number == 12:  # the first clock claims this slot and dies before enqueueing
            state.set(f"{app.settings.key_prefix}:clock:slot:every_5:"
                      f"{slot.isoformat(timespec='minutes')}", "lease:dead", px=1_000)
            clocks = clocks[1:]
            wait_for(clocks[0].tick, timeout=10, what="the dead clock's lease")
        for clock in clocks if number % 2 else reversed(clocks):
            clock.tick()
    # then every slot was enqueued exactly once
    counts = sent(state, app.settings.broker_namespace, app.settings.key_prefix)
    assert counts == Counter({key("every_5", slot): 1 for slot in slots})


@pytest.mark.e2e  # two clock processes, one killed
def test_two_clock_processes_one_killed_with_sigkill_send_every_slot_once(test_env, state):
    prefix = test_env["KEY_PREFIX"]
    state.set(f"{prefix}:faketime", START.timestamp())
    clocks = WorkerProcesses({**test_env, "CLOCK_LEASE_MS": "1000",
                              "CLOCK_TEST_CRON": "*/5 * * * *"},
                             module="tests.support.clock_app")
    slots = [FIRST_SLOT + FIVE * i for i in range(20)]
    try:
        doomed, survivor = clocks.start(), clocks.start()
        for number, slot in enumerate(slots):
            state.set(f"{prefix}:faketime", (slot + datetime.timedelta(seconds=1)).timestamp())
            if number == 10:
                clocks.kill(doomed)
            wait_for(functools.partial(has_sent, state, test_env["BROKER_NAMESPACE"],
                                       test_env["KEY_PREFIX"], key("every_5", slot)),
                     timeout=15, what=f"slot {slot}")
    finally:
        clocks.stop_all()
    assert survivor.returncode is not None
    counts = sent(state, test_env["BROKER_NAMESPACE"], test_env["KEY_PREFIX"])
    assert counts == Counter({key("every_5", slot): 1 for slot in slots})


def test_a_clock_down_for_a_span_catches_up_once(app, state):
    # given a clock that sent the 23:00 slot, then was down for three hours
    time = FakeTime(START.replace(hour=23, minute=0, second=5))
    assert len(Clock(app, [EVERY_5], now=time).tick()) == 1
    time.at += datetime.timedelta(hours=3)
    # when a clock starts again: the missed slots are sent as one run, the newest
    restarted = Clock(app, [EVERY_5], now=time)
    [caught_up] = restarted.tick()
    assert caught_up.slot == START.replace(hour=23, minute=0, second=0) + datetime.timedelta(
        hours=3)
    # and nothing more until the next slot
    assert restarted.tick() == []
    assert sum(sent(state, app.settings.broker_namespace, app.settings.key_prefix).values()) == 2


def test_without_coalescing_every_missed_slot_within_the_window_is_sent(app):
    time = FakeTime(START.replace(hour=23, minute=0, second=5))
    Clock(app, [EVERY_5], now=time).tick()
    time.at += datetime.timedelta(hours=3)
    clock = Clock(app, [EVERY_5], now=time, coalesce=False, catch_up_ms=3_600_000)
    assert len(clock.tick()) == 12  # the last hour's slots only


def test_weekly_and_sunday_schedules_fire_on_sundays_in_utc():
    after = datetime.datetime(2026, 11, 27, tzinfo=UTC)  # a Friday
    until = after + datetime.timedelta(days=21)
    for expression in ("@weekly", "0 0 * * 0", "0 0 * * 7", "0 0 * * sun"):
        slots = slots_between(cron(expression), UTC, after, until)
        assert [s.date().isoformat() for s in slots] == [
            "2026-11-29", "2026-12-06", "2026-12-13"], expression
        assert all(s.hour == 0 and s.minute == 0 for s in slots)


def test_a_weekly_schedule_fires_from_the_clock_on_sunday(app, state):
    weekly = Schedule("weekly", "cleanup_orphaned_media", "@weekly",
                      payload={"type": "orphaned_media"})
    time = FakeTime(datetime.datetime(2026, 11, 28, 23, 59, tzinfo=UTC))
    clock = Clock(app, [weekly], now=time)
    assert clock.tick() == []
    time.at = datetime.datetime(2026, 11, 29, 0, 0, 1, tzinfo=UTC)
    [fired] = clock.tick()
    assert fired.slot == datetime.datetime(2026, 11, 29, tzinfo=UTC)


def test_a_schedule_in_a_named_zone_fires_at_its_local_time():
    paris = ZoneInfo("Europe/Paris")
    after = datetime.datetime(2026, 11, 29, tzinfo=UTC)
    [slot] = slots_between(cron("0 9 * * *"), paris, after, after + datetime.timedelta(days=1))
    assert slot == datetime.datetime(2026, 11, 29, 8, 0, tzinfo=UTC)  # 09:00 CET


def test_every_cleanup_job_has_a_schedule_with_the_seed_body():
    assert {s.actor: s.payload["type"] for s in SCHEDULES} == {
        f"cleanup_{kind}": kind for kind in (
            "stories", "sessions", "messages", "temp_files", "prekeys", "orphaned_media",
            "records")}
    assert all(s.timezone == "UTC" for s in SCHEDULES)


def test_clock_list_prints_each_schedule_with_its_next_and_last_slot(app, test_env):
    # given the stories schedule sent once
    time = FakeTime(datetime.datetime.now(UTC))
    stories = next(s for s in SCHEDULES if s.name == "cleanup_stories")
    clock = Clock(app, [stories], now=time)
    time.at += datetime.timedelta(minutes=15)
    assert len(clock.tick()) == 1
    # when `switchyard clock --list` runs
    result = subprocess.run([sys.executable, "-m", "switchyard.cli", "clock", "--list"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **test_env})
    # then every schedule has a line; the one that ran shows its last slot
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(lines) == {s.name for s in SCHEDULES}
    assert lines["cleanup_stories"][-1] != "-" and lines["cleanup_sessions"][-1] == "-"
    assert lines["cleanup_orphaned_media"][1:6] == ["0", "5", "*", "*", "sun"]

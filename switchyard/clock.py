"""The clock (`switchyard clock`): enqueues every slot of every schedule exactly once,
however many clocks run, and catches up the slots it missed while down.

periodiq (0.14) has no lock (two clocks send every job twice), computes the next slot
from "now" (a clock that was down loses its slots), uses the process's local time zone
and never fires on Sunday. This clock keeps periodiq's cron parser and does the rest:

- each slot is claimed in Redis (`SET NX` with a lease) before it is enqueued, and
  marked sent after; a clock killed in between leaves a lease that expires
  (CLOCK_LEASE_MS), and the next clock enqueues the slot again under the same
  idempotency key (`clock:<schedule>@<slot>`, duplicate rule `existing`), so the job
  is queued once either way and the idempotency middleware drops any repeat;
- the newest slot sent is recorded per schedule; on start, slots since then within
  CLOCK_CATCH_UP_MS are due, coalesced into one run (the newest) unless
  CLOCK_COALESCE=false;
- slots are computed in the schedule's time zone (UTC unless it names one) and
  enqueued through `switchyard.runtime.enqueue.enqueue`, the one way in.

Time comes from an injected `now()`, so tests run days of slots in milliseconds.
"""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from periodiq import CronSpec, cron

from schedules import Schedule
from switchyard.base import tracecontext
from switchyard.runtime.enqueue import enqueue

if TYPE_CHECKING:
    from switchyard.runtime.app import App

logger = logging.getLogger("switchyard.clock")

UTC = datetime.UTC
#: How far ahead a next slot is looked for (a 29 February schedule fits in 8 years).
MAX_DAYS = 8 * 366
#: A sent slot's mark outlives the catch-up window by this much.
SENT_MARGIN = datetime.timedelta(days=1)

Now = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def day_matches(spec: CronSpec, day: datetime.date) -> bool:
    """Cron's day rule: month, and day of month and/or weekday (Sunday is 0 or 7)."""
    if day.month not in spec.month:
        return False
    weekday = day.isoweekday() % 7
    on_weekday = weekday in spec.dow or (weekday == 0 and 7 in spec.dow)
    on_day = day.day in spec.dom
    if spec.is_dom_restricted and spec.is_dow_restricted:
        return on_day or on_weekday  # cron ORs the two when both are given
    return on_day and on_weekday


def slots_after(spec: CronSpec, zone: datetime.tzinfo,
                after: datetime.datetime) -> Iterator[datetime.datetime]:
    """The schedule's slots (UTC) after `after`, in order, computed in `zone`."""
    day = after.astimezone(zone).date() - datetime.timedelta(days=1)
    for _ in range(MAX_DAYS):
        if day_matches(spec, day):
            times = sorted({datetime.datetime.combine(day, datetime.time(h, m), zone)
                            .astimezone(UTC) for h in spec.hour for m in spec.minute})
            yield from (slot for slot in times if slot > after)
        day += datetime.timedelta(days=1)


def slots_between(spec: CronSpec, zone: datetime.tzinfo, after: datetime.datetime,
                  until: datetime.datetime) -> list[datetime.datetime]:
    """The slots in (`after`, `until`]."""
    found = []
    for slot in slots_after(spec, zone, after):
        if slot > until:
            break
        found.append(slot)
    return found


@dataclass(frozen=True)
class Fired:
    """A slot this clock enqueued (or found enqueued under its key)."""

    schedule: str
    slot: datetime.datetime
    message_id: str
    duplicate: bool


class Clock:
    """Enqueue the schedules' slots; `tick()` does one pass, `run()` loops."""

    def __init__(self, app: App, schedules: Sequence[Schedule], *, now: Now = utcnow,
                 catch_up_ms: int | None = None, coalesce: bool | None = None) -> None:
        settings = app.settings
        self.app, self.schedules, self.now = app, list(schedules), now
        self.redis = app.state.client
        self.prefix = f"{settings.key_prefix}:clock"
        self.catch_up = datetime.timedelta(milliseconds=settings.clock_catch_up_ms
                                           if catch_up_ms is None else catch_up_ms)
        self.coalesce = settings.clock_coalesce if coalesce is None else coalesce
        self.lease_ms = settings.clock_lease_ms
        self.id = uuid.uuid4().hex[:12]
        self.started = now().replace(second=0, microsecond=0) - datetime.timedelta(
            microseconds=1)  # a slot in the minute the clock starts is due
        self.specs = {s.name: (cron(s.cron), ZoneInfo(s.timezone)) for s in self.schedules}

    def last(self, schedule: Schedule) -> datetime.datetime | None:
        """The newest slot of `schedule` sent by any clock."""
        score = self.redis.zscore(f"{self.prefix}:last", schedule.name)
        return None if score is None else datetime.datetime.fromtimestamp(float(score), UTC)

    def due(self, schedule: Schedule, now: datetime.datetime) -> list[datetime.datetime]:
        """The slots to send now: since the last sent (or this clock's start), within
        the catch-up window; only the newest when coalescing."""
        spec, zone = self.specs[schedule.name]
        floor = max(self.last(schedule) or self.started, now - self.catch_up)
        slots = slots_between(spec, zone, floor, now)
        return slots[-1:] if self.coalesce else slots

    def tick(self) -> list[Fired]:
        """One pass over every schedule; what this clock enqueued."""
        now = self.now()
        fired: list[Fired] = []
        for schedule in self.schedules:
            for slot in self.due(schedule, now):
                with tracecontext.span(f"clock {schedule.name}", attributes={
                        "switchyard.schedule": schedule.name, "switchyard.actor": schedule.actor,
                        "switchyard.schedule.slot": slot.isoformat(timespec="minutes")}):
                    outcome = self.send(schedule, slot)  # its enqueue span is a child
                if outcome is False:
                    break  # another clock holds this slot: come back next tick
                if outcome is not True:
                    fired.append(outcome)
        return fired

    def send(self, schedule: Schedule, slot: datetime.datetime) -> Fired | bool:
        """Claim, enqueue and mark one slot. True: another clock sent it already;
        False: another clock is sending it."""
        stamp = slot.isoformat(timespec="minutes")
        claim = f"{self.prefix}:slot:{schedule.name}:{stamp}"
        if not self.redis.set(claim, f"lease:{self.id}", nx=True, px=self.lease_ms):
            held = self.redis.get(claim)
            text = held.decode() if isinstance(held, bytes) else str(held or "")
            if not text.startswith("sent"):
                return False
            self.advance(schedule, slot)
            return True
        queued = enqueue(self.app, schedule.actor, dict(schedule.payload),
                         key=f"clock:{schedule.name}@{stamp}", on_duplicate="existing")
        keep = int((self.catch_up + SENT_MARGIN).total_seconds() * 1000)
        self.redis.set(claim, f"sent:{queued.message_id}", px=keep)
        self.advance(schedule, slot)
        logger.info("Sent %s for its %s slot as %s%s.", schedule.actor, stamp,
                    queued.message_id, " (already queued)" if queued.duplicate else "")
        return Fired(schedule.name, slot, queued.message_id, queued.duplicate)

    def sent_as(self, schedule: Schedule, slot: datetime.datetime) -> str | None:
        """The message id `slot` of `schedule` was sent as, while its mark is kept."""
        stamp = slot.isoformat(timespec="minutes")
        held = self.redis.get(f"{self.prefix}:slot:{schedule.name}:{stamp}")
        text = held.decode() if isinstance(held, bytes) else str(held or "")
        return text.removeprefix("sent:") if text.startswith("sent:") else None

    def advance(self, schedule: Schedule, slot: datetime.datetime) -> None:
        """Record `slot` as sent, unless a newer one is (ZADD GT: never backwards)."""
        self.redis.zadd(f"{self.prefix}:last", {schedule.name: slot.timestamp()}, gt=True)

    def run(self, stop: threading.Event, tick_ms: int | None = None) -> None:
        """Tick until `stop` is set; a failed pass is logged and tried again."""
        pause = (tick_ms or self.app.settings.clock_tick_ms) / 1000
        while not stop.is_set():
            try:
                self.tick()
            except Exception as error:  # Redis or the broker away: the next tick retries
                logger.warning("Clock pass failed (%s); trying again.", type(error).__name__)
            stop.wait(pause)

    def table(self) -> list[dict[str, Any]]:
        """Each schedule, its next slot and the last one sent (`switchyard clock --list`)."""
        now = self.now()
        rows = []
        for schedule in self.schedules:
            spec, zone = self.specs[schedule.name]
            last = self.last(schedule)
            rows.append({"schedule": schedule.name, "actor": schedule.actor,
                         "cron": schedule.cron, "timezone": schedule.timezone,
                         "next": next(slots_after(spec, zone, now), None),
                         "last": last})
        return rows

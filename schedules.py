"""The clock's table: each schedule names an actor, its cron expression (periodiq's
syntax: five fields, `sun`..`sat`, `@hourly`, `@daily`, `@weekly`...), its time zone
(UTC unless it names one) and the payload it is sent with.

`switchyard clock` (`switchyard/clock.py`) enqueues every slot of every schedule once,
however many clocks run. `apply()`, called when a process boots, also marks each
declared actor with its cron expression (the `periodic` option, shown by
`switchyard actors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dramatiq


@dataclass(frozen=True)
class Schedule:
    name: str
    actor: str
    cron: str
    timezone: str = "UTC"
    payload: dict[str, Any] = field(default_factory=dict)


def cleanup(kind: str, expression: str) -> Schedule:
    """A cleanup job's schedule, sent with the seed's `{"type": ...}` body."""
    return Schedule(f"cleanup_{kind}", f"cleanup_{kind}", expression, payload={"type": kind})


#: Every schedule the clock runs (all in UTC).
SCHEDULES: tuple[Schedule, ...] = (
    cleanup("stories", "*/15 * * * *"),
    cleanup("temp_files", "5 * * * *"),
    cleanup("sessions", "10 3 * * *"),
    cleanup("messages", "20 3 * * *"),
    cleanup("prekeys", "30 4 * * *"),
    cleanup("orphaned_media", "0 5 * * sun"),
    # Switchyard's own records past their retention (NOTIFICATION_DELIVERY_RETENTION_MS,
    # CLEANUP_RUN_RETENTION_MS).
    cleanup("records", "40 4 * * *"),
)


def apply(broker: dramatiq.Broker,
          table: tuple[Schedule, ...] | None = None) -> list[str]:
    """Mark the declared scheduled actors as periodic; returns the names it marked."""
    marked = []
    for schedule in SCHEDULES if table is None else table:
        actor = broker.actors.get(schedule.actor)
        if actor is not None:
            from periodiq import cron  # only where a scheduled actor is declared

            actor.options["periodic"] = cron(schedule.cron)
            marked.append(schedule.actor)
    return sorted(marked)

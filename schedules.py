"""The clock's cron table: periodic actor name -> cron expression (periodiq syntax).

`apply()`, called when a process boots, sets each declared actor's `periodic` option so
`switchyard clock` (periodiq) enqueues it on its slot. The cleanup actors join this
table in their own issue.
"""

from __future__ import annotations

import dramatiq
from periodiq import cron

#: actor name -> cron expression.
SCHEDULES: dict[str, str] = {}


def apply(broker: dramatiq.Broker, table: dict[str, str] | None = None) -> list[str]:
    """Mark the scheduled actors as periodic; returns the names it scheduled."""
    table = SCHEDULES if table is None else table
    for name, expression in table.items():
        broker.get_actor(name).options["periodic"] = cron(expression)
    return sorted(table)

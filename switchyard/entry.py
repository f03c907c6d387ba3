"""The one way a Switchyard process starts: the runtime booted with the job families.

`switchyard worker` (the Procfile's workers: `dramatiq switchyard.entry:boot`, or
`switchyard.pinning:boot`, which pins the process first), the clock (periodiq, through
`switchyard clock`), the CLI and the web process all call `boot()`; importing this
module does nothing by itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import actors
from switchyard import boot as runtime
from switchyard.base.settings import Settings


def boot(settings: Settings | None = None, *,
         only: Iterable[str] | None = None) -> runtime.App:
    """Boot this process once (see `switchyard.boot.boot`) with every family in
    `actors.FAMILIES`, or, with `only`, with the families that declare those actors
    (a producer that sends them, and imports nothing else)."""
    families = actors.families() if only is None else actors.families_of(only)
    return runtime.boot(settings, families)

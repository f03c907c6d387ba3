"""The one way a Switchyard process starts: the runtime booted with every job family.

`switchyard worker` (the Procfile's workers: `dramatiq switchyard.entry:boot`, or
`switchyard.pinning:boot`, which pins the process first), the clock (periodiq, through
`switchyard clock`), the CLI and the web process all call `boot()`; importing this
module does nothing by itself.
"""

from __future__ import annotations

import actors
from switchyard import app as runtime
from switchyard.settings import Settings


def boot(settings: Settings | None = None) -> runtime.App:
    """Boot this process once (see `switchyard.app.boot`) with `actors.FAMILIES`."""
    return runtime.boot(settings, actors.FAMILIES)

"""A worker process for the dashboard's browser tests: it beats like any worker and
consumes only the test's own queue (`TEST_QUEUE`), so a SIGKILL leaves a silent worker
and takes no other test's jobs. Run as `python -m tests.web.ui_worker`."""

from __future__ import annotations

import os

import dramatiq

from switchyard import boot as runtime
from switchyard.base.settings import get
from tests.support.processes import serve

sy = runtime.build(get())


@dramatiq.actor(queue_name=os.environ["TEST_QUEUE"], broker=sy.broker)
def idle() -> None:
    """Nothing: the process is here to beat."""


if __name__ == "__main__":
    serve(sy, threads=2)

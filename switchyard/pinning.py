"""One worker process per core, each pinned to a core of its own.

A worker process the scheduler moves between cores hands the GIL from core to core,
and several of them share the cores unevenly; pinned, two processes on two cores
drained jobs about a fifth faster (docs/deployment.md). `switchyard worker` starts
Dramatiq with WORKER_PROCESSES processes ("auto": one per core this process may run
on); when they are pinned, each boots through `boot()` here, which claims the lowest
free core of the allowed set and pins the process to it before any worker thread
starts.

A core is claimed by an exclusive `flock` on `VAR_DIR/cpus/<core>.lock`, held while
the process lives. Dramatiq does not tell a worker process its index; a lock needs
none, the kernel drops it however the process ends (SIGKILL included), so a restarted
worker takes the core its predecessor freed, and two worker commands sharing a VAR_DIR
(the Procfile's `worker` and `interactions` on one machine) never pin two processes to
one core. Where a process cannot be pinned (not Linux, fewer allowed cores than
processes, every core claimed) one line says so and it runs unpinned.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from switchyard.base.settings import get as get_settings

if TYPE_CHECKING:
    from switchyard.runtime.app import App

logger = logging.getLogger("switchyard.pinning")

#: WORKER_PROCESSES' value for one worker process per allowed core.
AUTO = "auto"
#: Where, under VAR_DIR, the per-core lock files live.
LOCK_DIR = "cpus"
#: What the worker processes boot through: pinned, or as `dramatiq switchyard.entry:boot`.
PINNED_BOOT, UNPINNED_BOOT = "switchyard.pinning:boot", "switchyard.entry:boot"

#: This process's claim: the open lock file of its core (closing it frees the core).
_claim: int | None = None


@dataclass(frozen=True)
class Plan:
    """How `switchyard worker` runs Dramatiq: how many processes, pinned or not, and
    why not when pinning was asked for but cannot be done."""

    processes: int
    pinned: bool
    reason: str | None = None

    @property
    def boot(self) -> str:
        return PINNED_BOOT if self.pinned else UNPINNED_BOOT


def allowed_cpus() -> list[int]:
    """The cores this process may run on (a `taskset` or a container narrows them);
    empty where the system cannot say."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def plan(processes: int | Literal["auto"], pin: bool | None,
         cpus: list[int] | None = None) -> Plan:
    """The plan for WORKER_PROCESSES and WORKER_PIN_CPUS (unset: pinned with "auto")."""
    cpus = allowed_cpus() if cpus is None else cpus
    count = max(1, len(cpus) or os.cpu_count() or 1) if processes == AUTO else int(processes)
    wanted = processes == AUTO if pin is None else pin
    reason = unpinnable(count, cpus) if wanted else None
    return Plan(count, wanted and reason is None, reason)


def unpinnable(count: int, cpus: list[int]) -> str | None:
    """Why `count` processes cannot each have a core of `cpus` to themselves, if so."""
    if not hasattr(os, "sched_setaffinity") or not cpus:
        return f"this system ({sys.platform}) cannot pin a process to a core"
    if count > len(cpus):
        return (f"{count} worker processes, {len(cpus)} allowed "
                f"core{'s' if len(cpus) > 1 else ''} ({describe(cpus)})")
    return None


def describe(cpus: Iterable[int]) -> str:
    """Cores as `taskset` lists them: `0-3,6`."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)


def claim(lock_dir: Path, cpus: Iterable[int]) -> tuple[int, int] | None:
    """The first of `cpus` no other process holds, locked for this process (core, file
    descriptor); None when every one is held."""
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    for cpu in cpus:
        fd = os.open(lock_dir / f"{cpu}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for people looking
        return cpu, fd
    return None


def pin_threads(cpu: int) -> None:
    """Pin every thread of this process to `cpu`; threads started later inherit it."""
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {cpu})
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def pin_to_free_core(lock_dir: Path) -> int | None:
    """Claim a free allowed core and pin this process to it; the core, or None (logged)
    when none could be had: the process then runs unpinned, it never fails to start."""
    global _claim
    cpus: list[int] = []
    try:
        cpus = allowed_cpus()
        claimed = claim(lock_dir, cpus) if cpus else None
        if claimed is None:
            logger.warning("Running unpinned: every allowed core (%s) is claimed by "
                           "another worker process.", describe(cpus) or "none known")
            return None
        cpu, _claim = claimed
        pin_threads(cpu)
    except OSError as error:
        release()
        logger.warning("Running unpinned: cannot pin to a core (%s).", error)
        return None
    logger.info("Worker process pinned to core %d.", cpu)
    return cpu


def release() -> None:
    """Give up the core this process claimed."""
    global _claim
    if _claim is not None:
        os.close(_claim)
        _claim = None


def boot() -> App:
    """`dramatiq switchyard.pinning:boot`: pin this worker process to a free core of its
    own, then boot it as `switchyard.entry:boot` does."""
    from switchyard import entry

    settings = get_settings()
    pin_to_free_core(settings.var_dir / LOCK_DIR)
    return entry.boot(settings)

"""The application container: the settings, the state store, the broker with its
middleware stack, the providers, the database and the declared jobs of one process.

Nothing here builds one: `switchyard.boot.build()` assembles an `App` (nothing global),
which tests use directly, and `switchyard.boot.boot()` does it once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING, Any

import dramatiq

from integrations import rabbitmq_management
from integrations.providers import Providers
from state import State
from switchyard.base.settings import Settings
from switchyard.runtime.jobs import Job, jobs_of
from switchyard.runtime.queues import Queues

if TYPE_CHECKING:
    from store.db import Database


@dataclass
class App:
    """Everything a process needs to send, run and inspect jobs."""

    settings: Settings
    broker: dramatiq.Broker
    state: State
    providers: Providers
    #: The jobs declared on the broker, by actor name (`switchyard.runtime.jobs.declare`).
    jobs: dict[str, Job[Any]] = field(default_factory=dict)
    #: Built on first use (`database`): a producer that only sends never loads it.
    _database: Database | None = field(default=None, repr=False)
    _database_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def database(self) -> Database:
        """The database (DATABASE_URL), checked against the newest migration on first use."""
        if self._database is None:
            with self._database_lock:
                if self._database is None:
                    from store.db import Database

                    self._database = Database(self.settings.db_url, check_schema=True)
        return self._database

    @cached_property
    def queues(self) -> Queues:
        """Queue inspection: counts, names, the monitoring rows."""
        return Queues(self.broker, self.state, rabbitmq_management.from_settings(self.settings))

    def declare(self, families: Iterable[ModuleType | Job[Any]]) -> None:
        """Declare every job of the given family modules (or single jobs) on the broker."""
        for family in families:
            for job in [family] if isinstance(family, Job) else jobs_of(family):
                job.declare(self)
                self.jobs[job.name] = job

    def close(self) -> None:
        self.state.close()
        self.broker.close()
        self.providers.close()
        if self._database is not None:
            self._database.dispose()

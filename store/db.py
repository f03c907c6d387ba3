"""The database connection: one engine per process, a session per unit of work.

SQLite (the development default, a file under `var/`) or PostgreSQL (`DATABASE_URL`,
through psycopg 3). A database that does not answer, or is locked, is a
`RetryableError`: the job runs again later instead of failing for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from store.urls import masked, normalize_url
from switchyard.base.errors import RetryableError
from switchyard.base.perprocess import PerProcess

#: How long SQLite waits for another writer before giving up (ms).
SQLITE_BUSY_TIMEOUT = 10_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT}")
    cursor.close()


class Database:
    """An engine (built on first use, again after a fork) and its sessions.

    With `check_schema`, the first session of a process checks that the schema is at
    the newest migration, so a database nobody upgraded fails with a clear message
    instead of "no such table".
    """

    def __init__(self, url: str, *, check_schema: bool = False) -> None:
        self.url = normalize_url(url)
        self._checked = not check_schema
        self._engine = PerProcess(self._create)

    def __repr__(self) -> str:
        return f"Database({masked(self.url)!r})"

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def engine(self) -> Engine:
        return self._engine.get()[0]

    def _create(self) -> tuple[Engine, sessionmaker[Session]]:
        engine = self._create_engine()
        return engine, sessionmaker(engine, expire_on_commit=False)

    def _create_engine(self) -> Engine:
        if self.is_sqlite:
            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(self.url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                             connect_args={"connect_timeout": 5})

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed at the end of the block, rolled back on an exception."""
        engine, sessions = self._engine.get()
        if not self._checked:
            self._check_schema(engine)
        try:
            with sessions.begin() as session:
                yield session
        except OperationalError as error:
            raise unavailable(error) from error
        except DBAPIError as error:
            if error.connection_invalidated:
                raise unavailable(error) from error
            raise

    def _check_schema(self, engine: Engine) -> None:
        from alembic.runtime.migration import MigrationContext  # slow to import: only here

        from store.migrate import head

        try:
            with engine.connect() as connection:
                found = MigrationContext.configure(connection).get_current_revision()
        except OperationalError as error:
            raise unavailable(error) from error
        wanted = head()
        if found != wanted:
            raise RetryableError(
                f"the database schema is at {found or 'nothing'}, this code needs "
                f"{wanted}: run `switchyard db upgrade`", code="schema", provider="database")
        self._checked = True

    def dispose(self) -> None:
        self._engine.reset(lambda built: built[0].dispose())


def unavailable(error: DBAPIError) -> RetryableError:
    # The driver's message can name the host and user, never the password.
    reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
    return RetryableError(f"database unavailable: {reason[:200]}", code="database",
                          provider="database")

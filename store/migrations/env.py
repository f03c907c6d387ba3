"""Alembic's entry point: run the migrations against the URL `store.migrate` hands in.

On PostgreSQL an advisory lock serialises concurrent upgrades (two processes starting
at once); SQLite runs in batch mode so ALTERs work.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from store.models import Base

#: Any constant; every upgrade takes the same PostgreSQL advisory lock.
MIGRATION_LOCK = 7_263_811_209


def run() -> None:
    url = context.config.attributes["url"]
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            connection.commit()
        try:
            context.configure(connection=connection, target_metadata=Base.metadata,
                              render_as_batch=not postgres, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                connection.commit()
    engine.dispose()


run()

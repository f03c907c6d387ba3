"""Migrations: the schema they build is the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool

from store.migrate import current, downgrade, head, upgrade
from store.models import Base
from store.urls import normalize_url
from tests.support.processes import ROOT, stop
from tests.support.services import new_postgres_database


def differences(url: str) -> list[object]:
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found = list(compare_metadata(context, Base.metadata))
    engine.dispose()
    return found


def tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names - {"alembic_version"}


def test_upgrade_builds_exactly_the_models_schema(database_url):
    assert current(database_url) == head()
    assert differences(database_url) == []


def test_downgrade_to_nothing_and_back(database_url):
    downgrade(database_url, "base")
    assert tables(database_url) == set()
    upgrade(database_url)
    assert tables(database_url) == {t.name for t in Base.metadata.sorted_tables}


def test_upgrade_twice_is_harmless(database_url):
    upgrade(database_url)
    assert current(database_url) == head()


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    with new_postgres_database("migrations") as url:
        yield url


@pytest.mark.e2e  # four processes at once
def test_processes_upgrading_at_once_do_not_collide(fresh_postgres):
    # given a new database and four processes upgrading it at the same moment
    code = "import sys; from store.migrate import upgrade; upgrade(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, fresh_postgres], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    # then all succeed and the schema is built once
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    finally:
        stop(procs)
    assert current(fresh_postgres) == head()
    assert differences(fresh_postgres) == []

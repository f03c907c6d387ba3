"""Families are registered from one list, and importing them touches no broker."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import actors
from switchyard.runtime.jobs import jobs_of
from tests.support.processes import ROOT


def test_every_family_module_is_in_the_registration_list() -> None:
    modules = {info.name for info in pkgutil.iter_modules(actors.__path__)}
    assert modules == set(actors.FAMILIES), "add the new family to actors.FAMILIES"


def test_every_family_declares_jobs_with_unique_names() -> None:
    names = [job.name for family in actors.families() for job in jobs_of(family)]
    assert all(jobs_of(family) for family in actors.families())
    assert len(names) == len(set(names))


def test_the_actor_index_names_the_family_of_every_actor_and_nothing_else() -> None:
    declared = {job.name: family.__name__.rsplit(".", 1)[-1]
                for family in actors.families() for job in jobs_of(family)}
    assert declared == actors.ACTORS, "list each actor's family in actors.ACTORS"


def test_a_producer_imports_only_the_family_it_sends_to() -> None:
    code = ("import sys, actors; actors.families_of(['ping']); "
            "print(' '.join(m for m in sys.modules if m.startswith(('actors.', 'processing', "
            "'sqlalchemy', 'boto3'))))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True, timeout=60).stdout.split()
    assert loaded == ["actors.ping"]


def test_importing_the_families_declares_nothing_and_connects_to_nothing() -> None:
    code = ("import actors, dramatiq.broker, sys; "
            "sys.exit(0 if dramatiq.broker.global_broker is None else 1)")
    # (a Redis nobody listens on: connecting at import would fail loudly)
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr

"""Redis over TLS (`rediss://`), as Heroku Redis provisions it: a self-signed certificate.

A TLS-only redis-server with a certificate made here: with REDIS_TLS_VERIFY=false every
process (worker, CLI, web, clock, bridge) works through it end to end; with
verification on and no CA it is refused with a line saying what to set; given the CA
file (REDIS_TLS_CA_FILE) it connects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

import actors
from schedules import Schedule
from switchyard import boot as runtime
from switchyard.base.redis_client import TLS_HINT
from switchyard.clock import Clock
from switchyard.ingress import bridge
from tests.support.cluster import RedisServer, self_signed_certificate
from tests.support.jobs import finished, status
from tests.support.processes import ROOT, WorkerProcesses
from tests.support.waiting import wait_for
from web.app import create_app

TOKEN = "tls-token-0123456789abcdef"
WEB = {"web_username": "operator", "web_password": "pw-tls-horse-battery", "api_token": TOKEN}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(certificate: tuple[Path, Path],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("tls-redis"), tls=certificate)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def tls_env(test_env: dict[str, str], tls_redis: RedisServer, queue: str) -> dict[str, str]:
    """A process's environment on the TLS Redis, verification off (Heroku's setting)."""
    return {**test_env, "REDIS_URL": tls_redis.url, "REDIS_TLS_VERIFY": "false",
            "TEST_QUEUE": queue}


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "switchyard.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, env={**os.environ, **env},
                              timeout=60)
    return run


@pytest.fixture
def build_on_tls(make_settings: Callable[..., Any],
                 tls_redis: RedisServer) -> Iterator[Callable[..., runtime.App]]:
    built: list[runtime.App] = []

    def build(**overrides: Any) -> runtime.App:
        settings = make_settings(redis_url=tls_redis.url, **{**WEB, **overrides})
        sy = runtime.build(settings, actors.families())
        built.append(sy)
        return sy

    yield build
    for sy in built:
        sy.close()


def test_every_process_works_over_tls_with_verification_off(
    tls_env: dict[str, str], build_on_tls: Callable[..., runtime.App],
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # given a worker process on the TLS Redis, verification off
    workers = WorkerProcesses(tls_env)
    try:
        workers.start(THREADS="2")
        sy = build_on_tls(redis_tls_verify=False)

        # when the CLI sends a job and waits for it, then it ran
        sent = cli("send", "ping", "{}", "--wait", "--timeout", "30", env=tls_env)
        assert sent.returncode == 0, sent.stderr
        assert '"status": "done"' in sent.stdout

        # when the web process takes a job, then it runs, and the web is ready
        web = TestClient(create_app(sy))
        posted = web.post("/api/jobs/ping", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert posted.status_code == 202, posted.text
        web_job = posted.json()["message_id"]
        assert web.get("/health", params={"ready": 1}).status_code == 200

        # when the clock fires a slot, then its job runs
        fired = Clock(sy, [Schedule("tls-ping", "ping", "* * * * *")]).tick()
        assert len(fired) == 1

        # when the bridge handles a delivery it cannot run, then its dead letter is kept
        bad = bridge.Delivery(1, "switchyard.ingress.cleanup", "cleanup.stories", "tls-1",
                              b"not json")
        assert bridge.handle(sy, bad) == "dead"
        assert sy.state.dead_letters.depth("cleanup") == 1

        ids = (web_job, fired[0].message_id)
        wait_for(lambda: finished(sy, *ids), timeout=30, interval=0.1, what="web and clock jobs")
        assert {status(sy, i) for i in ids} == {"done"}
        health = cli("health", env=tls_env).stdout.splitlines()
        assert {"broker: ok  redis", "state_store: ok  redis"} <= set(health), health
        assert any(line.startswith("workers: ok  1 live") for line in health), health
    finally:
        workers.stop_all()


def test_verification_on_without_the_ca_is_refused_with_what_to_set(
    tls_env: dict[str, str], build_on_tls: Callable[..., runtime.App],
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # given verification on (the default) and no CA file
    env = {**tls_env, "REDIS_TLS_VERIFY": "true"}

    # when the CLI sends a job, then it exits 3 naming the certificate and the fix
    result = cli("send", "ping", "{}", env=env)
    assert result.returncode == 3
    assert "certificate verify failed" in result.stderr
    assert TLS_HINT in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    # and a process's state store and broker are refused alike
    sy = build_on_tls(redis_tls_verify=True)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        sy.state.client.ping()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        sy.jobs["ping"].send()


def test_verification_on_with_the_ca_file_connects(
    tls_env: dict[str, str], build_on_tls: Callable[..., runtime.App],
    certificate: tuple[Path, Path], cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # given verification on and the server's CA file
    ca_file = str(certificate[0])
    sy = build_on_tls(redis_tls_verify=True, redis_tls_ca_file=ca_file)

    # when a job is sent from this process and from the CLI, then both are queued
    queued = sy.jobs["ping"].send()
    env = {**tls_env, "REDIS_TLS_VERIFY": "true", "REDIS_TLS_CA_FILE": ca_file}
    result = cli("send", "ping", "{}", env=env)
    assert result.returncode == 0, result.stderr
    assert sy.state.client.ping()
    assert status(sy, queued.message_id) == "queued"
    assert sy.queues.depth("default") == 2

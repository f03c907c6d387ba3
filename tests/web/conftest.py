"""Fixtures for the web process: the app on a real Switchyard (Redis broker), with
credentials, two test actors, clients with and without credentials, and the app served
by uvicorn for requests no client library rewrites."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from switchyard import boot as runtime
from switchyard.base.errors import PermanentError
from switchyard.runtime.jobs import Context, job
from tests.support.services import free_port
from tests.support.waiting import wait_for
from web.app import create_app

USERNAME = "operator"
PASSWORD = "pw-correct-horse-battery"
TOKEN = "tok-0123456789abcdef0123456789"
CREDENTIALS = {"web_username": USERNAME, "web_password": PASSWORD, "api_token": TOKEN}
ECHO, FLAKY = "web_echo", "web_flaky"


def basic(username: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


BEARER = {"Authorization": f"Bearer {TOKEN}"}


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=100)
    times: int = Field(1, ge=1, le=10)


class Flaky(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=50)


@dataclass
class Web:
    sy: runtime.App
    app: FastAPI
    client: TestClient  # with the bearer token
    anonymous: TestClient
    queue: str

    def fix(self, name: str) -> None:
        """Make the flaky job `name` succeed from now on."""
        self.sy.state.client.set(f"{self.sy.settings.key_prefix}:fixed:{name}", 1)


@pytest.fixture(params=["redis"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    """The dashboard reads the Redis broker's keys, so the web tests run on Redis."""
    return str(request.param)


def declare_actors(sy: runtime.App, queue: str) -> None:
    prefix = sy.settings.key_prefix

    @job(Echo, actor_name=ECHO, queue_name=queue, max_retries=0)
    def web_echo(ctx: Context, payload: Echo) -> dict[str, Any]:
        return {"echo": payload.text * payload.times}

    @job(Flaky, actor_name=FLAKY, queue_name=queue, max_retries=0)
    def web_flaky(ctx: Context, payload: Flaky) -> str:
        if not sy.state.client.exists(f"{prefix}:fixed:{payload.name}"):
            raise PermanentError("still broken")
        return "fixed"

    sy.declare([web_echo, web_flaky])


@pytest.fixture
def make_web(build_switchyard: Callable[..., runtime.App],
             queue: str) -> Callable[..., Web]:
    def make(families: Iterable[ModuleType] = (), **overrides: Any) -> Web:
        """`families`: job families to declare too (their routes need them)."""
        sy = build_switchyard(**{**CREDENTIALS, **overrides})
        declare_actors(sy, queue)
        sy.declare(families)
        app = create_app(sy)
        return Web(sy, app, TestClient(app, headers=BEARER), TestClient(app), queue)

    return make


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return make_web()


@contextmanager
def served(app: FastAPI, *, grace_s: float = 15) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port (its URL), stopped afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(grace_s)


@pytest.fixture
def base_url(web: Web) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port."""
    with served(web.app, grace_s=10) as url:
        yield url

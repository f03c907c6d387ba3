"""The web process: health, metrics, the jobs API and the dashboard, behind auth.

`create_app()` boots the process (settings, broker, actors) and builds the app; tests
pass an already-built Switchyard instead. Served by gunicorn with uvicorn workers
(`web/gunicorn_conf.py`). Everything but `/health` needs credentials (web/auth.py).
The OpenAPI document is at `/api/openapi.json`, its pages at `/api/docs`.
"""

import logging
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import dramatiq
import redis
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from integrations.providers import backends
from switchyard.base.errors import NotConfigured, RetryableError
from switchyard.base.settings import Settings, get
from switchyard.health import check as check_services
from switchyard.runtime.app import App
from web import admin, auth, channels, dashboard, events, jobs, media, metrics
from web.headers import SecurityHeaders
from web.validation import ANY, GUARDED, BodyLimit, invalid_request

logger = logging.getLogger("switchyard.web")

#: Checks a web process needs to serve: the database joins them once there is one.
READINESS = ("broker", "state_store")
#: Paths whose requests are not traced (with tracing on): probes and Prometheus's scrapes.
UNTRACED = frozenset({"/health", "/metrics"})


def untraced(scope: MutableMapping[str, Any]) -> bool:
    """FastAPI traces every other request natively once tracing is on (`switchyard.tracing`
    sets the provider): its span is the root of the trace its jobs join."""
    return scope.get("path") in UNTRACED


def boot(settings: Settings | None) -> App:
    """Boot like a worker does: every job family on the process's broker."""
    from switchyard.entry import boot

    return boot(settings)


def health(sy: App, started: float, ready: bool) -> JSONResponse:
    body: dict[str, Any] = {
        "status": "healthy",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "uptime": round(time.monotonic() - started, 3),
    }
    if not ready:
        return JSONResponse(body)
    # Only up or down here: the details (hosts, errors) are for `switchyard health`.
    checks = {name: {"ok": item["ok"]} for name, item in check_services(sy)["checks"].items()
              if name in READINESS}
    down = [name for name, item in checks.items() if not item["ok"]]
    body["checks"] = checks
    # Which backend each provider runs on (`unconfigured`, `outbox (explicit)`, ...):
    # said, not failed: the web process delivers nothing itself.
    body["providers"] = {name: item["label"] for name, item in backends(sy.settings).items()}
    if down:
        body.update(status="unavailable", down=down)
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


async def unavailable(request: Request, error: Exception) -> JSONResponse:
    """A service that does not answer is a 503, not a 500 (details stay in the log)."""
    which = "state store" if isinstance(error, redis.RedisError) else "broker"
    logger.error("%s %s: %s unavailable: %s", request.method, request.url.path, which, error)
    return JSONResponse({"detail": f"the {which} is unavailable"}, status_code=503)


async def not_configured(request: Request, error: Exception) -> JSONResponse:
    """A provider whose setting is missing (storage with no bucket, a backend not named in
    production) is a 503 naming the setting, not a 500."""
    assert isinstance(error, NotConfigured)
    logger.error("%s %s: %s", request.method, request.url.path, error.message)
    return JSONResponse({"detail": f"not configured: {error.message}"}, status_code=503)


async def not_ready(request: Request, error: Exception) -> JSONResponse:
    """A database that does not answer, or is not migrated, is a 503 naming the fix, not
    a 500 (the driver's message, which names hosts, stays in the log)."""
    assert isinstance(error, RetryableError)
    logger.error("%s %s: %s", request.method, request.url.path, error)
    if error.code == "schema":
        detail = "the database is not migrated: run `switchyard db upgrade`"
    elif error.provider == "database":
        detail = "the database is unavailable"
    else:
        detail = "a service is unavailable: try again shortly"
    return JSONResponse({"detail": detail}, status_code=503)


def include_routes(app: FastAPI, sy: App) -> None:
    """Every router; `/api/channels` where the channel family is declared. Each route
    behind credentials documents the answers they all can give (`GUARDED`)."""
    app.include_router(metrics.router(sy), responses=GUARDED)
    app.include_router(jobs.router(sy), responses=GUARDED)
    app.include_router(events.router(sy), responses=GUARDED)
    app.include_router(media.router(sy), responses=GUARDED)
    if "join_channel" in sy.jobs:
        app.include_router(channels.router(sy), responses=GUARDED)
    app.include_router(admin.router(sy), responses=GUARDED)
    app.include_router(dashboard.router(sy))
    dashboard.mount(app, sy)


def create_app(sy: App | None = None, settings: Settings | None = None) -> FastAPI:
    """The web app; boots the process unless given a Switchyard (tests)."""
    if settings is None:
        settings = sy.settings if sy is not None else get()
    auth.require_credentials(settings)
    sy = sy or boot(settings)
    booted = sy

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        booted.state.buffer.flush()  # the last buffered history and metrics writes

    app = FastAPI(title="Switchyard", summary="Background jobs: enqueue, follow, administer.",
                  openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None,
                  lifespan=lifespan, telemetry={"exclude": untraced})
    app.state.started = time.monotonic()
    app.state.switchyard = sy

    @app.get("/health", tags=["health"], responses={
        **ANY, 503: {"description": "With ready=1: the broker or the state store is down"}})
    def get_health(request: Request, ready: bool = Query(False)) -> JSONResponse:
        """Alive; with `ready=1` also the broker and the state store (503 naming the down),
        and the backend each provider runs on."""
        return health(sy, request.app.state.started, ready)

    include_routes(app, sy)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(redis.RedisError, unavailable)
    app.add_exception_handler(dramatiq.errors.BrokerConnectionError, unavailable)
    app.add_exception_handler(RetryableError, not_ready)
    app.add_exception_handler(NotConfigured, not_configured)
    app.add_middleware(auth.RequireAuth, credentials=auth.Credentials(settings))
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(SecurityHeaders)  # the outermost: 401s, 403s, 413s carry them too
    return app

"""Health: do the broker, the state store, the database and at least one worker answer,
and which backend does each provider run on?

Used by `switchyard health` (exit code) and the web process's readiness check. The
probes run at once, each on a thread of its own, and `check` returns by its deadline
whatever they do: a service that stopped answering is reported as such, by name,
instead of hanging the caller with it. The providers' checks read the settings only:
in production an unset backend fails its check (its jobs are dead-lettered), and an
outbox or local storage named there passes as `outbox (explicit)`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pika.exceptions
import redis
from dramatiq.errors import BrokerConnectionError
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from integrations.providers import backends
from store.urls import masked
from switchyard.base.redaction import masked_url
from switchyard.runtime.app import App
from switchyard.runtime.enqueue import enqueue

#: Failures that mean a service did not answer (the CLI's exit 3), not a failed check.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError, redis.TimeoutError, BrokerConnectionError,
    pika.exceptions.AMQPConnectionError, AMQPConnectorException, ConnectionError,
)
#: Time (ms) `check` gives its probes on top of the longest service timeout.
DEADLINE_MARGIN = 2_000

Probe = Callable[[], str]


def _probe(fn: Probe, where: Callable[[], str] | None = None) -> dict[str, Any]:
    """Run one check; any failure is its answer, reported by name (never a secret)."""
    try:
        return {"ok": True, "detail": fn() or "", "unreachable": False}
    except UNREACHABLE as error:
        reason = describe_unreachable(error)
        detail = f"{where()}: {reason}" if where else reason
        return {"ok": False, "detail": detail, "unreachable": True}
    except Exception as error:  # any other failure is the answer here
        return {"ok": False, "detail": f"{type(error).__name__}: {error}", "unreachable": False}


def describe_unreachable(error: BaseException) -> str:
    """Why a service did not answer: it timed out, or refused / dropped the connection."""
    detail = str(error) or type(error).__name__
    if isinstance(error, redis.TimeoutError | TimeoutError):
        return f"timed out ({detail})"
    return f"unreachable ({detail})"


def _state(app: App) -> str:
    app.state.client.ping()
    return "redis"


def _database(app: App) -> str:
    from sqlalchemy import text

    with app.database.session() as session:  # also checks the schema is migrated
        session.execute(text("SELECT 1"))
    return masked(app.database.url)


def _workers(app: App) -> str:
    workers = app.state.workers
    live = workers.live()
    if not live:
        raise LookupError(f"no worker heartbeat in the last {3 * workers.interval / 1000:g}s")
    return f"{len(live)} live: " + ", ".join(w.get("id", "?") for w in live)


def _ping(app: App, timeout: float) -> str:
    message_id = enqueue(app, "ping", {}).message_id
    if app.state.history.wait(message_id, timeout=timeout, until=("done",)):
        return f"ping {message_id} done"
    raise TimeoutError(f"ping {message_id} not done within {timeout:g}s")


def providers(app: App) -> dict[str, dict[str, Any]]:
    """A check per provider: the backend it runs on; failed when unset (production)."""
    checks = {}
    for provider, item in backends(app.settings).items():
        unset = item["backend"] is None
        detail = (f"unconfigured: {item['setting']} is not set, its jobs are dead-lettered"
                  if unset else str(item["label"]))
        checks[provider] = {"ok": not unset, "detail": detail, "unreachable": False}
    return checks


def _probes(app: App, ping_timeout: float) -> dict[str, Callable[[], dict[str, Any]]]:
    settings = app.settings
    broker_kind = "RabbitMQ" if settings.uses_rabbitmq else "Redis"

    def broker_at() -> str:
        return f"broker {broker_kind} at {masked_url(settings.queue_url)}"

    def state_at() -> str:
        return f"state store Redis at {masked_url(settings.state_url)}"

    probes = {
        "broker": lambda: _probe(app.queues.ping, broker_at),
        "state_store": lambda: _probe(lambda: _state(app), state_at),
        "database": lambda: _probe(lambda: _database(app)),
        "workers": lambda: _probe(lambda: _workers(app), state_at),
    }
    if ping_timeout > 0:
        probes["ping"] = lambda: _probe(lambda: _ping(app, ping_timeout))
    return probes


def run_by(probes: dict[str, Callable[[], dict[str, Any]]],
           deadline_ms: int) -> dict[str, dict[str, Any]]:
    """Each probe's answer; one still running at the deadline is left behind (a daemon
    thread) and reported as not answering."""
    answers: dict[str, dict[str, Any]] = {}
    threads = [threading.Thread(target=_answer, args=(answers, name, probe),
                                name=f"health-{name}", daemon=True)
               for name, probe in probes.items()]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline_ms / 1000
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    late = {"ok": False, "detail": f"no answer within {deadline_ms} ms", "unreachable": True}
    return {name: dict(answers.get(name) or late) for name in probes}


def _answer(answers: dict[str, dict[str, Any]], name: str,
            probe: Callable[[], dict[str, Any]]) -> None:
    answers[name] = probe()


def check(app: App, *, ping_timeout: float = 0, deadline_ms: int | None = None) -> dict[str, Any]:
    """Every probe, answered within `deadline_ms` (default: the longest service timeout
    plus `DEADLINE_MARGIN`, and a ping job's wait); `unreachable` names the services
    that did not answer."""
    if deadline_ms is None:
        settings = app.settings
        deadline_ms = DEADLINE_MARGIN + max(settings.redis_timeout_ms,
                                            settings.rabbitmq_connect_timeout_ms,
                                            int(ping_timeout * 1000))
    checks = {**run_by(_probes(app, ping_timeout), deadline_ms), **providers(app)}
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks,
            "unreachable": [name for name, c in checks.items() if c["unreachable"]]}

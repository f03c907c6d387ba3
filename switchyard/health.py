"""Health: do the broker, the state store, the database and at least one worker answer?

Used by `switchyard health` (exit code) and the web process's readiness check.
"""

from __future__ import annotations

from typing import Any

from store.urls import masked
from switchyard.app import App
from switchyard.enqueue import enqueue


def _probe(fn: Any) -> dict[str, Any]:
    try:
        return {"ok": True, "detail": fn() or ""}
    except Exception as error:  # any failure is the answer here, reported by name
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"}


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


def check(app: App, *, ping_timeout: float = 0) -> dict[str, Any]:
    checks = {
        "broker": _probe(app.queues.ping),
        "state_store": _probe(lambda: _state(app)),
        "database": _probe(lambda: _database(app)),
        "workers": _probe(lambda: _workers(app)),
    }
    if ping_timeout > 0:
        checks["ping"] = _probe(lambda: _ping(app, ping_timeout))
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}

"""Health: do the broker, the state store, the database and at least one worker answer?

Used by `switchyard health` (exit code) and the web process's readiness check.
"""

from __future__ import annotations

from typing import Any

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from broker import Switchyard


def _probe(fn: Any) -> dict[str, Any]:
    try:
        return {"ok": True, "detail": fn() or ""}
    except Exception as error:  # any failure is the answer here, reported by name
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"}


def _broker(sy: Switchyard) -> str:
    if isinstance(sy.broker, RedisBroker):
        sy.broker.client.ping()
        return "redis"
    if isinstance(sy.broker, RabbitmqBroker):
        if not sy.broker.connection.is_open:
            raise ConnectionError("connection closed")
        return "rabbitmq"
    return type(sy.broker).__name__


def _state(sy: Switchyard) -> str:
    sy.state.ping()
    return "redis"


def _database(sy: Switchyard) -> str:
    from sqlalchemy import text

    from store.db import masked

    with sy.database.session() as session:  # also checks the schema is migrated
        session.execute(text("SELECT 1"))
    return masked(sy.database.url)


def _workers(sy: Switchyard) -> str:
    live = sy.heartbeats.live()
    if not live:
        raise LookupError("no worker heartbeat in the last "
                          f"{3 * sy.heartbeats.interval / 1000:g}s")
    return f"{len(live)} live: " + ", ".join(w.get("id", "?") for w in live)


def _ping(sy: Switchyard, timeout: float) -> str:
    message = sy.broker.get_actor("ping").send()
    sy.buffer.flush()
    if sy.history.wait(message.message_id, timeout=timeout, until=("done",)):
        return f"ping {message.message_id} done"
    raise TimeoutError(f"ping {message.message_id} not done within {timeout:g}s")


def check(sy: Switchyard, *, ping_timeout: float = 0) -> dict[str, Any]:
    checks = {
        "broker": _probe(lambda: _broker(sy)),
        "state_store": _probe(lambda: _state(sy)),
        "database": _probe(lambda: _database(sy)),
        "workers": _probe(lambda: _workers(sy)),
    }
    if ping_timeout > 0:
        checks["ping"] = _probe(lambda: _ping(sy, ping_timeout))
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}

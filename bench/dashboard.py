"""How fast the operator UI answers with a lot to show: 50 queues, 10,000 dead letters.

Why: the overview reads every queue's numbers and an hour and a day of time buckets on
each refresh, and the dead-letters page must not load a queue's dead letters to show
one page of them (it pages through Redis's indexes). This fills a loopback Redis under
a unique key prefix with 50 queues (a few waiting jobs each), 10,000 dead letters in
one queue and 10 in another, serves the web app with uvicorn on loopback, and times
GET `/dashboard/` and the first page of each queue's dead letters over HTTP (median
of `--rounds` after a warm-up). Its keys are deleted afterwards (SCAN + DEL); its files
(SQLite, development keys) live in a temporary directory removed at the end.

Usage: uv run python bench/dashboard.py [--redis-url redis://127.0.0.1:6379/0] [--rounds 20]
Prints `overview_ms=`, `dead_letters_page_ms=` (10,000) and `dead_letters_page_10_ms=`.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import check_loopback, purge  # noqa: E402

QUEUES, DEAD, FEW = 50, 10_000, 10
USER, PASSWORD = "bench", "bench-Password-123"


def build(url: str, prefix: str, var_dir: str) -> Any:
    import dramatiq

    from switchyard import app as runtime
    from switchyard import settings

    config = settings.load(_env_file=None, redis_url=url, broker_url=url, key_prefix=prefix,
                           broker_namespace=f"{prefix}-ns", web_username=USER,
                           web_password=PASSWORD, api_token="bench-token-0123456789abcdef",
                           var_dir=var_dir)
    app = runtime.build(config)
    for i in range(QUEUES):
        queue = f"bench-{i:02d}"
        app.broker.declare_queue(queue)
        for n in range(3):
            app.broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="bench_job",
                                                args=(), kwargs={"n": n}, options={}))
    return app


def bury(app: Any, queue: str, n: int) -> None:
    import dramatiq

    errors = ("PermanentError", "InvalidPayload", "NotFound")
    for i in range(n):
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue, actor_name=f"bench_actor_{i % 4}", args=(),
            kwargs={"n": i, "note": "x" * 200}, options={})
        app.state.dead_letters.add(message, {"error": errors[i % 3], "attempts": 3,
                                             "message": "failed for the benchmark",
                                             "traceback": "Traceback ...\n" * 20})


def serve(app: Any) -> tuple[Any, int]:
    import uvicorn

    from tests.support.services import free_port
    from web.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("uvicorn did not start")
        time.sleep(0.05)
    return server, port


def timed_get(port: int, path: str) -> float:
    """Milliseconds for one GET of `path`, the whole body read."""
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    connection.request("GET", path, headers={"Authorization": f"Basic {auth}"})
    response = connection.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    connection.close()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status}")
    return elapsed


def median_ms(port: int, path: str, rounds: int) -> float:
    timed_get(port, path)  # warm-up
    return statistics.median(timed_get(port, path) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    url = check_loopback(args.redis_url)
    prefix = f"dashbench-{uuid.uuid4().hex[:8]}"
    var_dir = tempfile.mkdtemp(prefix="switchyard-dashbench-")  # SQLite, development keys
    app = build(url, prefix, var_dir)
    try:
        started = time.monotonic()
        bury(app, "bench-00", DEAD)
        bury(app, "bench-01", FEW)
        print(f"filled {QUEUES} queues, {DEAD} + {FEW} dead letters in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        server, port = serve(app)
        overview = median_ms(port, "/dashboard/", args.rounds)
        big = median_ms(port, "/dashboard/dead-letters?queue=bench-00", args.rounds)
        small = median_ms(port, "/dashboard/dead-letters?queue=bench-01", args.rounds)
        filtered = median_ms(port, "/dashboard/dead-letters?queue=bench-00&actor=bench_actor_1"
                                   "&error=NotFound&page=10", args.rounds)
        server.should_exit = True
        print(f"overview_ms={overview:.1f}")
        print(f"dead_letters_page_ms={big:.1f}")
        print(f"dead_letters_page_10_ms={small:.1f}")
        print(f"dead_letters_filtered_page_ms={filtered:.1f}")
    finally:
        app.close()
        purge(url, f"{prefix}*")
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

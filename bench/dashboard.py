"""How fast the operator UI answers with a lot to show: 50 queues, 10,000 dead letters,
100,000 jobs waiting; and how soon a job's change reaches a client of the event stream.

Why: the overview reads every queue's numbers and an hour and a day of time buckets on
each refresh, and the dead-letters page must not load a queue's dead letters to show
one page of them (it pages through Redis's indexes). This fills a loopback Redis under
a unique key prefix with 50 queues (a few waiting jobs each), 10,000 dead letters in
one queue and 10 in another, serves the web app with uvicorn on loopback, and times
GET `/dashboard/` and the first page of each queue's dead letters over HTTP (median
of `--rounds` after a warm-up). Its keys are deleted afterwards (SCAN + DEL); its files
(SQLite, development keys) live in a temporary directory removed at the end.

The jobs page: `--waiting` jobs (100,000) are queued in the queue with 10,000 dead
letters, and the first page of its waiting jobs is loaded 50 times, from the jobs API and
from the dashboard's Queues page: `jobs_page_ms` is the API's p95 (goal at most 50 ms).

Event lag: a client reads `GET /api/events` while a producer thread enqueues jobs
through `switchyard.runtime.enqueue` at up to `--event-rate` (2,000) a second for
`--event-seconds`; each job's lag is from its enqueue returning to its `queued` event
read by the client, the history's flush interval (FLUSH_INTERVAL_MS) included:
`event_lag_p99_ms` (goal at most 100 ms), with the rate reached.

Priority: `bench/priority.py`'s `priority_wait_p99_ms_<broker>` (goal at most 50 ms), a
job of priority 9 behind `--priority-backlog` (10,000) jobs, on Redis and, when it answers
at `--amqp-url`, RabbitMQ.

Usage: uv run python bench/dashboard.py [--redis-url redis://127.0.0.1:6379/0] [--rounds 20]
    [--waiting 100000] [--event-rate 2000] [--event-seconds 10]
    [--amqp-url amqp://guest:guest@127.0.0.1:5672/%2F] [--priority-backlog 10000]
Prints `overview_ms=`, `dead_letters_page_ms=` (10,000), `dead_letters_page_10_ms=`,
`jobs_page_ms=`, `queues_page_ms=`, `event_lag_p99_ms=`, `event_rate_per_s=` and
`priority_wait_p99_ms_redis=` / `_rabbitmq=`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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

from bench import priority  # noqa: E402
from bench.common import check_loopback, purge  # noqa: E402

QUEUES, DEAD, FEW = 50, 10_000, 10
USER, PASSWORD = "bench", "bench-Password-123"


def build(url: str, prefix: str, var_dir: str) -> Any:
    import dramatiq

    from switchyard import boot as runtime
    from switchyard.base import settings

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


def fill_waiting(app: Any, queue: str, n: int) -> None:
    """`n` jobs waiting on `queue` (sent as a producer outside Switchyard would: each
    recorded by the history as it is queued)."""
    import dramatiq

    for i in range(n):
        app.broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="bench_job",
                                            args=(), kwargs={"n": i}, options={}))
    app.state.buffer.flush()


def p95_ms(port: int, path: str, loads: int = 50) -> float:
    timed_get(port, path)  # warm-up
    times = sorted(timed_get(port, path) for _ in range(loads))
    return times[max(0, int(len(times) * 0.95) - 1)]


def event_lag(app: Any, port: int, rate: int, seconds: float) -> tuple[float, float]:
    """(p99 lag ms from enqueue to the client reading its `queued` event, jobs/s sent)."""
    import json

    from pydantic import BaseModel

    from switchyard.runtime.enqueue import enqueue
    from switchyard.runtime.jobs import Context, job

    class Tick(BaseModel):
        n: int

    @job(Tick, actor_name="bench_tick", queue_name="bench-events")
    def bench_tick(ctx: Context, payload: Tick) -> None: ...

    app.declare([bench_tick])
    sent: dict[str, float] = {}
    lags: list[float] = []
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/api/events?queue=bench-events",
                       headers={"Authorization": f"Basic {auth}"})
    response = connection.getresponse()
    done = threading.Event()

    def read() -> None:
        with contextlib.suppress(OSError, AttributeError, ValueError):  # closed at the end
            follow()

    def follow() -> None:
        while not done.is_set():
            line = response.readline().decode()
            if line.startswith("data: "):
                event = json.loads(line[6:])
                at = time.perf_counter()
                if event["status"] == "queued" and event["id"] in sent:
                    lags.append((at - sent[event["id"]]) * 1000)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)  # the stream is open
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        wait = started + n / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        message_id = enqueue(app, "bench_tick", {"n": n}, flush=False).message_id
        sent[message_id] = time.perf_counter()
        n += 1
    elapsed = time.perf_counter() - started
    deadline = time.monotonic() + 5
    while len(lags) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    connection.close()
    lags.sort()
    if len(lags) < n:
        print(f"event lag: {n - len(lags)} of {n} events not read within 5 s", file=sys.stderr)
    p99 = lags[max(0, int(len(lags) * 0.99) - 1)] if lags else float("nan")
    return p99, n / elapsed


def median_ms(port: int, path: str, rounds: int) -> float:
    timed_get(port, path)  # warm-up
    return statistics.median(timed_get(port, path) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--event-rate", type=int, default=2_000)
    parser.add_argument("--event-seconds", type=float, default=10.0)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--priority-backlog", type=int, default=10_000)
    args = parser.parse_args()
    url = check_loopback(args.redis_url)
    prefix = f"dashbench-{uuid.uuid4().hex[:8]}"
    var_dir = tempfile.mkdtemp(prefix="switchyard-dashbench-")  # SQLite, development keys
    app = build(url, prefix, var_dir)
    try:
        started = time.monotonic()
        bury(app, "bench-00", DEAD)
        bury(app, "bench-01", FEW)
        fill_waiting(app, "bench-00", args.waiting)
        print(f"filled {QUEUES} queues, {DEAD} + {FEW} dead letters, {args.waiting} waiting "
              f"in {time.monotonic() - started:.1f} s", file=sys.stderr)
        server, port = serve(app)
        overview = median_ms(port, "/dashboard/", args.rounds)
        big = median_ms(port, "/dashboard/dead-letters?queue=bench-00", args.rounds)
        small = median_ms(port, "/dashboard/dead-letters?queue=bench-01", args.rounds)
        filtered = median_ms(port, "/dashboard/dead-letters?queue=bench-00&actor=bench_actor_1"
                                   "&error=NotFound&page=10", args.rounds)
        jobs_page = p95_ms(port, "/api/queues/bench-00/jobs?state=waiting")
        queues_page = p95_ms(port, "/dashboard/queues?queue=bench-00")
        lag_p99, rate = event_lag(app, port, args.event_rate, args.event_seconds)
        server.should_exit = True
        print(f"overview_ms={overview:.1f}")
        print(f"dead_letters_page_ms={big:.1f}")
        print(f"dead_letters_page_10_ms={small:.1f}")
        print(f"dead_letters_filtered_page_ms={filtered:.1f}")
        print(f"jobs_page_ms={jobs_page:.1f} queues_page_ms={queues_page:.1f}")
        print(f"event_lag_p99_ms={lag_p99:.1f} event_rate_per_s={rate:.0f}", flush=True)
    finally:
        app.close()
        purge(url, f"{prefix}*")
        shutil.rmtree(var_dir, ignore_errors=True)
    # A priority job behind a backlog, each broker (bench/priority.py).
    priority.report(url, args.amqp_url, backlog=args.priority_backlog)


if __name__ == "__main__":
    main()

"""How long a priority job waits behind a backlog: `priority_wait_p99_ms` per broker.

Why: a job sent with a priority must not wait for the jobs queued ahead of it, only for
what a worker already took (its prefetch). Each broker's turn: `--backlog` (10,000)
normal no-op jobs are queued (one bulk send), an in-process worker with `--threads` (4)
threads starts on them and, once it ran 300 of them (warmed up), every 40 ms a job of
priority 9 is sent through
`switchyard.runtime.enqueue` while the backlog lasts; its wait is from its enqueue
returning to its run starting (the job notes the time). RabbitMQ's queue is declared with
`x-max-priority` (RABBITMQ_MAX_PRIORITY=9) under a name of its own, deleted afterwards;
Redis keys live under a unique prefix, deleted afterwards.

Usage: uv run python bench/priority.py [--redis-url redis://127.0.0.1:6379/0]
    [--amqp-url amqp://guest:guest@127.0.0.1:5672/%2F] [--backlog 10000] [--samples 50]
Prints `priority_wait_p99_ms_redis=`, `priority_wait_p99_ms_rabbitmq=` (goal at most 50),
each with the backlog left when the last sample ran.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    check_amqp_loopback,
    check_loopback,
    delete_queues,
    percentile,
    purge,
    quiet_logging,
    rabbitmq_answers,
)

INTERVAL_S = 0.04
#: Backlog jobs the worker runs before the first sample.
WARM_UP = 300


def priority_wait(redis_url: str, broker_url: str, *, backlog: int, samples: int,
                  threads: int) -> tuple[float, int]:
    """(p99 wait ms of a priority-9 job behind `backlog` normal ones, backlog left)."""
    import dramatiq
    from pydantic import BaseModel

    from switchyard import boot as runtime
    from switchyard.base import settings
    from switchyard.runtime.enqueue import enqueue
    from switchyard.runtime.jobs import Context, job

    prefix = f"priobench-{uuid.uuid4().hex[:8]}"
    queue = f"bench-prio-{uuid.uuid4().hex[:8]}"
    var_dir = tempfile.mkdtemp(prefix="switchyard-priobench-")
    config = settings.load(_env_file=None, redis_url=redis_url, broker_url=broker_url,
                           key_prefix=prefix, broker_namespace=f"{prefix}-ns",
                           rabbitmq_max_priority=9, var_dir=var_dir)
    app = runtime.build(config)
    started: dict[int, float] = {}

    class Tick(BaseModel):
        n: int

    @job(Tick, actor_name="bench_prio", queue_name=queue)
    def bench_prio(ctx: Context, payload: Tick) -> None:
        if payload.n < 0:
            started[payload.n] = time.perf_counter()

    app.declare([bench_prio])
    worker = None
    try:
        bench_prio.send_many([{"n": n} for n in range(backlog)])
        worker = dramatiq.Worker(app.broker, worker_threads=threads, worker_timeout=100)
        worker.start()
        # warmed up: the worker has taken a few hundred of the backlog (its start, its
        # first fetches and script loads are not what a priority job meets)
        deadline = time.monotonic() + 60
        while app.queues.counts(queue).waiting > backlog - WARM_UP and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        sent: dict[int, float] = {}
        for i in range(1, samples + 1):
            time.sleep(INTERVAL_S)
            enqueue(app, "bench_prio", {"n": -i}, priority=9, flush=False)
            sent[-i] = time.perf_counter()
        left = app.queues.counts(queue).waiting
        deadline = time.monotonic() + 60
        while len(started) < samples and time.monotonic() < deadline:
            time.sleep(0.01)
        waits = [(started[n] - sent[n]) * 1000 for n in sent if n in started]
        if len(waits) < samples:
            print(f"{samples - len(waits)} priority jobs did not start within 60 s",
                  file=sys.stderr)
        if "--debug" in sys.argv:
            print([round(w, 1) for w in waits], file=sys.stderr)
        return (percentile(sorted(waits), 99) if waits else float("nan")), left
    finally:
        if worker is not None:
            worker.stop()
        app.close()
        purge(redis_url, f"{prefix}*")
        if broker_url.startswith("amqp"):
            delete_queues(broker_url, [queue])
        shutil.rmtree(var_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--debug", action="store_true", help="print every wait")
    args = parser.parse_args()
    report(check_loopback(args.redis_url), args.amqp_url, backlog=args.backlog,
           samples=args.samples, threads=args.threads)


def report(redis_url: str, amqp_url: str, *, backlog: int = 10_000, samples: int = 50,
           threads: int = 4) -> None:
    """Print each broker's figure (RabbitMQ's only when it answers)."""
    quiet_logging()
    brokers = {"redis": redis_url}
    if rabbitmq_answers(check_amqp_loopback(amqp_url)):
        brokers["rabbitmq"] = amqp_url
    for name, url in brokers.items():
        p99, left = priority_wait(redis_url, url, backlog=backlog, samples=samples,
                                  threads=threads)
        print(f"priority_wait_p99_ms_{name}={p99:.1f} backlog_left_{name}={left}", flush=True)


if __name__ == "__main__":
    main()

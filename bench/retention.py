"""What jobs leave behind in Redis: bytes per retained record, after N jobs.

Why: every job writes history, idempotency marks, metrics and, when it fails for good,
a dead letter. Switchyard promises that what stays is bounded by the retention settings
(history caps and TTL, the redelivery guard, the dead-letter cap and TTL, the payload
cap), not by traffic. This runs N jobs through the full pipeline on a private Redis
(nothing else in it), then reports, per kind of record, how many are kept, how many
the settings allow, and their bytes (Redis's MEMORY USAGE, sampled), plus Redis's own
used-memory growth.

Jobs: 1 % fail for good (dead letters, each with a ~300-byte payload), 10 % carry an
idempotency key (a done mark for IDEMPOTENCY_TTL_MS); the rest carry none (a done mark
for REDELIVERY_GUARD_MS only).

Usage: uv run python bench/retention.py [--jobs 100000] [--threads 8]
Last line: `retained_bytes_per_job=<bytes>` (all kinds together, over N).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import private_redis  # noqa: E402

PREFIX = "retention"
QUEUE = "bench"
#: How many keys of each kind are measured with MEMORY USAGE.
SAMPLE = 200


def build(url: str, args: argparse.Namespace) -> Any:
    from pydantic import BaseModel

    from switchyard import boot as runtime
    from switchyard.base import settings
    from switchyard.base.errors import PermanentError
    from switchyard.runtime.jobs import Context, job

    class Work(BaseModel):
        n: int
        note: str = ""

    @job(Work, actor_name="work", queue_name=QUEUE, max_retries=0)
    def work(ctx: Context, payload: Work) -> None:
        if payload.n % 100 == 0:
            raise PermanentError("rejected")

    config = settings.load(_env_file=None, redis_url=url, broker_url=url, key_prefix=PREFIX,
                           broker_namespace=f"{PREFIX}-ns",
                           redelivery_guard_ms=args.redelivery_guard_ms)
    app = runtime.build(config)
    app.declare([work])
    return app


def run_jobs(app: Any, n: int, threads: int) -> float:
    """Enqueue and run `n` jobs; seconds the worker took."""
    import dramatiq

    actor = app.jobs["work"].actor
    for i in range(n):
        options = {"idempotency_key": f"order-{i}"} if i % 10 == 1 else {}
        payload = {"n": i, "note": "x" * 300} if i % 100 == 0 else {"n": i}
        actor.send_with_options(kwargs=payload, **options)
    app.state.buffer.flush()
    started = time.monotonic()
    worker = dramatiq.Worker(app.broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        while finished(app) < n:
            time.sleep(0.2)
    finally:
        worker.stop()
    app.state.buffer.flush()
    return time.monotonic() - started


def finished(app: Any) -> int:
    app.state.buffer.flush()
    counts = app.state.metrics.counters()
    return sum(v for (_a, _q, outcome), v in counts.items() if outcome in ("done", "dead"))


KINDS = {  # kind -> (key pattern, what bounds it)
    "history records": (f"{PREFIX}:job:*", "HISTORY_KEEP_DONE + HISTORY_KEEP_FAILED "
                                           "per queue"),
    "history tombstones": (f"{PREFIX}:job:*:trimmed", "jobs trimmed in the last minute"),
    "done marks (keyed)": (f"{PREFIX}:idem:work:order-*", "keyed jobs in IDEMPOTENCY_TTL_MS"),
    "done marks (no key)": (f"{PREFIX}:idem:work:????????-*", "jobs in REDELIVERY_GUARD_MS"),
    "dead letters": (f"{PREFIX}:dlq:q:*:items", "DEAD_LETTER_KEEP per queue, "
                                               "DEAD_LETTER_TTL_MS"),
}


def measure(client: redis.Redis, pattern: str) -> tuple[int, float]:
    """(records, mean bytes per record) of the keys matching `pattern`."""
    keys = [k for k in client.scan_iter(match=pattern, count=1000)
            if pattern.endswith("trimmed") or not k.endswith(b":trimmed")]
    if pattern.endswith(":items"):  # one hash holds a queue's dead letters
        records = sum(int(client.hlen(k)) for k in keys)
        total = sum(int(client.memory_usage(k) or 0) for k in keys)
        index = sum(int(client.memory_usage(k.removesuffix(b":items")) or 0) for k in keys)
        return records, (total + index) / records if records else 0.0
    sample = keys[:SAMPLE]
    sizes = [int(client.memory_usage(k) or 0) for k in sample]
    return len(keys), sum(sizes) / len(sizes) if sizes else 0.0


def report(client: redis.Redis, before: int, seconds: float, n: int) -> None:
    used = int(client.info("memory")["used_memory"])
    print(f"{n} jobs in {seconds:.1f} s ({n / seconds:.0f} jobs/s); "
          f"Redis used_memory grew {(used - before) / 1e6:.2f} MB")
    print(f"{'record':<22} {'kept':>8} {'bytes each':>11} {'bytes':>11}  bounded by")
    total = 0.0
    for kind, (pattern, bound) in KINDS.items():
        count, each = measure(client, pattern)
        total += count * each
        print(f"{kind:<22} {count:>8} {each:>11.0f} {count * each:>11.0f}  {bound}")
    print(f"retained bytes per job run: {total / n:.1f}")
    print(f"retained_bytes_per_job={total / n:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--redelivery-guard-ms", type=int, default=60_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # every dead letter logs an ERROR
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        app = build(url, args)
        before = int(client.info("memory")["used_memory"])
        seconds = run_jobs(app, args.jobs, args.threads)
        report(client, before, seconds, args.jobs)
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

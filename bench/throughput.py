"""No-op job throughput: bare Dramatiq vs Switchyard's pipeline vs Celery vs huey.

Why: Switchyard wraps every job in idempotency, history, metrics, retry policy, dead
letters, concurrency, heartbeats and results. This measures what that costs per job,
next to bare Dramatiq and two other Redis-backed job queues, on the same Redis.

Method, for each system: enqueue N no-op jobs, then start one consumer with 8 threads
and time from its start until the N-th job has run. The job body only does
`INCR` on a counter; the job that brings it to N pushes a token the timer blocks on.
Systems alternate a, b, c, d, e per round. Every measurement runs in a fresh child
process (this script with `--child`), with the worker in-process in that child, so
no system inherits another's threads, connections or global state.

(e) is Switchyard's pipeline again with payload encryption switched off
(PAYLOAD_ENCRYPTION=false), so the cost of sealing is measured in the same run; every
Dramatiq job (a, b, e) carries the same small payload (`PAYLOAD`, a notification's
shape), so (b) seals and opens real arguments.

Usage: uv run python bench/throughput.py [--n 2000] [--rounds 3] [--redis-url URL]
The last lines printed are `encrypted/plain=<median b / median e>` and then
`pipeline/bare=<median b / median a>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import check_loopback, purge  # noqa: E402

DEFAULT_URL = "redis://127.0.0.1:6379/14"
THREADS = 8
SYSTEMS = {
    "a": "dramatiq (bare)",
    "b": "switchyard pipeline",
    "c": "celery (threads)",
    "d": "huey (threads)",
    "e": "switchyard, not sealed",
}
#: The arguments of every Dramatiq job (a, b, e): a notification's shape, ~250 bytes.
PAYLOAD = {"userId": "user-42", "phoneNumber": "+15550001111", "title": "New message",
           "body": "Ann: are we still on for tomorrow at ten? " * 4}
QUIET_LOGGERS = ("dramatiq", "celery", "kombu", "amqp", "huey", "periodiq", "switchyard")
ACTOR = "bench_noop"

Outcome = dict[str, Any]


# --- shared by every system -------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One measurement: where, under which unique key tag, how many jobs, how long at most."""

    url: str
    tag: str
    n: int
    timeout: float


class Completions:
    """Counts finished jobs in Redis; the N-th pushes a token that `wait` blocks on.

    Blocking on a list (rather than polling the counter) stops the clock within a
    round trip of the last job, whatever the system.
    """

    def __init__(self, run: Run) -> None:
        self.client = redis.Redis.from_url(run.url)
        self.n = run.n
        self.count_key = f"{run.tag}:bench:count"
        self.done_key = f"{run.tag}:bench:done"

    def mark(self) -> None:
        if self.client.incr(self.count_key) == self.n:
            self.client.rpush(self.done_key, 1)

    def wait(self, timeout: float) -> bool:
        """Block until the N-th job is done or `timeout` passes.

        One-second BLPOPs, because redis-py 8 gives every connection a 5 s socket
        timeout by default, which a single long BLPOP would hit.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.blpop([self.done_key], timeout=1) is not None:
                return True
        return False

    def count(self) -> int:
        return int(self.client.get(self.count_key) or 0)


def timed(start: Callable[[], None], done: Completions, timeout: float) -> Outcome:
    """Start a consumer and time it until every job has completed (or `timeout`)."""
    began = time.perf_counter()
    start()
    finished = done.wait(timeout)
    seconds = time.perf_counter() - began
    completed = done.count()
    if not finished:
        return {"error": f"timed out after {timeout:.0f}s: {completed}/{done.n} completed"}
    return {"seconds": seconds, "jobs_per_s": done.n / seconds, "completed": completed}


# --- (a) and (b): Dramatiq ----------------------------------------------------------


def run_dramatiq(
    broker: Any,
    run: Run,
    options: dict[str, Any],
    before_start: Callable[[], None],
    sent: list[Any],
) -> Outcome:
    """Enqueue N no-ops on `broker`, then time an in-process 8-thread Worker on them.

    The messages are appended to `sent` as they go, so keys named after them can be
    deleted even if the run fails halfway.
    """
    import dramatiq

    done = Completions(run)

    @dramatiq.actor(broker=broker, actor_name=ACTOR, queue_name="bench", **options)
    def bench_noop(**payload: Any) -> None:
        done.mark()

    for _ in range(run.n):
        sent.append(bench_noop.send(**PAYLOAD))
    before_start()
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
    try:
        return timed(worker.start, done, run.timeout)
    finally:
        worker.stop()


def run_bare(run: Run) -> Outcome:
    """(a) A RedisBroker with Dramatiq's default middleware."""
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=run.url, namespace=run.tag)
    try:
        return run_dramatiq(broker, run, {}, before_start=lambda: None, sent=[])
    finally:
        broker.close()


def run_switchyard(run: Run, *, sealed: bool = True) -> Outcome:
    """(b) Switchyard's broker with its full middleware stack, as `runtime.build` makes it;
    payloads sealed under a key made for the run ((e): `sealed=False`, not sealed)."""
    from switchyard import app as runtime
    from switchyard import settings
    from switchyard.sealing import generate_entry

    # broker_url too, so a BROKER_URL in the environment cannot move the queues elsewhere.
    config = settings.load(
        redis_url=run.url, broker_url=run.url, key_prefix=run.tag, broker_namespace=f"{run.tag}-ns",
        payload_keys=generate_entry("bench") if sealed else "", payload_encryption=sealed,
    )
    sy = runtime.build(config)
    messages: list[Any] = []
    try:
        # Enqueue-side history/metrics writes are flushed before the clock starts.
        outcome = run_dramatiq(
            sy.broker, run, {}, before_start=sy.state.buffer.flush, sent=messages
        )
        sy.state.buffer.flush()
        outcome["checks"] = check_switchyard(sy, run.n)
        return outcome
    finally:
        sy.state.buffer.flush()
        sy.close()


def check_switchyard(sy: Any, n: int) -> list[str]:
    """Cross-check the pipeline's own records against the N jobs that ran."""
    problems = []
    done = sy.state.metrics.totals("done").get(ACTOR, 0)
    enqueued = sy.state.metrics.totals("enqueued").get(ACTOR, 0)
    if done != n or enqueued != n:
        problems.append(f"metrics count done={done} enqueued={enqueued}, expected {n}")
    history = sy.state.history
    kept = len(history.finished("bench", "done"))
    if kept != min(n, history.keep_done):
        problems.append(f"history keeps {kept} done jobs, expected {min(n, history.keep_done)}")
    left = sy.queues.depth("bench")
    if left:
        problems.append(f"{left} messages still in the queue")
    return problems


# --- (c) Celery ---------------------------------------------------------------------


def celery_app(run: Run) -> Any:
    """A Celery app whose every Redis key starts with the run's tag; no results, no pidbox."""
    from celery import Celery

    app = Celery(run.tag, broker=run.url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": f"{run.tag}:"},  # every kombu key
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=False,
    )
    return app


def run_celery(run: Run) -> Outcome:
    """(c) Celery 5, threads pool of 8, worker in a thread of this process."""
    try:
        from celery.worker import WorkController, state
    except ImportError as error:
        return {"skipped": f"{type(error).__name__}: {error}"}
    app = celery_app(run)
    done = Completions(run)

    @app.task(name=ACTOR, ignore_result=True)
    def bench_noop(**payload: Any) -> None:
        done.mark()

    for _ in range(run.n):
        bench_noop.delay(**PAYLOAD)
    worker = WorkController(
        app=app,
        pool="threads",
        concurrency=THREADS,
        hostname=f"{run.tag}@127.0.0.1",
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="celery-worker", daemon=True)
    try:
        return timed(thread.start, done, run.timeout)
    finally:
        state.should_terminate = 0  # how celery.contrib.testing stops a threaded worker
        thread.join(30)
        app.close()


# --- (d) huey -----------------------------------------------------------------------


def run_huey(run: Run) -> Outcome:
    """(d) RedisHuey, consumer with 8 worker threads in this process."""
    try:
        from huey import RedisHuey
    except ImportError as error:
        return {"skipped": f"{type(error).__name__}: {error}"}
    huey = RedisHuey(name=run.tag, url=run.url, results=False)
    done = Completions(run)

    @huey.task(name=ACTOR)
    def bench_noop(**payload: Any) -> None:
        done.mark()

    for _ in range(run.n):
        bench_noop(**PAYLOAD)
    consumer = huey.create_consumer(workers=THREADS, worker_type="thread", periodic=False)
    try:
        return timed(consumer.start, done, run.timeout)
    finally:
        consumer.stop(graceful=True)


RUNNERS: dict[str, Callable[[Run], Outcome]] = {
    "a": run_bare,
    "b": run_switchyard,
    "c": run_celery,
    "d": run_huey,
    "e": lambda run: run_switchyard(run, sealed=False),
}


# --- child process: one measurement ---------------------------------------------------


class WarningCollector(logging.Handler):
    """Keeps the count and a few samples of WARNING+ records (ids only, no payloads)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        line = f"{record.levelname} {record.name}: {record.getMessage()}".splitlines()[0]
        if len(self.samples) < 3 and line[:200] not in self.samples:
            self.samples.append(line[:200])


def quiet_logging() -> WarningCollector:
    """Drop Dramatiq/Celery/huey logging below WARNING; collect what remains."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    collector = WarningCollector()
    logging.getLogger().addHandler(collector)
    return collector


def child_main(args: argparse.Namespace) -> int:
    """Run one system once and print its outcome as one JSON line."""
    collector = quiet_logging()
    run = Run(args.redis_url, args.tag, args.n, args.timeout)
    try:
        outcome = RUNNERS[args.child](run)
    except Exception as error:  # reported by the parent, with the traceback on stderr
        traceback.print_exc()
        outcome = {"error": f"{type(error).__name__}: {error}"}
    finally:
        purge(run.url, f"*{run.tag}*")
    outcome.update(warnings=collector.count, samples=collector.samples)
    print(json.dumps(outcome), flush=True)
    return 0


# --- parent process: rounds and report ----------------------------------------------


def measure(system: str, run: Run) -> Outcome:
    """Run one measurement in a fresh child process and parse its outcome."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "BROKER_URL")}
    flags = {
        "--child": system,
        "--n": run.n,
        "--redis-url": run.url,
        "--tag": run.tag,
        "--timeout": run.timeout,
    }
    command = [sys.executable, str(Path(__file__).resolve())]
    command += [str(part) for flag in flags.items() for part in flag]
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=run.timeout + 120
        )
    except subprocess.TimeoutExpired:
        return {"error": "child process hung"}
    lines = proc.stdout.strip().splitlines()
    try:
        outcome: Outcome = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"child exited {proc.returncode}: {tail[:300]}"}
    if "error" in outcome and proc.stderr.strip():
        outcome["stderr_tail"] = proc.stderr.strip().splitlines()[-1][:300]
    return outcome


def describe(outcome: Outcome) -> str:
    if "jobs_per_s" in outcome:
        return f"{outcome['jobs_per_s']:8.0f} jobs/s"
    if "skipped" in outcome:
        return "skipped"
    return "FAILED"


def report_problems(label: str, outcome: Outcome) -> None:
    """Print errors, failed checks and logged warnings of one measurement."""
    notes = []
    if "error" in outcome:
        notes.append(f"error: {outcome['error']}")
    if "stderr_tail" in outcome:
        notes.append(f"stderr: {outcome['stderr_tail']}")
    if "skipped" in outcome:
        notes.append(f"skipped: {outcome['skipped']}")
    notes += [f"check failed: {c}" for c in outcome.get("checks", [])]
    if outcome.get("warnings"):
        notes.append(f"{outcome['warnings']} WARNING+ log record(s), e.g. {outcome['samples']}")
    for note in notes:
        print(f"    [{label}] {note}")


def run_rounds(args: argparse.Namespace, run_id: str) -> dict[str, list[Outcome]]:
    """Alternate a, b, c, d, e for each round; clean each round's keys afterwards."""
    results: dict[str, list[Outcome]] = {s: [] for s in SYSTEMS}
    skipped: set[str] = set()
    for number in range(1, args.rounds + 1):
        cells = []
        for system in SYSTEMS:
            if system in skipped:
                cells.append(f"{system}: skipped")
                continue
            run = Run(args.redis_url, f"sybench-{run_id}-r{number}-{system}", args.n, args.timeout)
            outcome = measure(system, run)
            purge(args.redis_url, f"*{run.tag}*")
            results[system].append(outcome)
            if "skipped" in outcome:
                skipped.add(system)
            cells.append(f"{system}: {describe(outcome).strip()}")
            report_problems(f"round {number} {system}", outcome)
        print(f"round {number}: " + " | ".join(cells), flush=True)
    return results


def median_rate(outcomes: list[Outcome]) -> float | None:
    rates = [o["jobs_per_s"] for o in outcomes if "jobs_per_s" in o]
    return statistics.median(rates) if rates else None


def median_cell(outcomes: list[Outcome]) -> str:
    rate = median_rate(outcomes)
    if rate is not None:
        return f"{rate:.0f}"
    return "skipped" if any("skipped" in o for o in outcomes) else "failed"


def print_summary(results: dict[str, list[Outcome]]) -> None:
    """The table of medians, then `pipeline/bare=<ratio>` as the very last line."""
    print()
    print(f"{'system':<24} {'median jobs/s':>14} {'ok rounds':>10}")
    for system, name in SYSTEMS.items():
        outcomes = results[system]
        ok = sum("jobs_per_s" in o for o in outcomes)
        print(f"({system}) {name:<20} {median_cell(outcomes):>14} {ok:>6}/{len(outcomes)}")
    bare, pipeline = median_rate(results["a"]), median_rate(results["b"])
    plain = median_rate(results["e"])
    sealing = f"{pipeline / plain:.2f}" if plain and pipeline else "nan"
    print(f"encrypted/plain={sealing}")
    ratio = f"{pipeline / bare:.2f}" if bare and pipeline else "nan"
    print(f"pipeline/bare={ratio}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="jobs per system per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of a, b, c, d, e")
    parser.add_argument(
        "--redis-url",
        type=check_loopback,
        default=DEFAULT_URL,
        help="Redis for every system (REDIS_URL is ignored)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds a system may take to run the N jobs"
    )
    parser.add_argument("--child", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    run_id = uuid.uuid4().hex[:8]
    db = urlparse(args.redis_url).path.lstrip("/") or "0"
    print(
        f"no-op job throughput: N={args.n}, {THREADS} worker threads, {args.rounds} rounds, "
        f"Redis db {db} on loopback, run {run_id}",
        flush=True,
    )
    try:
        results = run_rounds(args, run_id)
    finally:
        purge(args.redis_url, f"*sybench-{run_id}-*")
    print_summary(results)
    ok = all(median_rate(results[s]) is not None for s in ("a", "b", "e"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

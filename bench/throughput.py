"""No-op job throughput: the pipeline next to bare Dramatiq, Celery and huey.

On Redis and RabbitMQ; then producers, two worker processes, and a deep backlog.

Why: Switchyard wraps every job in idempotency, history, metrics, retry policy, dead
letters, concurrency, heartbeats and results. This measures what that costs per job and
per send, next to bare Dramatiq at its best setting (a prefetch that never starves its
consumer), on the same services, side by side in one run.

Parts (`--parts`, all by default), each alternating its systems round by round, every
measurement in a fresh child process pinned to one CPU (`--no-pin` leaves it free):

- throughput: enqueue N no-op jobs, then time one 8-thread worker from its start until
  the N-th has run, with the worker process's CPU time over that window.
- producers: N single sends from one thread (each timed), and RabbitMQ's bulk path.
- scaling: N queued jobs drained by one worker process, then by two (one CPU each).
- backlog: 1,000 queued jobs drained, then `--backlog` (100,000), with the worker's RSS.

Usage: uv run python bench/throughput.py [--n 2000] [--rounds 3] [--parts ...]
Every figure is printed as a `name=value` line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Completions,
    Outcome,
    Run,
    check_amqp_loopback,
    check_loopback,
    child_env,
    command,
    cpu_seconds,
    cpus,
    delete_queues,
    measure,
    median,
    outcome_of,
    percentile,
    pin,
    purge,
    quiet_logging,
    rabbitmq_answers,
    ratio,
    rss_mb,
)

SCRIPT = str(Path(__file__).resolve())
DEFAULT_URL = "redis://127.0.0.1:6379/14"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
THREADS = 8
#: Dramatiq's default (2 x threads = 16) starves a bare consumer: it sleeps whenever
#: its prefetch is full. Every Dramatiq worker here gets the same, larger one.
DEFAULT_PREFETCH = 64
SYSTEMS = {
    "a": "dramatiq redis (bare)",
    "b": "switchyard redis",
    "c": "celery (threads)",
    "d": "huey (threads)",
    "e": "switchyard, not sealed",
    "f": "dramatiq rabbitmq (bare)",
    "g": "switchyard rabbitmq",
}
PRODUCERS = {
    "a": "dramatiq redis (bare)",
    "b": "switchyard redis",
    "f": "dramatiq rabbitmq, confirmed",
    "g": "switchyard rabbitmq",
    "h": "switchyard rabbitmq, send_many",
}
RABBITMQ = {"f", "g", "h"}
PARTS = ("throughput", "producers", "scaling", "backlog")
#: The arguments of every Dramatiq job: a notification's shape, ~250 bytes.
PAYLOAD = {"userId": "user-42", "phoneNumber": "+15550001111", "title": "New message",
           "body": "Ann: are we still on for tomorrow at ten? " * 4}
ACTOR = "bench_noop"
#: The run's payload key reaches every child through this variable, never its arguments.
KEY_ENV = "SYBENCH_PAYLOAD_KEYS"
SMALL_BACKLOG = 1_000


# --- the systems: one Dramatiq broker each, built the same way in every child -----------


@dataclass
class System:
    """A broker set up for one system, the queue its jobs go to, and what to call
    before the clock starts (buffered pipeline writes) and at the end."""

    broker: Any
    queue: str
    flush: Callable[[], None] = lambda: None
    closers: list[Callable[[], None]] = field(default_factory=list)
    app: Any = None

    def close(self) -> None:
        self.flush()
        for close in self.closers:
            close()


def open_system(letter: str, run: Run, amqp_url: str, *, confirm: bool = False) -> System:
    """(a), (f) bare Dramatiq; (b), (e), (g), (h) `switchyard.boot.build` as a worker runs it."""
    if letter == "a":
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=run.url, namespace=run.tag)
        return System(broker, "bench", closers=[broker.close])
    if letter == "f":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        rabbitmq = RabbitmqBroker(url=amqp_url, confirm_delivery=confirm)
        return System(rabbitmq, run.tag, closers=[rabbitmq.close])
    return open_switchyard(letter, run, amqp_url)


def open_switchyard(letter: str, run: Run, amqp_url: str) -> System:
    from switchyard import boot as runtime
    from switchyard.base import settings

    sealed = letter != "e"
    rabbitmq = letter in RABBITMQ
    # broker_url always, so a BROKER_URL in the environment cannot move the queues.
    config = settings.load(
        redis_url=run.url, broker_url=amqp_url if rabbitmq else run.url, key_prefix=run.tag,
        broker_namespace=f"{run.tag}-ns", payload_encryption=sealed,
        payload_keys=os.environ[KEY_ENV] if sealed else "",
    )
    sy = runtime.build(config)
    return System(sy.broker, run.tag if rabbitmq else "bench", flush=sy.state.buffer.flush,
                  closers=[sy.close], app=sy)


def declare(system: System, done: Completions | None) -> Any:
    import dramatiq

    @dramatiq.actor(broker=system.broker, actor_name=ACTOR, queue_name=system.queue)
    def bench_noop(**payload: Any) -> None:
        if done is not None:
            done.mark()

    return bench_noop


def make_worker(broker: Any, prefetch: int) -> Any:
    import dramatiq

    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
    worker.queue_prefetch = prefetch
    return worker


def timed(start: Callable[[], None], done: Completions, timeout: float) -> Outcome:
    """Start a consumer and time it until every job has completed (or `timeout`), with
    this process's CPU time over the same window."""
    cpu, began = cpu_seconds(), time.perf_counter()
    start()
    finished = done.wait(timeout)
    seconds, cpu = time.perf_counter() - began, cpu_seconds() - cpu
    completed = done.count()
    if not finished:
        return {"error": f"timed out after {timeout:.0f}s: {completed}/{done.n} completed"}
    return {"seconds": seconds, "jobs_per_s": done.n / seconds, "completed": completed,
            "cpu_us_per_job": cpu * 1e6 / done.n}


# --- throughput children: enqueue N, then time one worker on them ------------------------


def run_dramatiq(letter: str, run: Run, args: argparse.Namespace) -> Outcome:
    system = open_system(letter, run, args.amqp_url)
    done = Completions(run)
    try:
        actor = declare(system, done)
        for _ in range(run.n):
            actor.send(**PAYLOAD)
        system.flush()  # enqueue-side history/metrics writes land before the clock starts
        worker = make_worker(system.broker, args.prefetch)
        try:
            outcome = timed(worker.start, done, run.timeout)
        finally:
            worker.stop()
        if system.app is not None:
            system.flush()
            outcome["checks"] = check_switchyard(system.app, system.queue, run.n)
        return outcome
    finally:
        done.close()
        system.close()


def check_switchyard(sy: Any, queue: str, n: int) -> list[str]:
    """Cross-check the pipeline's own records against the N jobs that ran."""
    problems = []
    done = sy.state.metrics.totals("done").get(ACTOR, 0)
    enqueued = sy.state.metrics.totals("enqueued").get(ACTOR, 0)
    if done != n or enqueued != n:
        problems.append(f"metrics count done={done} enqueued={enqueued}, expected {n}")
    history = sy.state.history
    kept = len(history.finished(queue, "done"))
    if kept != min(n, history.keep_done):
        problems.append(f"history keeps {kept} done jobs, expected {min(n, history.keep_done)}")
    left = sy.queues.depth(queue)
    if left:
        problems.append(f"{left} messages still in the queue")
    return problems


def run_celery(run: Run) -> Outcome:
    """(c) Celery 5, threads pool of 8, worker in a thread of this process."""
    try:
        from celery import Celery
        from celery.worker import WorkController, state
    except ImportError as error:
        return {"skipped": f"{type(error).__name__}: {error}"}
    app = Celery(run.tag, broker=run.url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": f"{run.tag}:"},  # every kombu key
        broker_connection_retry_on_startup=True, task_ignore_result=True,
        worker_enable_remote_control=False, worker_hijack_root_logger=False,
    )
    done = Completions(run)

    @app.task(name=ACTOR, ignore_result=True)
    def bench_noop(**payload: Any) -> None:
        done.mark()

    for _ in range(run.n):
        bench_noop.delay(**PAYLOAD)
    worker = WorkController(app=app, pool="threads", concurrency=THREADS,
                            hostname=f"{run.tag}@127.0.0.1", loglevel="WARNING",
                            without_heartbeat=True, without_mingle=True, without_gossip=True)
    thread = threading.Thread(target=worker.start, name="celery-worker", daemon=True)
    try:
        return timed(thread.start, done, run.timeout)
    finally:
        state.should_terminate = 0  # how celery.contrib.testing stops a threaded worker
        thread.join(30)
        app.close()
        done.close()


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
        done.close()


def throughput_child(args: argparse.Namespace, run: Run) -> Outcome:
    if args.child == "c":
        return run_celery(run)
    if args.child == "d":
        return run_huey(run)
    return run_dramatiq(args.child, run, args)


# --- producer children: N single sends, each timed; or one send_many -----------------------


def produce_child(args: argparse.Namespace, run: Run) -> Outcome:
    letter = args.produce
    system = open_system("g" if letter == "h" else letter, run, args.amqp_url, confirm=True)
    try:
        actor = declare(system, None)
        if letter == "h":
            return send_bulk(system, actor, run.n)
        for _ in range(20):  # warm up: connections, channels, declared queues
            actor.send(**PAYLOAD)
        latencies = []
        began = time.perf_counter()
        for _ in range(run.n):
            sent = time.perf_counter()
            actor.send(**PAYLOAD)
            latencies.append(time.perf_counter() - sent)
        seconds = time.perf_counter() - began
        return {"sends_per_s": run.n / seconds, "send_p50_ms": percentile(latencies, 50) * 1e3,
                "send_p99_ms": percentile(latencies, 99) * 1e3}
    finally:
        system.close()


def send_bulk(system: System, actor: Any, n: int) -> Outcome:
    """The bulk path: N messages built and handed to `switchyard.brokers.bulk.send_many`."""
    try:
        from switchyard.brokers.bulk import send_many
    except ImportError as error:
        return {"skipped": f"switchyard.bulk unavailable ({type(error).__name__})"}
    send_many(system.broker, [actor.message(**PAYLOAD) for _ in range(20)])  # warm up
    began = time.perf_counter()
    sent = send_many(system.broker, [actor.message(**PAYLOAD) for _ in range(n)])
    seconds = time.perf_counter() - began
    if len(sent) != n:
        return {"error": f"send_many returned {len(sent)} of {n} messages"}
    return {"sends_per_s": n / seconds}


# --- scaling and backlog: a filler child, then worker children driven over stdin ---------


def fill_child(args: argparse.Namespace, run: Run) -> Outcome:
    """Enqueue N through the system's own send path, its Redis writes batched in
    pipelines of 1,000 (Dramatiq's enqueue script is an HSET and an RPUSH)."""
    system = open_system(args.fill, run, args.amqp_url)
    broker, pending = system.broker, list[tuple[str, str, bytes]]()
    client = broker.client

    def flush() -> None:
        with client.pipeline(transaction=False) as pipe:
            for queue, message_id, data in pending:
                pipe.hset(f"{broker.namespace}:{queue}.msgs", message_id, data)
                pipe.rpush(f"{broker.namespace}:{queue}", message_id)
            pipe.execute()
        pending.clear()

    try:
        actor = declare(system, None)
        broker.do_enqueue = lambda *message: pending.append(message)  # shadows the method
        began = time.perf_counter()
        for _ in range(run.n):
            actor.send(**PAYLOAD)
            if len(pending) >= 1_000:
                flush()
        flush()
        return {"enqueued": run.n, "seconds": time.perf_counter() - began}
    finally:
        system.close()


def worker_child(args: argparse.Namespace, run: Run) -> Outcome:
    """Print `ready`; on `go` start a worker; on `stop` report its CPU time and RSS.

    The job that completes the first stamps CLOCK_MONOTONIC (one clock for the host) in
    Redis, so the parent can time the steady drain without the processes' start-up.
    """
    system = open_system(args.worker, run, args.amqp_url)
    done = Completions(run)
    rss: dict[str, float] = {}
    done.at(1, lambda: done.client.set(f"{run.tag}:bench:first", time.monotonic()))
    for count in args.rss_at or []:
        done.at(count, record_rss(rss, count))
    try:
        declare(system, done)
        worker = make_worker(system.broker, args.prefetch)
        print("ready", flush=True)
        sys.stdin.readline()
        cpu = cpu_seconds()
        worker.start()
        sys.stdin.readline()
        cpu = cpu_seconds() - cpu
        rss["end"] = rss_mb()
        worker.stop()
        return {"cpu_s": cpu, "rss_mb": rss}
    finally:
        done.close()
        system.close()


def record_rss(into: dict[str, float], count: int) -> Callable[[], None]:
    def record() -> None:
        into[str(count)] = rss_mb()

    return record


@dataclass(frozen=True)
class Drain:
    letter: str
    run: Run
    processes: int
    rss_at: tuple[int, ...] = ()


def drain(args: argparse.Namespace, job: Drain) -> Outcome:
    """Fill the queue, then time `processes` workers (one CPU each) until it is empty."""
    filled = measure(SCRIPT, child_flags(args, job.run, {"--fill": job.letter}),
                     job.run.timeout + 600, env=key_env(args))
    if "error" in filled:
        return {"error": f"fill: {filled['error']}"}
    procs = []
    try:
        for i in range(job.processes):
            flags = child_flags(args, job.run, {"--worker": job.letter, "--cpu": cpu_for(args, i),
                                                "--rss-at": ",".join(map(str, job.rss_at))})
            procs.append(subprocess.Popen(command(SCRIPT, flags), cwd=ROOT, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True,
                                          env=child_env(key_env(args))))
        return drain_with(procs, job.run)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def drain_with(procs: list[subprocess.Popen[str]], run: Run) -> Outcome:
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            return {"error": f"worker did not start: {line[:200]!r}"}
    done = Completions(run)
    try:
        signal_all(procs)  # go
        finished = done.wait(run.timeout)
        ended = time.monotonic()
        first = float(done.client.get(f"{run.tag}:bench:first") or 0)
        completed = done.count()
    finally:
        done.close()
    signal_all(procs)  # stop
    reports = []
    for proc in procs:
        out = proc.communicate(timeout=120)[0]
        reports.append(outcome_of(proc.returncode, out, ""))
    failed = next((r["error"] for r in reports if "error" in r), None)
    if not finished or failed:
        return {"error": failed or f"timed out after {run.timeout:.0f}s: "
                f"{completed}/{run.n} completed"}
    return {"jobs_per_s": (run.n - 1) / (ended - first), "workers": reports,
            "warnings": sum(r.get("warnings", 0) for r in reports),
            "samples": [s for r in reports for s in r.get("samples", [])][:3]}


def signal_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()


# --- child process plumbing ---------------------------------------------------------------


def child_flags(args: argparse.Namespace, run: Run, extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra, "--n": run.n, "--redis-url": run.url, "--amqp-url": args.amqp_url,
            "--tag": run.tag, "--timeout": run.timeout, "--prefetch": args.prefetch}


def key_env(args: argparse.Namespace) -> dict[str, str]:
    return {KEY_ENV: args.payload_keys}


def cpu_for(args: argparse.Namespace, index: int) -> int | None:
    """The CPU of the index-th concurrent child (the last one for a lone child)."""
    if args.no_pin:
        return None
    available = cpus()
    return available[index % len(available)] if index >= 0 else available[-1]


def child_main(args: argparse.Namespace) -> int:
    """Run one child role once and print its outcome as one JSON line."""
    pin(args.cpu)
    collector = quiet_logging()
    run = Run(args.redis_url, args.tag, args.n, args.timeout)
    try:
        if args.produce:
            outcome = produce_child(args, run)
        elif args.fill:
            outcome = fill_child(args, run)
        elif args.worker:
            outcome = worker_child(args, run)
        else:
            outcome = throughput_child(args, run)
    except Exception as error:  # reported by the parent, with the traceback on stderr
        traceback.print_exc()
        outcome = {"error": f"{type(error).__name__}: {error}"}
    outcome.update(warnings=collector.count, samples=collector.samples)
    print(json.dumps(outcome), flush=True)
    return 0


# --- parent: rounds, cleanup and report ---------------------------------------------------


def cleanup(args: argparse.Namespace, run: Run, letter: str) -> None:
    """Delete the measurement's keys (SCAN + DEL) and, on RabbitMQ, its queues."""
    purge(run.url, f"*{run.tag}*")
    if letter in RABBITMQ:
        delete_queues(args.amqp_url, [run.tag])


def one(args: argparse.Namespace, mode: str, letter: str, run: Run) -> Outcome:
    flags = child_flags(args, run, {mode: letter, "--cpu": cpu_for(args, -1)})
    try:
        return measure(SCRIPT, flags, run.timeout + 120, env=key_env(args))
    finally:
        cleanup(args, run, letter)


def report_problems(label: str, outcome: Outcome) -> None:
    """Print errors, failed checks and logged warnings of one measurement."""
    notes = [f"{what}: {outcome[what]}" for what in ("error", "stderr_tail", "skipped")
             if what in outcome]
    notes += [f"check failed: {c}" for c in outcome.get("checks", [])]
    if outcome.get("warnings"):
        notes.append(f"{outcome['warnings']} WARNING+ log record(s), e.g. {outcome['samples']}")
    for note in notes:
        print(f"    [{label}] {note}", flush=True)


def rounds(args: argparse.Namespace, part: str, letters: list[str],
           measure_one: Callable[[str, Run], Outcome], field_name: str,
           n: int) -> dict[str, list[Outcome]]:
    """Each round visits every system, starting one further along each time."""
    results: dict[str, list[Outcome]] = {letter: [] for letter in letters}
    skipped: set[str] = set()
    for number in range(1, args.rounds + 1):
        turn = (number - 1) % len(letters)
        cells = []
        for letter in letters[turn:] + letters[:turn]:
            if letter in skipped:
                continue
            run = Run(args.redis_url, f"sybench-{args.run_id}-{part[:2]}{number}-{letter}", n,
                      args.timeout)
            outcome = measure_one(letter, run)
            results[letter].append(outcome)
            if "skipped" in outcome:
                skipped.add(letter)
            value = outcome.get(field_name)
            cells.append(f"{letter}: {value:.0f}" if value is not None else f"{letter}: -")
            report_problems(f"{part} round {number} {letter}", outcome)
        print(f"{part} round {number}: " + " | ".join(cells), flush=True)
    return results


def part_throughput(args: argparse.Namespace) -> list[str]:
    letters = [s for s in args.systems if args.rabbitmq or s not in RABBITMQ]
    results = rounds(args, "throughput", letters,
                     lambda letter, run: one(args, "--child", letter, run), "jobs_per_s", args.n)
    print(f"\n{'system':<30} {'jobs/s':>8} {'CPU us/job':>11} {'ok':>5}")
    for letter in letters:
        outcomes = results[letter]
        rate, cpu = median(outcomes, "jobs_per_s"), median(outcomes, "cpu_us_per_job")
        ok = sum("jobs_per_s" in o for o in outcomes)
        print(f"({letter}) {SYSTEMS[letter]:<26} {cell(rate, 8, 0)} {cell(cpu, 11, 0)} "
              f"{ok:>3}/{len(outcomes)}")

    def of(letter: str, what: str = "jobs_per_s") -> float | None:
        return median(results.get(letter, []), what)

    return [f"pipeline/bare={ratio(of('b'), of('a'))}",
            f"rabbitmq_pipeline/bare={ratio(of('g'), of('f'))}",
            f"cpu_per_job/bare={ratio(of('b', 'cpu_us_per_job'), of('a', 'cpu_us_per_job'))}",
            f"pipeline/huey={ratio(of('b'), of('d'))}",
            f"encrypted/plain={ratio(of('b'), of('e'))}"]


def part_producers(args: argparse.Namespace) -> list[str]:
    letters = [p for p in PRODUCERS if args.rabbitmq or p not in RABBITMQ]
    results = rounds(args, "producers", letters,
                     lambda letter, run: one(args, "--produce", letter, run), "sends_per_s",
                     args.sends)
    print(f"\n{'producer':<34} {'sends/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for letter in letters:
        outcomes = results[letter]
        print(f"({letter}) {PRODUCERS[letter]:<30} {cell(median(outcomes, 'sends_per_s'), 8, 0)} "
              f"{cell(median(outcomes, 'send_p50_ms'), 7, 2)} "
              f"{cell(median(outcomes, 'send_p99_ms'), 7, 2)}")

    def of(letter: str, what: str = "sends_per_s") -> float | None:
        return median(results.get(letter, []), what)

    bulk, p50_redis, p50_rabbitmq = of("h"), of("b", "send_p50_ms"), of("g", "send_p50_ms")
    if not bulk:
        print(f"no bulk figure: {bulk_reason(results.get('h', []))}")
    return [f"redis_enqueue/bare={ratio(of('b'), of('a'))}",
            f"rabbitmq_enqueue/bare={ratio(of('g'), of('f'))}",
            f"rabbitmq_bulk_enqueue_per_s={bulk:.0f}" if bulk else
            "rabbitmq_bulk_enqueue_per_s=nan",
            f"send_p50_ms_redis={p50_redis:.2f}" if p50_redis else "send_p50_ms_redis=nan",
            f"send_p50_ms_rabbitmq={p50_rabbitmq:.2f}" if p50_rabbitmq
            else "send_p50_ms_rabbitmq=nan"]


def cell(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def bulk_reason(outcomes: list[Outcome]) -> str:
    if not outcomes:
        return "RabbitMQ not measured"
    last = outcomes[-1]
    return str(last.get("skipped") or last.get("error") or "no figure")


def part_scaling(args: argparse.Namespace) -> list[str]:
    configs = ["a1", "a2", "b1", "b2"]

    def one_drain(config: str, run: Run) -> Outcome:
        try:
            return drain(args, Drain(config[0], run, int(config[1])))
        finally:
            cleanup(args, run, config[0])

    results = rounds(args, "scaling", configs, one_drain, "jobs_per_s", args.scale_n)
    speedup = {s: ratio(median(results[f"{s}2"], "jobs_per_s"), median(results[f"{s}1"],
                                                                        "jobs_per_s"))
               for s in "ab"}
    return [f"scaling_2proc_bare={speedup['a']}", f"scaling_2proc_pipeline={speedup['b']}"]


def part_backlog(args: argparse.Namespace) -> list[str]:
    big, small = args.backlog, min(SMALL_BACKLOG, args.backlog)
    rates: dict[int, list[float]] = {small: [], big: []}
    rss: list[float] = []
    for number in range(1, args.backlog_rounds + 1):
        for size in (small, small, small, big):  # the short drain is the noisier: thrice
            tag = f"sybench-{args.run_id}-bl{number}-{size}-{len(rates[size])}"
            run = Run(args.redis_url, tag, size, args.timeout + size / 200)
            checkpoints = (size // 10, size) if size == big else ()
            try:
                outcome = drain(args, Drain("b", run, 1, checkpoints))
            finally:
                cleanup(args, run, "b")
            report_problems(f"backlog round {number} {size}", outcome)
            if "jobs_per_s" not in outcome:
                continue
            rates[size].append(outcome["jobs_per_s"])
            memory = outcome["workers"][0]["rss_mb"]
            print(f"backlog round {number}: {size} queued, {outcome['jobs_per_s']:.0f} jobs/s, "
                  f"worker RSS {json.dumps(memory)} MB", flush=True)
            if size == big and str(size // 10) in memory and str(size) in memory:
                rss.append(memory[str(size)] / memory[str(size // 10)])
    low = statistics.median(rates[small]) if rates[small] else None
    high = statistics.median(rates[big]) if rates[big] else None
    worst_rss = f"{max(rss):.2f}" if rss else "nan"
    return [f"backlog_100k/1k={ratio(high, low)}", f"rss_100k/10k={worst_rss}"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="jobs per system per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every part")
    parser.add_argument("--parts", default=",".join(PARTS), help="some of " + ",".join(PARTS))
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="throughput systems: some of " + ",".join(SYSTEMS))
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH,
                        help="every Dramatiq worker's queue prefetch")
    parser.add_argument("--no-pin", action="store_true", help="do not pin children to a CPU")
    parser.add_argument("--sends", type=int, default=1000, help="sends per producer per round")
    parser.add_argument("--scale-n", type=int, default=10_000, help="jobs per scaling drain")
    parser.add_argument("--backlog", type=int, default=100_000, help="jobs of the deep backlog")
    parser.add_argument("--backlog-rounds", type=int, default=1)
    parser.add_argument("--redis-url", type=check_loopback, default=DEFAULT_URL,
                        help="Redis for every system (REDIS_URL is ignored)")
    parser.add_argument("--amqp-url", type=check_amqp_loopback, default=DEFAULT_AMQP_URL)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a system may take to run its jobs")
    parser.add_argument("--child", choices=sorted(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--produce", choices=sorted(PRODUCERS), help=argparse.SUPPRESS)
    parser.add_argument("--fill", choices=["a", "b"], help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["a", "b"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rss-at", type=lambda s: [int(x) for x in s.split(",") if x],
                        help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    args.systems = [s for s in args.systems.split(",") if s]
    if min(args.n, args.rounds, args.sends, args.scale_n, args.backlog, args.prefetch) < 1:
        parser.error("counts must be at least 1")
    if set(args.parts) - set(PARTS) or set(args.systems) - set(SYSTEMS):
        parser.error(f"--parts: some of {','.join(PARTS)}; --systems: some of "
                     f"{','.join(SYSTEMS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child or args.produce or args.fill or args.worker:
        return child_main(args)
    from switchyard.base.sealing import generate_entry

    args.run_id = uuid.uuid4().hex[:8]
    args.payload_keys = generate_entry("bench")
    args.rabbitmq = rabbitmq_answers(args.amqp_url)
    db = urlparse(args.redis_url).path.lstrip("/") or "0"
    print(f"job throughput: N={args.n}, {THREADS} worker threads, prefetch {args.prefetch}, "
          f"{args.rounds} rounds, children {'free' if args.no_pin else 'pinned to one CPU'}, "
          f"Redis db {db} on loopback, run {args.run_id}", flush=True)
    if not args.rabbitmq:
        print("RabbitMQ is not answering: its systems are skipped", flush=True)
    parts = {"throughput": part_throughput, "producers": part_producers,
             "scaling": part_scaling, "backlog": part_backlog}
    figures: list[str] = []
    try:
        for part in args.parts:
            print(f"\n== {part}", flush=True)
            figures += parts[part](args)
    finally:
        purge(args.redis_url, f"*sybench-{args.run_id}-*")
    print()
    for line in figures:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

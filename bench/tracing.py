"""Tracing's cost (issue 30): a worker's jobs/s with OpenTelemetry on, next to off.

Method: a family-shaped job (`@job` with a pydantic payload, an `idempotency_key`
function of the payload and a concurrency limit, as `send_push` declares them; its body
one Redis INCR, the completion counter) on a private Redis (or a RabbitMQ vhost of the
run's own), two systems alternating round by round:

- off: no `OTEL_*` variable set (Switchyard imports no OpenTelemetry module);
- on: `OTEL_EXPORTER_OTLP_ENDPOINT` at a loopback OTLP/HTTP collector this process runs
  (`POST /v1/traces`, protobuf, answered 200; requests, bytes and spans counted) and
  `OTEL_TRACES_SAMPLER=always_on`: every span sampled and exported.

Each measurement: a producer child (pinned) sends N jobs through
`switchyard.runtime.enqueue.enqueue`, not timed; then the worker starts as `switchyard
worker` starts it, `python -m dramatiq bench.tracing:boot --processes 1` (Dramatiq's
defaults: 8 threads, its prefetch and timeout), `boot` pinning the worker process to one
CPU and booting Switchyard with this module as its one family. The first and the N-th
job stamp CLOCK_MONOTONIC and the process's CPU time in Redis: jobs/s and CPU us/job over
that steady drain, start-up left out.

Usage: uv run python bench/tracing.py [--n 3000] [--rounds 3] [--brokers redis,rabbitmq]
The figures are `name=value` lines at the end: `tracing_on/off` (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Completions,
    Outcome,
    QuietHandler,
    Run,
    check_amqp_loopback,
    check_loopback,
    child_env,
    command,
    cpu_seconds,
    cpus,
    loopback_server,
    outcome_of,
    pin,
    private_redis,
    purge,
    rabbitmq_answers,
)
from switchyard.runtime.jobs import Context, Payload, job  # noqa: E402

SCRIPT = str(Path(__file__).resolve())
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
ACTOR, QUEUE = "bench_push", "bench-notification"
#: send_push's limit: at most 5 running at once across every worker (SYBENCH_CONCURRENCY
#: sets another in the children; 0: none).
CONCURRENCY = int(os.environ.get("SYBENCH_CONCURRENCY", 5))
SYSTEMS = ("off", "on")
BROKERS = ("redis", "rabbitmq")
#: What tells the worker's `boot` its run: the key tag, N, the CPU to pin to.
TAG_ENV, N_ENV, CPU_ENV = "SYBENCH_TAG", "SYBENCH_N", "SYBENCH_CPU"
#: Seconds without an export (and after the last job) before a traced worker is stopped:
#: the batch processor exports at least every 5 s (OTEL_BSP_SCHEDULE_DELAY's default).
SETTLE_S = 6.0
#: A worker's stderr lines worth showing: Dramatiq's `[LEVEL]` and Switchyard's text format.
NOTABLE = re.compile(r"\bWARNING\b|\bERROR\b|\bCRITICAL\b|Traceback")


# --- the job: a notification-shaped family of one ---------------------------------------


class BenchPush(Payload):
    """send_push's payload, with an id of its own (the idempotency key's second half)."""

    user_id: str = Field(min_length=1, max_length=64)
    push_id: str = Field(min_length=1, max_length=64)
    fcm_token: str = Field(min_length=1, max_length=4096)
    title: str = Field(max_length=256)
    body: str = Field(max_length=2048)
    data: dict[str, str] = Field(default_factory=dict)


def push_key(**payload: Any) -> str:
    return f"{payload['userId']}:{payload['pushId']}"


@job(BenchPush, actor_name=ACTOR, queue_name=QUEUE, idempotency_key=push_key,
     **({"concurrency": CONCURRENCY, "concurrency_key": QUEUE} if CONCURRENCY else {}))
def bench_push(ctx: Context, payload: BenchPush) -> None:
    """Count itself: one Redis INCR (a client span of the run when traced)."""
    _process.done().mark()


def payload(number: int) -> dict[str, Any]:
    """A ~250-byte push, unique by its `pushId`."""
    return {"userId": "user-42", "pushId": f"push-{number}", "fcmToken": "fcm-token-" + "x" * 40,
            "title": "New message", "body": "Ann: are we still on for tomorrow at ten? " * 3,
            "data": {"type": "message", "chatId": "chat-7"}}


class _Process:
    """The worker process's completion counter, set by `boot`."""

    completions: Completions | None = None

    def done(self) -> Completions:
        assert self.completions is not None, "bench.tracing:boot did not run"
        return self.completions


_process = _Process()


# --- children: the worker Dramatiq boots, and the producer ------------------------------


def boot() -> None:
    """`python -m dramatiq bench.tracing:boot`: what `switchyard.entry:boot` (through
    `switchyard.pinning:boot`) does in a worker process, with this module as the family:
    pin, then `switchyard.boot.boot` (tracing switched on when the OTEL_* variables ask)."""
    from switchyard import boot as runtime
    from switchyard.base import settings

    cpu = os.environ.get(CPU_ENV, "")
    pin(int(cpu) if cpu else None)
    tag, n = os.environ[TAG_ENV], int(os.environ[N_ENV])
    done = Completions(Run(os.environ["REDIS_URL"], tag, n, 0))
    done.at(1, stamp(done, f"{tag}:bench:first"))
    done.at(n, stamp(done, f"{tag}:bench:last"))
    _process.completions = done
    runtime.boot(settings.load(_env_file=None), [sys.modules[__name__]])


def stamp(done: Completions, key: str) -> Callable[[], None]:
    def record() -> None:
        done.client.set(key, json.dumps({"t": time.monotonic(), "cpu": cpu_seconds()}))

    return record


def produce(n: int, cpu: int | None) -> Outcome:
    """Send N jobs through `enqueue` from a process booted as a producer is (its enqueue
    spans exported when traced), then flush what tracing recorded."""
    from switchyard import boot as runtime
    from switchyard import tracing
    from switchyard.base import settings
    from switchyard.runtime.enqueue import enqueue

    pin(cpu)
    app = runtime.boot(settings.load(_env_file=None), [sys.modules[__name__]])
    try:
        began = time.perf_counter()
        for number in range(n):
            enqueue(app, ACTOR, payload(number))
        seconds = time.perf_counter() - began
        tracing.stop()  # exports the spans still batched
        return {"sends_per_s": n / seconds, "traced": tracing.configured()}
    finally:
        app.close()


def produce_main(args: argparse.Namespace) -> int:
    try:
        outcome = produce(args.n, args.cpu)
    except Exception as error:  # reported by the parent, the traceback on stderr
        traceback.print_exc()
        outcome = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(outcome), flush=True)
    return 0


# --- the collector: OTLP/HTTP on loopback ----------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What the collector received: requests, bytes (as sent) and spans by name."""

    requests: int = 0
    bytes: int = 0
    spans: Counter[str] = field(default_factory=Counter)

    def __sub__(self, other: Tally) -> Tally:
        return Tally(self.requests - other.requests, self.bytes - other.bytes,
                     self.spans - other.spans)

    @property
    def total(self) -> int:
        return sum(self.spans.values())


class Collector:
    """A loopback OTLP/HTTP trace collector: `POST /v1/traces` with a protobuf
    ExportTraceServiceRequest (plain, gzip or deflate) is parsed, counted and answered
    200 with an empty ExportTraceServiceResponse, on keep-alive connections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tally_ = Tally()
        self.refused = 0
        self.last = time.monotonic()
        collector = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = self.path == "/v1/traces" and collector.receive(
                    body, self.headers.get("Content-Encoding", ""))
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server, port = loopback_server(Handler, "otlp-collector")
        self.endpoint = f"http://127.0.0.1:{port}"

    def receive(self, body: bytes, encoding: str) -> bool:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        decode: dict[str, Callable[[bytes], bytes]] = {
            "gzip": gzip.decompress, "deflate": zlib.decompress}
        try:
            raw = decode.get(encoding.strip().lower(), bytes)(body)
            request = ExportTraceServiceRequest.FromString(raw)
        except Exception:  # a body we cannot read is refused and counted, never fatal
            with self.lock:
                self.refused += 1
            return False
        names = Counter(span.name for resource in request.resource_spans
                        for scope in resource.scope_spans for span in scope.spans)
        with self.lock:
            self.tally_ = Tally(self.tally_.requests + 1, self.tally_.bytes + len(body),
                                self.tally_.spans + names)
            self.last = time.monotonic()
        return True

    def tally(self) -> Tally:
        with self.lock:
            return self.tally_

    def settle(self, since: float, quiet: float, cap: float) -> None:
        """Wait until nothing arrived for `quiet` seconds after `since` (at most `cap`)."""
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            with self.lock:
                latest = max(self.last, since)
            if time.monotonic() - latest >= quiet:
                return
            time.sleep(0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the parent: one measurement --------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """Where a measurement runs: the run, the state store, the broker and the collector."""

    args: argparse.Namespace
    redis_url: str
    broker: str
    broker_url: str
    collector: Collector


def system_env(setup: Setup, system: str, tag: str) -> dict[str, str]:
    """A child's environment as a deployment gives it: its settings (no `.env`), no
    inherited OTEL_* variable, and tracing's two when on."""
    env = {k: v for k, v in child_env().items() if not k.startswith("OTEL_")}
    env.update({"REDIS_URL": setup.redis_url, "BROKER_URL": setup.broker_url,
                "KEY_PREFIX": tag, "BROKER_NAMESPACE": f"{tag}-ns",
                "PAYLOAD_KEYS": setup.args.payload_keys, "SWITCHYARD_ENV": "test",
                "VAR_DIR": str(setup.args.scratch / "var"), "PYTHONPATH": str(ROOT)})
    if system == "on":
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": setup.collector.endpoint,
                    "OTEL_TRACES_SAMPLER": "always_on", **setup.args.on_env})
    return env


def one(setup: Setup, system: str, number: int) -> Outcome:
    """Fill, then drain with a worker; the spans the collector got from each."""
    args = setup.args
    tag = f"trbench-{args.run_id}-{setup.broker[:2]}{number}-{system}"
    env = system_env(setup, system, tag)
    try:
        before = setup.collector.tally()
        filled = fill(args, env)
        if "error" in filled:
            return {"error": f"producer: {filled['error']}"}
        produced = setup.collector.tally()
        outcome = drain(setup, env, tag, traced=system == "on")
        outcome.update(sends_per_s=filled["sends_per_s"],
                       producer=produced - before,
                       worker=setup.collector.tally() - produced)
        return outcome
    finally:
        purge(setup.redis_url, f"*{tag}*")


def fill(args: argparse.Namespace, env: dict[str, str], *, script: str = SCRIPT,
         flag: str = "--produce") -> Outcome:
    """Run `script flag` as the producer child, N sends; its JSON outcome."""
    flags = {flag: True, "--n": args.n, "--cpu": args.cpu}
    try:
        proc = subprocess.run(command(script, flags), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=args.timeout + 120)
    except subprocess.TimeoutExpired:
        return {"error": "producer hung"}
    return outcome_of(proc.returncode, proc.stdout, proc.stderr)


def drain(setup: Setup, env: dict[str, str], tag: str, *, traced: bool) -> Outcome:
    """Start `dramatiq bench.tracing:boot --processes 1` and time its drain of N jobs."""
    settle = (lambda: setup.collector.settle(time.monotonic(), SETTLE_S, 4 * SETTLE_S)) \
        if traced else None
    return run_worker("bench.tracing:boot", setup.args, setup.redis_url, env, tag,
                      settle=settle)


def run_worker(boot: str, args: argparse.Namespace, redis_url: str, env: dict[str, str],
               tag: str, *, settle: Callable[[], None] | None = None) -> Outcome:
    """Start `python -m dramatiq <boot> --processes 1` and time its drain of N jobs;
    `settle` runs once they ran, before the worker is stopped; its WARNING+ lines counted."""
    env = {**env, TAG_ENV: tag, N_ENV: str(args.n),
           CPU_ENV: "" if args.cpu is None else str(args.cpu)}
    line = [sys.executable, "-m", "dramatiq", boot, "--processes", "1", "--path", str(ROOT)]
    done = Completions(Run(redis_url, tag, args.n, args.timeout))
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(line, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=errors, text=True)
        try:
            outcome = wait_drained(done, tag, proc, args.timeout)
            if settle is not None and "error" not in outcome:
                settle()
        finally:
            stop(proc)
            done.close()
        errors.seek(0)
        notable = [s.strip() for s in errors.read().splitlines() if NOTABLE.search(s)]
    outcome.update(warnings=len(notable), samples=notable[:3])
    return outcome


def wait_drained(done: Completions, tag: str, proc: subprocess.Popen[str],
                 timeout: float) -> Outcome:
    """Block until the N-th job ran, then read the first and last jobs' stamps."""
    deadline = time.monotonic() + timeout
    while done.client.blpop([done.done_key], timeout=1) is None:
        if proc.poll() is not None:
            return {"error": f"worker exited {proc.returncode} after {done.count()} jobs"}
        if time.monotonic() > deadline:
            return {"error": f"timed out after {timeout:.0f}s: {done.count()}/{done.n} ran"}
    first, last = (json.loads(done.client.get(f"{tag}:bench:{which}") or "{}")
                   for which in ("first", "last"))
    seconds = last["t"] - first["t"]
    return {"jobs_per_s": (done.n - 1) / seconds, "seconds": seconds,
            "cpu_us_per_job": (last["cpu"] - first["cpu"]) * 1e6 / (done.n - 1),
            "completed": done.count()}


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, as a deployment stops a worker; SIGKILL after 60 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the parent: rounds and report ------------------------------------------------------


@dataclass
class Results:
    """One broker's outcomes per system, and the on/off ratios of the rounds."""

    broker: str
    outcomes: dict[str, list[Outcome]] = field(
        default_factory=lambda: {system: [] for system in SYSTEMS})
    ratios: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)

    def median(self, system: str, what: str) -> float | None:
        values = [o[what] for o in self.outcomes[system] if what in o]
        return statistics.median(values) if values else None


def rounds(setup: Setup) -> Results:
    """Each round measures both systems, the first one alternating."""
    results = Results(setup.broker)
    for number in range(1, setup.args.rounds + 1):
        order = SYSTEMS if number % 2 else SYSTEMS[::-1]
        got = {system: one(setup, system, number) for system in order}
        for system in order:
            results.outcomes[system].append(got[system])
            report_problems(f"{setup.broker} round {number} {system}", got[system])
        off, on = got["off"], got["on"]
        ratio = "-"
        if "jobs_per_s" in off and "jobs_per_s" in on:
            results.ratios.append(on["jobs_per_s"] / off["jobs_per_s"])
            results.cpu_ratios.append(on["cpu_us_per_job"] / off["cpu_us_per_job"])
            ratio = f"{results.ratios[-1]:.3f}"
        print(f"{setup.broker} round {number} ({' then '.join(order)}): off {cell(off)} | "
              f"on {cell(on)} | on/off {ratio}", flush=True)
    return results


def cell(outcome: Outcome) -> str:
    """A measurement's rate, CPU and worker spans; the run spans when not one per job."""
    if "jobs_per_s" not in outcome:
        return "failed"
    worker, n = outcome["worker"], outcome["completed"]
    runs = worker.spans[f"run {ACTOR}"]
    missing = f" (run spans: {runs} of {n} jobs)" if runs not in (0, n) else ""
    return (f"{outcome['jobs_per_s']:.0f} jobs/s {outcome['cpu_us_per_job']:.0f} us/job, "
            f"{worker.total / n:.2f} worker spans/job{missing}")


def report_problems(label: str, outcome: Outcome) -> None:
    for what in ("error", "stderr_tail"):
        if what in outcome:
            print(f"    [{label}] {what}: {outcome[what]}", flush=True)
    if outcome.get("warnings"):
        print(f"    [{label}] {outcome['warnings']} WARNING+ line(s) from the worker, e.g.:",
              flush=True)
        for sample in outcome["samples"]:
            print(f"      {sample[:240]}", flush=True)


def summary(results: Results, n: int) -> list[str]:
    """Print the medians and the span breakdown; return the broker's figures."""
    prefix = "" if results.broker == "redis" else f"{results.broker}_"
    print(f"\n{results.broker}: {'system':<6} {'jobs/s':>8} {'CPU us/job':>11} "
          f"{'sends/s':>8} {'spans/job':>10} {'KB/job':>7} {'requests':>9}")
    for system in SYSTEMS:
        measured = [o for o in results.outcomes[system] if "jobs_per_s" in o]
        spans = sum(o["worker"].total + o["producer"].total for o in measured)
        sent = sum(o["worker"].bytes for o in measured)
        posts = sum(o["worker"].requests for o in measured)
        jobs = n * len(measured) or 1
        print(f"{'':<{len(results.broker) + 2}}{system:<6} "
              f"{num(results.median(system, 'jobs_per_s'), 8, 0)} "
              f"{num(results.median(system, 'cpu_us_per_job'), 11, 0)} "
              f"{num(results.median(system, 'sends_per_s'), 8, 0)} {spans / jobs:>10.2f} "
              f"{sent / 1024 / jobs:>7.2f} {posts:>9}")
    traced = [o for o in results.outcomes["on"] if "jobs_per_s" in o]
    worker_spans: Counter[str] = sum((o["worker"].spans for o in traced), Counter())
    producer_spans: Counter[str] = sum((o["producer"].spans for o in traced), Counter())
    jobs = n * len(traced) or 1
    for who, spans in (("worker", worker_spans), ("producer", producer_spans)):
        top = ", ".join(f"{name} {count / jobs:.2f}" for name, count in spans.most_common(6))
        print(f"  spans per job from the {who} (on): {top or 'none'}")
    return figures(prefix, results, worker_spans, producer_spans, jobs)


def figures(prefix: str, results: Results, worker_spans: Counter[str],
            producer_spans: Counter[str], jobs: int) -> list[str]:
    ratios, cpu = results.ratios, results.cpu_ratios
    if not ratios:
        return [f"{prefix}tracing_on/off=nan"]
    spread = (f"{prefix}tracing_on/off={statistics.median(ratios):.3f} "
              f"{prefix}tracing_on/off_min={min(ratios):.3f} "
              f"{prefix}tracing_on/off_max={max(ratios):.3f}")
    total = sum(worker_spans.values()) + sum(producer_spans.values())
    return [spread, f"{prefix}tracing_cpu_per_job_on/off={statistics.median(cpu):.3f}",
            f"{prefix}tracing_spans_per_job={total / jobs:.2f} "
            f"{prefix}tracing_worker_spans_per_job={sum(worker_spans.values()) / jobs:.2f}"]


def num(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def system_env_on(args: argparse.Namespace) -> dict[str, str]:
    """The OTEL_* variables of the on system, as printed (the endpoint is the collector's)."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": "<collector>", "OTEL_TRACES_SAMPLER": "always_on",
            **args.on_env}


@contextmanager
def broker_url(args: argparse.Namespace, broker: str, redis_url: str) -> Iterator[str]:
    """The broker's URL: the private Redis, or a RabbitMQ vhost of the run's own."""
    if broker == "redis":
        yield redis_url
        return
    from bench.bridge import own_vhost

    with own_vhost(args.amqp_url) as url:
        yield url


def variables(text: str) -> dict[str, str]:
    """`NAME=VALUE,...` (argparse type): OTEL_* variables only."""
    pairs = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
    if not all(name.startswith("OTEL_") for name in pairs):
        raise argparse.ArgumentTypeError("only OTEL_* variables")
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="jobs per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (each: off and on)")
    parser.add_argument("--brokers", default="redis", help="some of " + ",".join(BROKERS))
    parser.add_argument("--no-pin", action="store_true", help="do not pin children to a CPU")
    parser.add_argument("--redis-url", type=check_loopback,
                        help="a loopback Redis to use instead of a private redis-server")
    parser.add_argument("--amqp-url", type=check_amqp_loopback, default=DEFAULT_AMQP_URL)
    parser.add_argument("--on-env", type=variables, default={}, metavar="NAME=VALUE,...",
                        help="more OTEL_* variables for the on system (e.g. a sampler)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a worker may take to run its N jobs")
    parser.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.brokers = [b for b in args.brokers.split(",") if b]
    if set(args.brokers) - set(BROKERS) or not args.brokers:
        parser.error(f"--brokers: some of {','.join(BROKERS)}")
    if args.n < 2 or args.rounds < 1:
        parser.error("--n must be at least 2 and --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.produce:
        return produce_main(args)
    from switchyard import tracing
    from switchyard.base.sealing import generate_entry

    if not tracing.installed():
        raise SystemExit("the `tracing` extra is not installed: uv sync --extra tracing")
    args.run_id, args.payload_keys = uuid.uuid4().hex[:8], generate_entry("bench")
    args.cpu = None if args.no_pin else cpus()[-1]
    if "rabbitmq" in args.brokers and not rabbitmq_answers(args.amqp_url):
        print("RabbitMQ is not answering: its rounds are skipped", flush=True)
        args.brokers.remove("rabbitmq")
    lines: list[str] = []
    with ExitStack() as stack:
        args.scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trbench-")))
        redis_url = args.redis_url or stack.enter_context(private_redis())
        collector = Collector()
        stack.callback(collector.close)
        print(f"tracing on/off: N={args.n}, {args.rounds} rounds, job {ACTOR} (pydantic payload, "
              f"idempotency key, concurrency {CONCURRENCY}), worker `python -m dramatiq "
              f"bench.tracing:boot --processes 1` (8 threads, Dramatiq's prefetch), "
              f"{'unpinned' if args.cpu is None else f'pinned to CPU {args.cpu}'}; on: "
              f"{' '.join(f'{k}={v}' for k, v in system_env_on(args).items())}; "
              f"collector {collector.endpoint}, run {args.run_id}", flush=True)
        for broker in args.brokers:
            with broker_url(args, broker, redis_url) as url:
                results = rounds(Setup(args, redis_url, broker, url, collector))
            lines += summary(results, args.n)
        if collector.refused:
            print(f"the collector refused {collector.refused} request(s) it could not read")
    print()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

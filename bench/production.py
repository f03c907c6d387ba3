"""The path production runs (issue 29): a family-shaped job, the worker as `switchyard
worker` starts it, Sentry on, producers through `enqueue()`, next to bare Dramatiq.

Method: on a private Redis (or a RabbitMQ vhost of the run's own), three systems
alternating round by round (the first one rotates), each filled then drained:

- bare: a bare `@dramatiq.actor` on Dramatiq's own broker, sent with `actor.send`, its
  worker `python -m dramatiq bench.production:bare_boot --processes 1` at its best
  (prefetch 64, timeout 100 ms: what measured fastest for it);
- prod: `bench.tracing`'s job (`@job`, pydantic payload, an `idempotency_key` function
  and a concurrency limit of 5, as `send_push` declares them), sent through
  `switchyard.runtime.enqueue.enqueue`, its worker `python -m dramatiq bench.tracing:boot
  --processes 1` with the variables `switchyard worker` gives Dramatiq (WORKER_PREFETCH,
  WORKER_TIMEOUT_MS: `switchyard.cli.worker_env`), and `SENTRY_DSN` at a loopback sink
  this process runs (envelopes counted and answered 200);
- nosentry: prod without `SENTRY_DSN`.

Every job's body is one Redis INCR (the completion counter). Each worker is pinned to
one CPU; the first and the N-th job stamp CLOCK_MONOTONIC and the process's CPU time:
jobs/s and CPU us/job over the steady drain. The state store's server CPU (the private
redis-server's `used_cpu_*`) is counted over the same drain, per job.

Usage: uv run python bench/production.py [--n 3000] [--rounds 3] [--brokers redis,rabbitmq]
       [--prefetch 64] [--timeout-ms 100] (the prod worker's, default: the settings')
       [--limit 5] (the prod job's concurrency limit; 0: none)
Figures (`name=value` lines at the end): `prod_pipeline/bare` (goal >= 0.85),
`prod_rabbitmq_pipeline/bare` (>= 0.85), `sentry_on/off` (>= 0.95), `enqueue/bare_send`
(>= 0.8), `keyed_limited_cost_us` (the prod job's CPU per job over bare's; <= 40), each
with its spread over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench import tracing  # noqa: E402
from bench.common import (  # noqa: E402
    Completions,
    Outcome,
    QuietHandler,
    Run,
    check_amqp_loopback,
    check_loopback,
    child_env,
    cpus,
    loopback_server,
    pin,
    private_redis,
    purge,
    rabbitmq_answers,
)

SCRIPT = str(Path(__file__).resolve())
SYSTEMS = ("bare", "prod", "nosentry")
BROKERS = ("redis", "rabbitmq")
#: Bare Dramatiq at its best on this machine (prefetch 16 ran at about a quarter).
BARE_PREFETCH, BARE_TIMEOUT_MS = 64, 100
BARE_ACTOR = "bare_push"


# --- bare Dramatiq: the worker's boot and the producer ----------------------------------


def bare_broker() -> Any:
    """Dramatiq's own broker for BROKER_URL, with its default middleware."""
    url = os.environ["BROKER_URL"]
    if url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=url, namespace=os.environ["BROKER_NAMESPACE"])


def bare_actor(broker: Any, done: Completions | None) -> Any:
    import dramatiq

    dramatiq.set_broker(broker)

    @dramatiq.actor(broker=broker, actor_name=BARE_ACTOR, queue_name=tracing.QUEUE)
    def bare_push(**payload: Any) -> None:
        assert done is not None
        done.mark()

    return bare_push


def bare_boot() -> None:
    """`python -m dramatiq bench.production:bare_boot`: pin, then declare the actor."""
    cpu = os.environ.get(tracing.CPU_ENV, "")
    pin(int(cpu) if cpu else None)
    tag, n = os.environ[tracing.TAG_ENV], int(os.environ[tracing.N_ENV])
    done = Completions(Run(os.environ["REDIS_URL"], tag, n, 0))
    done.at(1, tracing.stamp(done, f"{tag}:bench:first"))
    done.at(n, tracing.stamp(done, f"{tag}:bench:last"))
    bare_actor(bare_broker(), done)


def produce_bare(n: int, cpu: int | None) -> Outcome:
    pin(cpu)
    broker = bare_broker()
    actor = bare_actor(broker, None)
    try:
        began = time.perf_counter()
        for number in range(n):
            actor.send(**tracing.payload(number))
        return {"sends_per_s": n / (time.perf_counter() - began)}
    finally:
        broker.close()


# --- the Sentry sink --------------------------------------------------------------------


class Sink:
    """A loopback Sentry: `POST /api/<project>/envelope/` counted and answered 200."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.envelopes = 0
        sink = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.lock:
                    sink.envelopes += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server, port = loopback_server(Handler, "sentry-sink")
        self.dsn = f"http://bench@127.0.0.1:{port}/1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- one measurement --------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    args: argparse.Namespace
    redis_url: str
    broker: str
    broker_url: str
    sink: Sink


def system_env(setup: Setup, system: str, tag: str) -> dict[str, str]:
    """A child's environment: its settings (no `.env`), Sentry's DSN for prod only, and
    the worker variables of its system."""
    from switchyard.base import settings
    from switchyard.cli import worker_env

    env = {k: v for k, v in child_env().items()
           if not k.startswith(("OTEL_", "SENTRY_", "dramatiq_", "WORKER_"))}
    env.update({"REDIS_URL": setup.redis_url, "BROKER_URL": setup.broker_url,
                "KEY_PREFIX": tag, "BROKER_NAMESPACE": f"{tag}-ns",
                "PAYLOAD_KEYS": setup.args.payload_keys, "SWITCHYARD_ENV": "test",
                "VAR_DIR": str(setup.args.scratch / "var"), "PYTHONPATH": str(ROOT)})
    if system == "bare":
        env.update({"dramatiq_queue_prefetch": str(BARE_PREFETCH),
                    "dramatiq_worker_timeout": str(BARE_TIMEOUT_MS)})
        return env
    env["SYBENCH_CONCURRENCY"] = str(setup.args.limit)
    env.update(setup.args.worker_settings)
    env.update(worker_env(settings.load(_env_file=None, **{
        k.lower(): v for k, v in setup.args.worker_settings.items()})))
    if system == "prod":
        env["SENTRY_DSN"] = setup.sink.dsn
    return env


def one(setup: Setup, system: str, number: int) -> Outcome:
    args = setup.args
    tag = f"prbench-{args.run_id}-{setup.broker[:2]}{number}-{system}"
    env = system_env(setup, system, tag)
    try:
        filled = tracing.fill(args, env, script=SCRIPT,
                              flag="--produce-bare" if system == "bare" else "--produce")
        if "error" in filled:
            return {"error": f"producer: {filled['error']}"}
        server = redis.Redis.from_url(setup.redis_url)
        before = server_cpu(server)
        boot = "bench.production:bare_boot" if system == "bare" else "bench.tracing:boot"
        outcome = tracing.run_worker(boot, args, setup.redis_url, env, tag)
        outcome.update(sends_per_s=filled["sends_per_s"],
                       server_us_per_job=(server_cpu(server) - before) * 1e6 / args.n)
        server.close()
        return outcome
    finally:
        purge(setup.redis_url, f"*{tag}*")


def server_cpu(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")  # type: ignore[assignment]
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])



# --- rounds and report ------------------------------------------------------------------


@dataclass
class Results:
    broker: str
    outcomes: dict[str, list[Outcome]] = field(
        default_factory=lambda: {system: [] for system in SYSTEMS})
    #: Per round: figure name -> value.
    rounds: list[dict[str, float]] = field(default_factory=list)


def rounds(setup: Setup) -> Results:
    results = Results(setup.broker)
    for number in range(1, setup.args.rounds + 1):
        shift = (number - 1) % len(SYSTEMS)
        order = SYSTEMS[shift:] + SYSTEMS[:shift]
        got = {system: one(setup, system, number) for system in order}
        for system in order:
            results.outcomes[system].append(got[system])
            tracing.report_problems(f"{setup.broker} round {number} {system}", got[system])
        figures = round_figures(setup.broker, got)
        results.rounds.append(figures)
        cells = " | ".join(f"{s} {cell(got[s])}" for s in order)
        shown = " ".join(f"{k}={v:.3f}" for k, v in figures.items())
        print(f"{setup.broker} round {number}: {cells} || {shown}", flush=True)
    return results


def round_figures(broker: str, got: dict[str, Outcome]) -> dict[str, float]:
    bare, prod, nosentry = (got[s] for s in SYSTEMS)
    if not all("jobs_per_s" in o for o in (bare, prod, nosentry)):
        return {}
    pipeline = "prod_pipeline/bare" if broker == "redis" else f"prod_{broker}_pipeline/bare"
    own = "" if broker == "redis" else f"{broker}_"
    return {
        pipeline: prod["jobs_per_s"] / bare["jobs_per_s"],
        f"{own}sentry_on/off": prod["jobs_per_s"] / nosentry["jobs_per_s"],
        f"{own}enqueue/bare_send": prod["sends_per_s"] / bare["sends_per_s"],
        f"{own}keyed_limited_cost_us": prod["cpu_us_per_job"] - bare["cpu_us_per_job"],
        f"{own}prod_cpu_per_job/bare": prod["cpu_us_per_job"] / bare["cpu_us_per_job"],
        f"{own}state_server_us_per_job": prod["server_us_per_job"],
    }


def cell(outcome: Outcome) -> str:
    if "jobs_per_s" not in outcome:
        return "failed"
    return (f"{outcome['jobs_per_s']:.0f} jobs/s {outcome['cpu_us_per_job']:.0f} us/job "
            f"(server {outcome['server_us_per_job']:.0f}), {outcome['sends_per_s']:.0f} sends/s")


def summary(results: Results) -> list[str]:
    print(f"\n{results.broker}: {'system':<9} {'jobs/s':>8} {'CPU us/job':>11} "
          f"{'server us/job':>14} {'sends/s':>8}")
    for system in SYSTEMS:
        got = [o for o in results.outcomes[system] if "jobs_per_s" in o]
        medians = [statistics.median(o[k] for o in got) if got else float("nan")
                   for k in ("jobs_per_s", "cpu_us_per_job", "server_us_per_job",
                             "sends_per_s")]
        print(f"{'':<{len(results.broker) + 2}}{system:<9} {medians[0]:>8.0f} "
              f"{medians[1]:>11.0f} {medians[2]:>14.0f} {medians[3]:>8.0f}")
    names = list(dict.fromkeys(name for figures in results.rounds for name in figures))
    lines = []
    for name in names:
        values = [r[name] for r in results.rounds if name in r]
        lines.append(f"{name}={statistics.median(values):.3f} {name}_min={min(values):.3f} "
                     f"{name}_max={max(values):.3f}")
    return lines


def produce_main(args: argparse.Namespace) -> int:
    try:
        outcome = (produce_bare(args.n, args.cpu) if args.produce_bare
                   else tracing.produce(args.n, args.cpu))
    except Exception as error:  # reported by the parent, the traceback on stderr
        traceback.print_exc()
        outcome = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(outcome), flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="jobs per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (each: every system)")
    parser.add_argument("--brokers", default="redis", help="some of " + ",".join(BROKERS))
    parser.add_argument("--prefetch", type=int, help="the prod worker's WORKER_PREFETCH")
    parser.add_argument("--timeout-ms", type=int, help="the prod worker's WORKER_TIMEOUT_MS")
    parser.add_argument("--limit", type=int, default=tracing.CONCURRENCY,
                        help="the prod job's concurrency limit (0: none)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin children to a CPU")
    parser.add_argument("--redis-url", type=check_loopback,
                        help="a loopback Redis to use instead of a private redis-server")
    parser.add_argument("--amqp-url", type=check_amqp_loopback,
                        default=tracing.DEFAULT_AMQP_URL)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a worker may take to run its N jobs")
    parser.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--produce-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.brokers = [b for b in args.brokers.split(",") if b]
    if set(args.brokers) - set(BROKERS) or not args.brokers:
        parser.error(f"--brokers: some of {','.join(BROKERS)}")
    if args.n < 2 or args.rounds < 1:
        parser.error("--n must be at least 2 and --rounds at least 1")
    args.worker_settings = {name: str(value) for name, value in (
        ("WORKER_PREFETCH", args.prefetch), ("WORKER_TIMEOUT_MS", args.timeout_ms))
        if value is not None}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.produce or args.produce_bare:
        return produce_main(args)
    from switchyard.base.sealing import generate_entry

    args.run_id, args.payload_keys = uuid.uuid4().hex[:8], generate_entry("bench")
    args.cpu = None if args.no_pin else cpus()[-1]
    if "rabbitmq" in args.brokers and not rabbitmq_answers(args.amqp_url):
        print("RabbitMQ is not answering: its rounds are skipped", flush=True)
        args.brokers.remove("rabbitmq")
    lines: list[str] = []
    with ExitStack() as stack:
        args.scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prbench-")))
        redis_url = args.redis_url or stack.enter_context(private_redis())
        sink = Sink()
        stack.callback(sink.close)
        print(f"production path: N={args.n}, {args.rounds} rounds; bare: `{BARE_ACTOR}` on "
              f"Dramatiq's broker, prefetch {BARE_PREFETCH}, timeout {BARE_TIMEOUT_MS} ms; "
              f"prod: `{tracing.ACTOR}` (@job, key function, concurrency "
              f"{args.limit or 'unlimited'}) through enqueue(), the worker with `switchyard "
              f"worker`'s variables {args.worker_settings or '(the settings defaults)'} and "
              f"Sentry at {sink.dsn}; nosentry: prod without it; "
              f"{'unpinned' if args.cpu is None else f'pinned to CPU {args.cpu}'}, "
              f"run {args.run_id}", flush=True)
        for broker in args.brokers:
            with tracing.broker_url(args, broker, redis_url) as url:
                results = rounds(Setup(args, redis_url, broker, url, sink))
            lines += summary(results)
        print(f"the Sentry sink got {sink.envelopes} envelope(s)")
    print()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

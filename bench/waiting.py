"""Waiting jobs: held behind a limit, kept in order through a SIGKILL, rate-limited, paused.

Issue 27's "Measure": what the lanes (`state.lanes`), the pause applied where jobs are
taken (`switchyard.brokers.pausing`) and declared rate limits (`state.rates`) cost and
keep. Parts (`--only`, all by default), each on a private redis-server of its own, with
worker child processes and a client child (the producer, driven over its stdin) that
import Switchyard from `--tree` (this checkout by default; `--tree /tmp/before` measures
another checkout, e.g. the release before the lanes, with `--only held`):

- held: Redis commands/s while a concurrency-1 limit holds a backlog and one worker works
  through it one job at a time, over the same with the jobs fed one by one (none waiting).
- fifo: a one-at-a-time queue and ordered groups, one of two worker processes SIGKILLed
  mid-run and replaced: jobs started before their predecessor ended, jobs lost; on Redis
  and on RabbitMQ.
- rate: four worker processes sharing a declared 50/s limit, each job calling a loopback
  fake provider with a token bucket: the measured rate's error, and the provider's 429s.
- paused: a paused queue holding a backlog with a worker running: jobs put back or
  delayed (Redis keyspace events, no middleware asked), then resumed and drained.

Usage: uv run python bench/waiting.py [--only held,fifo,rate,paused] [--tree PATH] ...
The figures are printed as `name=value` lines at the end, after a table with their goals.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
# The harness always comes from this checkout; a child puts the measured tree first on
# its path before it imports Switchyard (see `child_main`).
sys.path.insert(0, str(ROOT))

from bench.all import figures_of, goal_of  # noqa: E402
from bench.common import (  # noqa: E402
    QuietHandler,
    check_amqp_loopback,
    child_env,
    command,
    delete_queues,
    loopback_server,
    private_redis,
    rabbitmq_answers,
)

SCRIPT = str(Path(__file__).resolve())
PARTS = ("held", "fifo", "rate", "paused")
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: Worker threads per process: the Procfile's `worker`.
THREADS = 8
#: The declared limit the rate part's workers share, starts per second; the fake
#: provider's bucket holds as many tokens and refills at that rate.
RATE = 50
#: The environment variable that gives the rate part's jobs the fake provider's URL.
PROVIDER_ENV = "SYBENCH_PROVIDER_URL"
#: The figures each part prints (`nan` when the part failed).
FIGURES = {
    "held": ("held_cmds_ratio", "held_cmds_per_s", "fed_cmds_per_s"),
    "fifo": ("fifo_violations", "fifo_lost"),
    "rate": ("rate_limit_error_pct", "provider_429s"),
    "paused": ("paused_requeues",),
}
#: Keyspace events that put a message on a list (a put-back, or a delayed enqueue), and
#: that take one off it (LMOVE, BLPOP and the like notify these too).
PUSHES = frozenset({"lpush", "rpush", "linsert"})
POPS = frozenset({"lpop", "rpop", "lrem"})


class BenchError(Exception):
    """A part could not be measured (a child failed, a wait timed out)."""


# --- children: the actors of each part ----------------------------------------------------


def open_app() -> Any:
    """Switchyard built as a worker process builds it, from the environment the parent set
    (no `.env`: only what this benchmark says)."""
    from switchyard import boot
    from switchyard.base import settings

    return boot.build(settings.load(_env_file=None))


def by_group(group: str, **_: Any) -> str:
    return group


def held_actors(sy: Any, tag: str) -> dict[str, Any]:
    """One job at a time (a concurrency-1 limit), each sleeping, then counted and
    announced on a list the client blocks on."""
    import dramatiq

    client = sy.state.client

    @dramatiq.actor(broker=sy.broker, queue_name=f"{tag}-held", actor_name="bench_held",
                    concurrency=1, concurrency_key=f"{tag}-held", max_retries=0)
    def bench_held(n: int, sleep_ms: int) -> None:
        time.sleep(sleep_ms / 1000)
        pipe = client.pipeline(transaction=False)
        pipe.incr(f"{tag}:bench:count")
        pipe.rpush(f"{tag}:bench:done", n)
        pipe.execute()

    return {"held": bench_held}


def fifo_actors(sy: Any, tag: str) -> dict[str, Any]:
    """tests/support/worker_app.py's `ordered` and `one_at_a_time`: each logs its start
    and end (with its pid) on one Redis list, in the order Redis received them."""
    import dramatiq

    client = sy.state.client

    def record(what: str, group: str, n: int) -> None:
        client.rpush(f"{tag}:order", f"{what} {group} {n} {os.getpid()}")

    @dramatiq.actor(broker=sy.broker, queue_name=f"{tag}-groups", actor_name="bench_ordered",
                    group_key=by_group, max_retries=3, min_backoff=100, max_backoff=200)
    def bench_ordered(group: str, n: int, sleep_ms: int) -> None:
        record("start", group, n)
        time.sleep(sleep_ms / 1000)
        record("end", group, n)

    @dramatiq.actor(broker=sy.broker, queue_name=f"{tag}-one", actor_name="bench_one",
                    concurrency=1, concurrency_key=f"{tag}-one", max_retries=0)
    def bench_one(n: int, sleep_ms: int) -> None:
        record("start", "one", n)
        time.sleep(sleep_ms / 1000)
        record("end", "one", n)

    return {"ordered": bench_ordered, "one": bench_one}


def rate_actors(sy: Any, tag: str) -> dict[str, Any]:
    """A job under the shared declared limit that calls the fake provider once."""
    import dramatiq

    from switchyard.base.rates import RateLimit

    url = os.environ.get(PROVIDER_ENV, "")

    @dramatiq.actor(broker=sy.broker, queue_name=f"{tag}-rate", actor_name="bench_rated",
                    rate_limit=RateLimit("bench", RATE, 1_000), max_retries=0)
    def bench_rated(n: int) -> None:
        call_provider(url)

    return {"rated": bench_rated}


def call_provider(url: str) -> None:
    """One request; a 429 is the provider's to count, not a failure to retry (a retry
    would be another request)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            reply.read()
    except urllib.error.HTTPError as error:
        if error.code != 429:
            raise


def paused_actors(sy: Any, tag: str) -> dict[str, Any]:
    import dramatiq

    client = sy.state.client

    @dramatiq.actor(broker=sy.broker, queue_name=f"{tag}-paused", actor_name="bench_paused",
                    max_retries=0)
    def bench_paused(n: int) -> None:
        client.incr(f"{tag}:bench:count")

    return {"paused": bench_paused}


DECLARE: dict[str, Callable[[Any, str], dict[str, Any]]] = {
    "held": held_actors, "fifo": fifo_actors, "rate": rate_actors, "paused": paused_actors}


# --- children: a worker, and a client the parent drives ------------------------------------


def worker_main(args: argparse.Namespace) -> int:
    """A worker process: its part's actors, `--threads` threads; `ready`, then work until
    SIGTERM (tests/support/processes.py's `serve`, with Dramatiq's default timeout)."""
    import dramatiq

    sy = open_app()
    DECLARE[args.part](sy, args.tag)
    worker = dramatiq.Worker(sy.broker, worker_threads=args.threads)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    print("ready", flush=True)
    stop.wait()
    worker.stop(timeout=10_000)
    sy.close()
    return 0


class Commands:
    """What the parent asks a client child, one JSON line each way: `{"do": name, ...}`
    in, the method's reply out (or `{"error": ...}`)."""

    def __init__(self, sy: Any, actors: dict[str, Any], tag: str) -> None:
        self.sy = sy
        self.actors = actors
        self.tag = tag
        # Our own bookkeeping (not the state store's timed client): blocking pops.
        self.client: Any = redis.Redis.from_url(os.environ["REDIS_URL"])

    def where(self) -> dict[str, Any]:
        """Where this process imported Switchyard from (the tree measured)."""
        import switchyard

        return {"switchyard": str(Path(switchyard.__file__).parent)}

    def fill_held(self, n: int, sleep_ms: int) -> dict[str, Any]:
        began = time.monotonic()
        for i in range(n):
            self.actors["held"].send(n=i, sleep_ms=sleep_ms)
        return {"sent": n, "seconds": time.monotonic() - began}

    def feed(self, seconds: float, sleep_ms: int) -> dict[str, Any]:
        """Send one job, wait for its end, send the next: nobody ever waits."""
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            self.actors["held"].send(n=n, sleep_ms=sleep_ms)
            self.ended(30)
            n += 1
        return {"jobs": n}

    def collect(self, seconds: float) -> dict[str, Any]:
        """Wait for each job's end (as `feed` does) for `seconds`."""
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            if self.client.blpop([f"{self.tag}:bench:done"], timeout=1) is not None:
                n += 1
        return {"jobs": n}

    def ended(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.client.blpop([f"{self.tag}:bench:done"], timeout=1) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"a job did not end within {timeout:.0f} s")

    def send_fifo(self, one: int, groups: int, per_group: int, sleep_ms: int) -> dict[str, Any]:
        """Both kinds interleaved: a round of the groups, then as many one-at-a-time jobs."""
        ordered, single = self.actors["ordered"], self.actors["one"]
        sent_one = 0
        for n in range(max(per_group, -(-one // groups))):
            if n < per_group:
                for g in range(groups):
                    ordered.send(group=f"g{g}", n=n, sleep_ms=sleep_ms)
            for _ in range(min(groups, one - sent_one)):
                single.send(n=sent_one, sleep_ms=sleep_ms)
                sent_one += 1
        return {"sent": groups * per_group + sent_one}

    def send_rated(self, n: int) -> dict[str, Any]:
        for i in range(n):
            self.actors["rated"].send(n=i)
        return {"sent": n}

    def fill_paused(self, n: int) -> dict[str, Any]:
        """N jobs through the send path (middleware included), the broker's writes of
        each (a body and a list push: Dramatiq's enqueue) batched in pipelines of 1,000,
        so a deep backlog takes seconds; not timed (bench/throughput.py's fill)."""
        broker, actor = self.sy.broker, self.actors["paused"]
        pending: list[tuple[str, str, bytes]] = []

        def write() -> None:
            with broker.client.pipeline(transaction=False) as pipe:
                for queue_name, message_id, data in pending:
                    pipe.hset(f"{broker.namespace}:{queue_name}.msgs", message_id, data)
                    pipe.rpush(f"{broker.namespace}:{queue_name}", message_id)
                pipe.execute()
            pending.clear()

        broker.do_enqueue = lambda *message: pending.append(message)  # shadows the method
        began = time.monotonic()
        try:
            for i in range(n):
                actor.send(n=i)
                if len(pending) >= 1_000:
                    write()
            write()
        finally:
            del broker.do_enqueue
        self.sy.state.buffer.flush()
        return {"sent": n, "seconds": time.monotonic() - began}

    def wait_consumers(self, queue_name: str, within: float) -> dict[str, Any]:
        """Until a live worker says it consumes `queue_name` (its heartbeat)."""
        if not hasattr(self.sy.queues, "consumers_of"):  # a release before pause confirms
            time.sleep(2)
            return {}
        deadline = time.monotonic() + within
        while not self.sy.queues.consumers_of(queue_name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker consumes {queue_name} after {within:.0f} s")
            time.sleep(0.1)
        return {}

    def pause(self, queue_name: str) -> dict[str, Any]:
        """Pause; answers once the live workers applied it (a release before pause
        confirms: once their copy of the paused set has expired)."""
        if not hasattr(self.sy.queues, "pause"):
            self.sy.state.paused.pause(queue_name)
            time.sleep(self.sy.state.paused.cache_ms / 1000 + 0.5)
            return {"unconfirmed": []}
        return {"unconfirmed": list(self.sy.queues.pause(queue_name))}

    def resume(self, queue_name: str) -> dict[str, Any]:
        (getattr(self.sy.queues, "resume", None) or self.sy.state.paused.resume)(queue_name)
        return {}

    def deferred(self) -> dict[str, Any]:
        """Deferrals the metrics middleware counted (every actor), for a cross-check."""
        self.sy.state.buffer.flush()
        return {"deferred": sum(self.sy.state.metrics.totals("deferred").values())}

    def counts(self, queue_name: str) -> dict[str, Any]:
        found = self.sy.queues.counts(queue_name)
        return {"waiting": found.waiting, "active": found.active, "delayed": found.delayed}


def client_main(args: argparse.Namespace) -> int:
    sy = open_app()
    commands = Commands(sy, DECLARE[args.part](sy, args.tag), args.tag)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        name = request.pop("do")
        try:
            if name.startswith("_") or not hasattr(commands, name):
                raise ValueError(f"no command {name!r}")
            reply = getattr(commands, name)(**request)
        except Exception as error:  # the parent reports it, with the traceback on stderr
            traceback.print_exc()
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(reply), flush=True)
    sy.close()
    return 0


def child_main(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(args.tree))  # Switchyard, its actors and middleware: the tree's
    return worker_main(args) if args.role == "worker" else client_main(args)


# --- parent: children, and what they share --------------------------------------------------


class Child:
    """A child process of this script (worker or client) in the measured tree; its stdout
    read by a thread into a queue of lines, its stderr kept in a log file."""

    def __init__(self, args: argparse.Namespace, name: str, role: str, tag: str,
                 env: dict[str, str]) -> None:
        self.name = name
        self.log = args.scratch / f"{name}-{uuid.uuid4().hex[:4]}.log"
        flags = {"--role": role, "--part": name.split("-")[0], "--tag": tag,
                 "--threads": args.threads, "--tree": args.tree}
        with open(self.log, "w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(command(SCRIPT, flags), cwd=args.tree, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"read-{name}").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name}: no answer within {timeout:.0f} s; "
                             f"{self.tail()}") from None
        if line is None:
            self.proc.wait(5)
            raise BenchError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
        return line

    def ready(self, timeout: float = 120) -> None:
        line = self.line(timeout).strip()
        if line != "ready":
            raise BenchError(f"{self.name} did not start: {line[:200]!r}; {self.tail()}")

    def tell(self, do: str, **kwargs: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"do": do, **kwargs}) + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = 60) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(self.line(timeout))
        if "error" in reply:
            raise BenchError(f"{self.name}: {reply['error']}")
        return reply

    def ask(self, do: str, timeout: float = 60, **kwargs: Any) -> dict[str, Any]:
        self.tell(do, **kwargs)
        return self.answer(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """End of stdin (a client's end), SIGTERM (a worker's), SIGKILL after 30 s."""
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                with suppress(OSError):
                    self.proc.stdin.close()
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])[:400] or "(no stderr)"

    def warnings(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))
                or " WARNING " in line or " ERROR " in line]


@contextmanager
def children(args: argparse.Namespace) -> Iterator[Callable[..., Child]]:
    """Start children with the returned function; all are stopped on exit, and their
    WARNING+ lines (logged to their stderr) summed up."""
    started: list[Child] = []

    def start(name: str, role: str, tag: str, env: dict[str, str]) -> Child:
        started.append(Child(args, name, role, tag, env))
        return started[-1]

    try:
        yield start
    finally:
        for child in started:
            child.stop()
        report_warnings(started)


def report_warnings(started: list[Child]) -> None:
    found = [(child.name, line) for child in started for line in child.warnings()]
    if found:
        samples = list(dict.fromkeys(f"{name}: {line[:160]}" for name, line in found))[:3]
        print(f"    {len(found)} WARNING+ line(s) in the children's logs, e.g.:", flush=True)
        for sample in samples:
            print(f"      {sample}", flush=True)


def app_env(args: argparse.Namespace, redis_url: str, broker_url: str, tag: str,
            extra: dict[str, str] | None = None) -> dict[str, str]:
    """A child's settings, as a deployment gives them: the private Redis, its own key
    prefix and broker namespace, the run's payload key; Switchyard from `--tree`."""
    return child_env({
        "PYTHONPATH": str(args.tree), "REDIS_URL": redis_url, "BROKER_URL": broker_url,
        "KEY_PREFIX": tag, "BROKER_NAMESPACE": f"{tag}-ns", "PAYLOAD_KEYS": args.payload_keys,
        "SWITCHYARD_ENV": "test", "VAR_DIR": str(args.scratch / "var"), **(extra or {}),
    })


def ready_all(*started: Child) -> None:
    for child in started:
        child.ready()


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def command_calls(client: redis.Redis) -> Counter[str]:
    """Each command's calls so far (Lua's inner calls included), our INFO left out."""
    stats: Any = client.info("commandstats")
    calls = Counter({name.removeprefix("cmdstat_"): int(v["calls"])
                     for name, v in stats.items()})
    calls.pop("info", None)
    return calls


def count(client: redis.Redis, tag: str) -> int:
    return int(client.get(f"{tag}:bench:count") or 0)  # type: ignore[arg-type]


# --- held: a backlog behind a concurrency-1 limit, against jobs fed one by one ----------------


@dataclass(frozen=True)
class Window:
    cmds_per_s: float
    jobs_per_s: float
    top: list[tuple[str, float]]
    waiting: int


def held_window(args: argparse.Namespace, mode: str) -> Window:
    """One worker on a private Redis; commands/s over `--held-seconds` after a warm-up."""
    with private_redis() as url, children(args) as start:
        tag = f"wb{args.run_id}-{mode}"
        env = app_env(args, url, url, tag)
        worker, client = start("held-worker", "worker", tag, env), start("held-client",
                                                                         "client", tag, env)
        ready_all(worker, client)
        if mode == "fed":
            print(f"    Switchyard imported from {client.ask('where')['switchyard']}", flush=True)
        total = args.warmup + args.held_seconds + 1
        if mode == "held":
            filled = client.ask("fill_held", n=args.held_backlog, sleep_ms=args.held_sleep_ms,
                                timeout=args.held_backlog / 20 + 60)
            print(f"    {args.held_backlog} jobs sent in {filled['seconds']:.1f} s", flush=True)
            client.tell("collect", seconds=total)
        else:
            client.tell("feed", seconds=total, sleep_ms=args.held_sleep_ms)
        redis_client = redis.Redis.from_url(url)
        time.sleep(args.warmup)
        before, jobs, began = command_calls(redis_client), count(redis_client, tag), \
            time.monotonic()
        time.sleep(args.held_seconds)
        after, jobs = command_calls(redis_client), count(redis_client, tag) - jobs
        seconds = time.monotonic() - began
        client.answer(timeout=total + 60)
        done = count(redis_client, tag)
        redis_client.close()
    delta = after - before
    top = [(name, calls / seconds) for name, calls in delta.most_common(5)]
    waiting = args.held_backlog - done if mode == "held" else 0
    return Window(sum(delta.values()) / seconds, jobs / seconds, top, waiting)


def part_held(args: argparse.Namespace) -> list[str]:
    print(f"{args.threads} worker threads, jobs of {args.held_sleep_ms} ms one at a time "
          f"(concurrency=1), {args.warmup:.0f} s warm-up then {args.held_seconds:.0f} s "
          "measured (INFO commandstats of a private redis-server: broker and state store, "
          "Lua's inner calls included)", flush=True)
    windows = {}
    for mode in ("fed", "held"):
        windows[mode] = held_window(args, mode)
        w = windows[mode]
        label = f"{args.held_backlog} held" if mode == "held" else "fed one by one"
        print(f"{label:<16} {w.cmds_per_s:8.1f} cmd/s {w.jobs_per_s:6.1f} jobs/s "
              f"{w.cmds_per_s / w.jobs_per_s if w.jobs_per_s else math.nan:7.1f} cmd/job"
              f"  still waiting {w.waiting:>6}  top: "
              + ", ".join(f"{n} {r:.0f}" for n, r in w.top), flush=True)
    held, fed = windows["held"].cmds_per_s, windows["fed"].cmds_per_s
    return [f"held_cmds_ratio={held / fed:.2f} held_cmds_per_s={held:.0f} "
            f"fed_cmds_per_s={fed:.0f} held_backlog={args.held_backlog}"]


# --- fifo: a one-at-a-time queue and ordered groups through a SIGKILL -------------------------


@dataclass(frozen=True)
class Verdict:
    out_of_order: list[tuple[str, int]]  # started before the job sent before them ended
    lost: int  # expected jobs that never ended
    reruns: int  # starts beyond each job's first


def judge(events: list[str], expected: set[tuple[str, int]]) -> Verdict:
    """Jobs that started before the job sent before them, in their group, ended for the
    last time (or that never ended); expected jobs that never ended; extra runs."""
    last_end: dict[tuple[str, int], int] = {}
    starts: dict[tuple[str, int], list[int]] = defaultdict(list)
    for index, event in enumerate(events):
        what, group, number, _pid = event.split()
        key = (group, int(number))
        if what == "start":
            starts[key].append(index)
        else:
            last_end[key] = index
    out_of_order = sorted(
        (group, n) for (group, n), indexes in starts.items()
        if n > 0 and min(indexes) < last_end.get((group, n - 1), math.inf))
    return Verdict(out_of_order, len(expected - set(last_end)),
                   sum(len(indexes) - 1 for indexes in starts.values()))


def show(events: list[str], job: tuple[str, int]) -> str:
    """The log lines (index: event) of a job and the one sent before it."""
    group, n = job
    return "; ".join(f"{i}: {e}" for i, e in enumerate(events)
                     if e.split()[1] == group and int(e.split()[2]) in (n - 1, n))


class OrderLog:
    """The jobs' start/end list, read incrementally: which jobs ended, which each
    process is running."""

    def __init__(self, url: str, key: str) -> None:
        self.client: Any = redis.Redis.from_url(url)  # redis-py mixes sync and async types
        self.key = key
        self.events: list[str] = []
        self.ended: set[tuple[str, int]] = set()
        self.running: dict[int, set[tuple[str, int]]] = defaultdict(set)

    def read(self) -> None:
        for raw in self.client.lrange(self.key, len(self.events), -1):
            event = raw.decode()
            self.events.append(event)
            what, group, n, pid = event.split()
            job = (group, int(n))
            if what == "end":
                self.ended.add(job)
                self.running[int(pid)].discard(job)
            else:
                self.running[int(pid)].add(job)

    def ended_of(self, one: bool) -> int:
        return sum(1 for group, _ in self.ended if (group == "one") == one)

    def runs(self, pid: int, *, groups: bool) -> bool:
        """Whether `pid` is running a one-at-a-time job now (and, with `groups`, a job
        of an ordered group too), as far as the log says."""
        self.read()
        kinds = {group == "one" for group, _ in self.running[pid]}
        return True in kinds and (not groups or False in kinds)


def fifo_run(args: argparse.Namespace, broker: str) -> tuple[int, int]:
    with private_redis() as url, children(args) as start:
        tag = f"wb{args.run_id}-fifo-{broker}"
        broker_url = url if broker == "redis" else args.amqp_url
        env = app_env(args, url, broker_url, tag)
        try:
            return fifo_measure(args, start, url, tag, env)
        finally:
            if broker == "rabbitmq":
                delete_queues(args.amqp_url, [f"{tag}-one", f"{tag}-groups"])


def fifo_measure(args: argparse.Namespace, start: Callable[..., Child], url: str, tag: str,
                 env: dict[str, str]) -> tuple[int, int]:
    per_group = args.fifo_jobs // args.fifo_groups
    expected = {("one", n) for n in range(args.fifo_jobs)}
    expected |= {(f"g{g}", n) for g in range(args.fifo_groups) for n in range(per_group)}
    workers = [start("fifo-worker", "worker", tag, env) for _ in range(2)]
    client = start("fifo-client", "client", tag, env)
    ready_all(*workers, client)
    began = time.monotonic()
    client.tell("send_fifo", one=args.fifo_jobs, groups=args.fifo_groups, per_group=per_group,
                sleep_ms=args.fifo_sleep_ms)
    log = OrderLog(url, f"{tag}:order")

    def progressed() -> bool:
        log.read()
        return len(log.ended) >= args.kill_at * len(expected)

    wait_until(progressed, args.fifo_timeout, "the kill point")
    victim = workers[1].proc.pid
    # The worst moment: the victim runs the one-at-a-time job and a group's (or, if that
    # does not come within 10 s, the one-at-a-time job).
    for groups, within in ((True, 10.0), (False, 5.0)):
        with suppress(BenchError):
            wait_until(partial(log.runs, victim, groups=groups), within, "", every=0.002)
            break
    workers[1].kill()
    killed_at = time.monotonic() - began
    log.read()  # what the victim logged before it died: the jobs it died running are left
    running = ", ".join(f"{g} {n}" for g, n in sorted(log.running[victim]))
    print(f"    SIGKILL at {killed_at:.1f} s: one-at-a-time "
          f"{log.ended_of(True)}/{args.fifo_jobs} ended, groups "
          f"{log.ended_of(False)}/{len(expected) - args.fifo_jobs}; the victim died running "
          f"{running or 'nothing'}", flush=True)
    start("fifo-worker", "worker", tag, env).ready()
    client.answer(timeout=args.fifo_timeout)

    def settled() -> bool:
        log.read()
        if len(log.ended) < len(expected):
            return False
        counts = [client.ask("counts", queue_name=f"{tag}-{q}") for q in ("one", "groups")]
        return all(c["waiting"] + c["active"] + c["delayed"] == 0 for c in counts)

    try:
        wait_until(settled, args.fifo_timeout, "every job to end", every=0.5)
    except BenchError as error:
        print(f"    {error}", flush=True)
    seconds = time.monotonic() - began
    time.sleep(1)  # a redelivered copy would start now
    log.read()
    verdict = judge(log.events, expected)
    print(f"    {len(expected)} jobs in {seconds:.1f} s; {verdict.reruns} run again after the "
          f"kill, {len(verdict.out_of_order)} out of order, {verdict.lost} lost", flush=True)
    for job in verdict.out_of_order[:3]:
        print(f"      out of order: {show(log.events, job)}", flush=True)
    return len(verdict.out_of_order), verdict.lost


def part_fifo(args: argparse.Namespace) -> list[str]:
    per_group = args.fifo_jobs // args.fifo_groups
    print(f"{args.fifo_jobs} one-at-a-time jobs (concurrency=1, a concurrency_key) and "
          f"{per_group * args.fifo_groups} in {args.fifo_groups} ordered groups, "
          f"{args.fifo_sleep_ms} ms each, two worker processes of {args.threads} threads; "
          f"one SIGKILLed when {args.kill_at:.0%} have ended, and a new one started",
          flush=True)
    figures, total_bad, total_lost = [], 0, 0
    for broker in args.fifo_brokers:
        if broker == "rabbitmq" and not rabbitmq_answers(args.amqp_url):
            print("RabbitMQ is not answering: skipped", flush=True)
            figures.append("fifo_violations_rabbitmq=nan fifo_lost_rabbitmq=nan")
            continue
        print(f"{broker}:", flush=True)
        bad, lost = fifo_run(args, broker)
        total_bad, total_lost = total_bad + bad, total_lost + lost
        figures.append(f"fifo_violations_{broker}={bad} fifo_lost_{broker}={lost}")
    return [*figures, f"fifo_violations={total_bad} fifo_lost={total_lost} "
            f"fifo_jobs={args.fifo_jobs + per_group * args.fifo_groups}"]


# --- rate: four workers sharing a declared limit, against a fake provider's bucket -----------


class FakeProvider:
    """A loopback HTTP server with a token bucket (`capacity` tokens, refilled at `rate` a
    second, full at the start): 200 while a token is left, else 429; each request's time
    (CLOCK_MONOTONIC) and answer kept."""

    def __init__(self, capacity: int, rate: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.tokens, self.last = float(capacity), time.monotonic()
        self.requests: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        provider = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                code = provider.take()
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server, port = loopback_server(Handler, "fake-provider")
        self.url = f"http://127.0.0.1:{port}/send"

    def take(self) -> int:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            code = 200 if self.tokens >= 1 else 429
            if code == 200:
                self.tokens -= 1
            self.requests.append((now, code))
            return code

    def first(self) -> float | None:
        with self.lock:
            return self.requests[0][0] if self.requests else None

    def between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for at, _ in self.requests if start <= at < end)

    def refused(self) -> int:
        with self.lock:
            return sum(1 for _, code in self.requests if code == 429)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def part_rate(args: argparse.Namespace) -> list[str]:
    jobs = RATE * int(args.rate_warmup + args.rate_seconds + 5)
    print(f"{args.rate_workers} worker processes of {args.threads} threads sharing "
          f'RateLimit("bench", {RATE}, 1000); {jobs} jobs sent at once, each calling a '
          f"loopback fake provider (bucket of {RATE}, refilled {RATE}/s); requests counted "
          f"over {args.rate_seconds:.0f} s after a {args.rate_warmup:.0f} s warm-up", flush=True)
    provider = FakeProvider(RATE, RATE)
    try:
        with private_redis() as url, children(args) as start:
            tag = f"wb{args.run_id}-rate"
            env = app_env(args, url, url, tag, {PROVIDER_ENV: provider.url})
            started = [start("rate-worker", "worker", tag, env)
                       for _ in range(args.rate_workers)]
            client = start("rate-client", "client", tag, env)
            ready_all(*started, client)
            client.ask("send_rated", n=jobs, timeout=120)
            wait_until(lambda: provider.first() is not None, 60, "the first request")
            first = provider.first() or 0.0
            window = (first + args.rate_warmup, first + args.rate_warmup + args.rate_seconds)
            time.sleep(max(0.0, window[1] + 0.5 - time.monotonic()))
            counted, refused = provider.between(*window), provider.refused()
    finally:
        provider.close()
    rate = counted / args.rate_seconds
    error = abs(rate - RATE) / RATE * 100
    print(f"{counted} requests in {args.rate_seconds:.0f} s: {rate:.2f}/s against {RATE}/s "
          f"({error:.2f} % off); {refused} answered 429", flush=True)
    return [f"rate_limit_error_pct={error:.2f} provider_429s={refused} "
            f"rate_per_s={rate:.2f} rate_seconds={args.rate_seconds:g}"]


# --- paused: a paused queue's backlog, watched on Redis's side ------------------------------


class KeyEvents:
    """Keyspace notifications of some keys, counted per key and event by a thread;
    `take` hands over the counts so far and starts again from zero."""

    def __init__(self, url: str, keys: list[str]) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*(f"__keyspace@0__:{key}" for key in keys))
        self.seen: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True, name="key-events")
        self.thread.start()

    def _listen(self) -> None:
        while not self.stopped.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is not None:
                key = message["channel"].decode().split(":", 1)[1]
                with self.lock:
                    self.seen[key, message["data"].decode()] += 1

    def take(self) -> Counter[tuple[str, str]]:
        time.sleep(0.5)  # what Redis published is read by now
        with self.lock:
            seen, self.seen = self.seen, Counter()
        return seen

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()


@dataclass(frozen=True)
class PausedQueue:
    client: Child
    redis: Any
    watch: KeyEvents
    queue: str
    base: str  # the queue's list; its bodies are `.msgs`, its delay queue `.DQ`
    tag: str


def paused_window(args: argparse.Namespace, q: PausedQueue) -> Counter[tuple[str, str]]:
    """What happens to the paused queue over `--paused-seconds`: keyspace events, and
    the cross-checks printed beside them."""
    q.watch.take()  # from now on
    deferred = q.client.ask("deferred")["deferred"]
    calls, depths = command_calls(q.redis), []
    end = time.monotonic() + args.paused_seconds
    while time.monotonic() < end:
        depths.append(int(q.redis.llen(q.base)))
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    events, calls = q.watch.take(), command_calls(q.redis) - calls
    deferred = q.client.ask("deferred")["deferred"] - deferred
    print(f"    over the pause: queue length {min(depths)}..{max(depths)}, "
          f"{sum(n for (_, e), n in events.items() if e in PUSHES)} pushes onto the queue or "
          f"its delay queue, {sum(n for (k, e), n in events.items() if k == q.base and e in POPS)}"
          f" takes from the queue, {q.redis.hlen(f'{q.base}.DQ.msgs')} bodies in its delay "
          f"queue, {deferred} deferrals counted by the metrics, "
          f"{calls['lpush'] + calls['rpush']} Redis list pushes in all (doorbells included); "
          f"keyspace events: {dict(events) or 'none'}", flush=True)
    return events


def resume_and_drain(args: argparse.Namespace, q: PausedQueue) -> tuple[float, int]:
    """Resume, and time until every job has run; how many takes the watch saw meanwhile
    (it vouches for its zero only if it sees them)."""
    q.client.ask("resume", queue_name=q.queue)
    began = time.monotonic()
    wait_until(lambda: count(q.redis, q.tag) >= args.paused_jobs, args.paused_jobs / 50 + 120,
               "every job to run after resume", every=0.2)
    seconds = time.monotonic() - began
    takes = sum(n for (key, e), n in q.watch.take().items() if key == q.base and e in POPS)
    print(f"resumed: {count(q.redis, q.tag)}/{args.paused_jobs} jobs ran in {seconds:.1f} s "
          f"({args.paused_jobs / seconds:.0f} jobs/s); the watch saw {takes} takes from the "
          "queue meanwhile", flush=True)
    return seconds, takes


def part_paused(args: argparse.Namespace) -> list[str]:
    print(f"{args.paused_jobs} jobs in a paused queue for {args.paused_seconds:.0f} s with a "
          f"worker of {args.threads} threads running; pushes onto the queue and its delay "
          "queue counted from Redis keyspace events (no middleware asked); then resumed",
          flush=True)
    with private_redis() as url, children(args) as start:
        tag = f"wb{args.run_id}-paused"
        env, queue_name = app_env(args, url, url, tag), f"{tag}-paused"
        worker, client = start("paused-worker", "worker", tag, env), \
            start("paused-client", "client", tag, env)
        ready_all(worker, client)
        client.ask("wait_consumers", queue_name=queue_name, within=60, timeout=90)
        unconfirmed = client.ask("pause", queue_name=queue_name)["unconfirmed"]
        filled = client.ask("fill_paused", n=args.paused_jobs,
                            timeout=args.paused_jobs / 200 + 120)
        print(f"    paused ({len(unconfirmed)} worker(s) unconfirmed); {args.paused_jobs} sent "
              f"in {filled['seconds']:.1f} s", flush=True)
        redis_client: Any = redis.Redis.from_url(url)
        redis_client.config_set("notify-keyspace-events", "Klh")
        base = f"{tag}-ns:{queue_name}"
        watch = KeyEvents(url, [base, f"{base}.DQ", f"{base}.msgs", f"{base}.DQ.msgs"])
        q = PausedQueue(client, redis_client, watch, queue_name, base, tag)
        try:
            events = paused_window(args, q)
            seconds, takes = resume_and_drain(args, q)
        finally:
            watch.stop()
            redis_client.close()
    pushes = sum(n for (_, event), n in events.items() if event in PUSHES)
    if not takes:
        print("the watch saw no take after resume: it cannot vouch for its count", flush=True)
    return [f"paused_requeues={pushes if takes else 'nan'} paused_jobs={args.paused_jobs} "
            f"paused_seconds={args.paused_seconds:g} paused_resume_s={seconds:.1f}"]


# --- main ------------------------------------------------------------------------------------


RUNS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "held": part_held, "fifo": part_fifo, "rate": part_rate, "paused": part_paused}


def summary(lines: list[str]) -> None:
    """A table of every figure with its goal (bench/all.py's), then the figure lines."""
    pairs = [pair for line in lines for pair in figures_of(line)]
    values = {name: float(value) if value.replace(".", "", 1).isdigit() else math.nan
              for name, value in pairs}
    print(f"\n{'figure':<28} {'value':>10}  {'goal':<8} {'met':>3}")
    for name, value in pairs:
        goal, met = goal_of(name, values)
        print(f"{name:<28} {value:>10}  {goal:<8} {met:>3}")
    print()
    for line in lines:
        print(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help="some of " + ",".join(PARTS))
    parser.add_argument("--tree", type=lambda p: Path(p).resolve(), default=ROOT,
                        help="the checkout whose Switchyard the children import (PYTHONPATH "
                             "and cwd); this one by default")
    parser.add_argument("--amqp-url", type=check_amqp_loopback, default=DEFAULT_AMQP_URL)
    parser.add_argument("--threads", type=int, default=THREADS, help="per worker process")
    parser.add_argument("--held-backlog", type=int, default=10_000,
                        help="jobs held behind the concurrency-1 limit")
    parser.add_argument("--held-sleep-ms", type=int, default=50, help="each held job's sleep")
    parser.add_argument("--held-seconds", type=float, default=10, help="measured window")
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds before the held part's window")
    parser.add_argument("--fifo-jobs", type=int, default=1_000,
                        help="one-at-a-time jobs, and jobs over the ordered groups")
    parser.add_argument("--fifo-groups", type=int, default=20)
    parser.add_argument("--fifo-sleep-ms", type=int, default=10, help="each ordered job's sleep")
    parser.add_argument("--fifo-brokers", default="redis,rabbitmq")
    parser.add_argument("--kill-at", type=float, default=0.3,
                        help="share of the jobs ended when one worker is SIGKILLed")
    parser.add_argument("--fifo-timeout", type=float, default=180,
                        help="seconds for the jobs to end before the missing count as lost")
    parser.add_argument("--rate-workers", type=int, default=4)
    parser.add_argument("--rate-seconds", type=float, default=20,
                        help="measured window (the issue's: 60)")
    parser.add_argument("--rate-warmup", type=float, default=1,
                        help="seconds after the first request left out")
    parser.add_argument("--paused-jobs", type=int, default=20_000,
                        help="backlog of the paused queue (the issue's: 100000)")
    parser.add_argument("--paused-seconds", type=float, default=30,
                        help="how long the queue stays paused (the issue's: 60)")
    parser.add_argument("--role", choices=["worker", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.only = [p for p in args.only.split(",") if p]
    args.fifo_brokers = [b for b in args.fifo_brokers.split(",") if b]
    if set(args.only) - set(PARTS) or set(args.fifo_brokers) - {"redis", "rabbitmq"}:
        parser.error(f"--only: some of {','.join(PARTS)}; --fifo-brokers: redis,rabbitmq")
    if min(args.threads, args.held_backlog, args.fifo_jobs, args.fifo_groups,
           args.rate_workers, args.paused_jobs) < 1 or args.fifo_jobs < args.fifo_groups:
        parser.error("counts must be at least 1, and --fifo-jobs at least --fifo-groups")
    if not (args.tree / "switchyard").is_dir():
        parser.error(f"--tree {args.tree} is not a Switchyard checkout")
    return args


def describe_tree(tree: Path) -> str:
    """The tree's path, commit and whether its working tree differs from that commit."""
    def git(*argv: str) -> str:
        found = subprocess.run(["git", "-C", str(tree), *argv], capture_output=True, text=True)
        return found.stdout.strip()

    head = git("log", "-1", "--format=%h %s")[:72] or "not a git checkout"
    changed = " + uncommitted changes" if git("status", "--porcelain", "-uno") else ""
    return f"{tree} ({head}{changed})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        return child_main(args)
    args.run_id = uuid.uuid4().hex[:6]
    args.payload_keys = f"bench:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"
    print(f"waiting jobs: {', '.join(args.only)}; Switchyard from {describe_tree(args.tree)}; "
          f"run {args.run_id}", flush=True)
    lines: list[str] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-waiting-") as scratch:
        args.scratch = Path(scratch)
        for part in args.only:
            print(f"\n== {part}", flush=True)
            began = time.monotonic()
            try:
                lines += RUNS[part](args)
            except BenchError as error:
                failed = True
                print(f"{part} failed: {error}", flush=True)
                lines.append(" ".join(f"{name}=nan" for name in FIGURES[part]))
            print(f"({part}: {time.monotonic() - began:.0f} s)", flush=True)
    summary(lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

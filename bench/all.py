"""Every benchmark of bench/, one after another, and one summary table of their figures.

Each benchmark runs as a subprocess with modest arguments (the whole run takes about
30 minutes); its output is passed through, and every line it prints made only of
`name=value` pairs is collected. The end is one table (figure, value, benchmark, goal,
whether it is met), then the `name=value` lines themselves. A benchmark that fails or
times out is a row of its own with its last stderr line; the others still run.

Usage: uv run python bench/all.py [--only throughput,latency,...]
"""

from __future__ import annotations

import argparse
import math
import operator
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    script: str
    args: tuple[str, ...] = ()
    timeout: float = 600


#: What runs, in order, with its arguments; about 30 minutes in all.
BENCHMARKS = {
    "throughput": Benchmark("throughput.py", timeout=1200),
    "latency": Benchmark("latency.py", ("--n", "150", "--idle-seconds", "10")),
    "dashboard": Benchmark("dashboard.py", ("--rounds", "10"), timeout=600),
    "discord": Benchmark("discord.py"),
    "bridge": Benchmark("bridge.py", ("--n", "5000", "--k", "200"), timeout=300),
    "media": Benchmark("media.py", ("--images", "4")),
    "cleanup": Benchmark("cleanup.py", ("--sizes", "10000", "--naive", "1000")),
    "retention": Benchmark("retention.py", ("--jobs", "20000")),
    # Its defaults are sized for about 5 minutes (the full sizes are flags).
    "waiting": Benchmark("waiting.py"),
    "tracing": Benchmark("tracing.py", ("--n", "2000", "--rounds", "3")),
    "production": Benchmark("production.py", ("--n", "3000", "--rounds", "3", "--brokers",
                                              "redis,rabbitmq"), timeout=900),
}
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}
#: Goals: a figure, a comparison, and a number or another figure's name.
GOALS: dict[str, tuple[str, float | str]] = {
    "pipeline/bare": (">=", 0.85),
    "pipeline/huey": (">", 1.0),
    "rabbitmq_pipeline/bare": (">=", 0.85),
    "cpu_per_job/bare": ("<=", 1.2),
    "redis_enqueue/bare": (">=", 0.9),
    "rabbitmq_bulk_enqueue_per_s": (">=", 10_000),
    "backlog_100k/1k": (">=", 0.8),
    "rss_100k/10k": ("<=", 1.1),
    "scaling_2proc_pipeline": (">=", "scaling_2proc_bare"),
    "interaction_defer_p99_ms": ("<", 500),
    "held_cmds_ratio": ("<=", 2),
    "fifo_violations": ("<=", 0),
    "fifo_lost": ("<=", 0),
    "fifo_violations_redis": ("<=", 0),
    "fifo_lost_redis": ("<=", 0),
    "fifo_violations_rabbitmq": ("<=", 0),
    "fifo_lost_rabbitmq": ("<=", 0),
    "rate_limit_error_pct": ("<=", 5),
    "provider_429s": ("<=", 0),
    "paused_requeues": ("<=", 0),
    "tracing_on/off": (">=", 0.9),
    "jobs_page_ms": ("<=", 50),
    "event_lag_p99_ms": ("<=", 100),
    "priority_wait_p99_ms_redis": ("<=", 50),
    "priority_wait_p99_ms_rabbitmq": ("<=", 50),
    "prod_pipeline/bare": (">=", 0.85),
    "prod_rabbitmq_pipeline/bare": (">=", 0.85),
    "sentry_on/off": (">=", 0.95),
    "rabbitmq_sentry_on/off": (">=", 0.95),
    "enqueue/bare_send": (">=", 0.8),
    "rabbitmq_enqueue/bare_send": (">=", 0.8),
    "keyed_limited_cost_us": ("<=", 40),
}
PAIR = re.compile(r"^[A-Za-z][\w/.\-]*=\S+$")


@dataclass
class Result:
    name: str
    figures: list[tuple[str, str]] = field(default_factory=list)
    failure: str | None = None
    seconds: float = 0.0


def figures_of(line: str) -> list[tuple[str, str]]:
    """The `name=value` pairs of a line made of nothing else."""
    tokens = line.split()
    if not tokens or not all(PAIR.match(t) for t in tokens):
        return []
    return [(name, value) for name, value in (t.split("=", 1) for t in tokens)]


def run(name: str, bench: Benchmark) -> Result:
    """Run one benchmark, passing its output through; its figures, or why it failed."""
    result = Result(name)
    print(f"\n===== {name}: {bench.script} {' '.join(bench.args)}", flush=True)
    began = time.monotonic()
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen([sys.executable, str(HERE / bench.script), *bench.args],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        deadline = threading.Timer(bench.timeout, proc.kill)  # ends the read loop too
        deadline.start()
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                result.figures += figures_of(line)
            code = proc.wait()
        finally:
            deadline.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errors.seek(0)
        tail = (errors.read().strip().splitlines() or [""])[-1]
    result.seconds = time.monotonic() - began
    if result.seconds >= bench.timeout:
        result.failure = f"timed out after {bench.timeout:.0f}s"
    elif code != 0:
        result.failure = f"exit {code}: {tail[:160]}"
    return result


def goal_of(name: str, values: dict[str, float]) -> tuple[str, str]:
    """The goal as text, and `yes`, `NO` or `-` (no goal, or no value to judge)."""
    if name not in GOALS:
        return "", "-"
    op, target = GOALS[name]
    bound = values.get(target, math.nan) if isinstance(target, str) else float(target)
    text = f"{op} {target}"
    value = values.get(name, math.nan)
    if math.isnan(value) or math.isnan(bound):
        return text, "-"
    return text, "yes" if OPS[op](value, bound) else "NO"


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def summary(results: list[Result]) -> None:
    """One table of every figure (and every failure), then the name=value lines."""
    values = {n: number(v) for r in results for n, v in r.figures}
    print("\n===== summary")
    print(f"{'figure':<32} {'value':>10}  {'benchmark':<11} {'goal':<24} {'met':>3}")
    for result in results:
        if result.failure:
            print(f"{'(' + result.name + ')':<32} {'FAILED':>10}  {result.name:<11} "
                  f"{result.failure}")
        for name, value in result.figures:
            goal, met = goal_of(name, values)
            print(f"{name:<32} {value:>10}  {result.name:<11} {goal:<24} {met:>3}")
    for name in GOALS:
        if name not in values:
            print(f"{name:<32} {'missing':>10}  {'':<11} {goal_of(name, values)[0]:<24} {'-':>3}")
    print()
    for result in results:
        for name, value in result.figures:
            print(f"{name}={value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="some of " + ",".join(BENCHMARKS))
    args = parser.parse_args(argv)
    chosen = [n for n in (args.only or ",".join(BENCHMARKS)).split(",") if n]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}: some of {','.join(BENCHMARKS)}")
    results = [run(name, BENCHMARKS[name]) for name in chosen]
    summary(results)
    return 1 if any(r.failure for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

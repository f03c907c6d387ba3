"""Metrics in the state store: counters and duration histograms per actor and outcome.

Kept in the state store rather than per process, so they add up across processes and
hosts and the web process can serve `/metrics` (a Heroku web dyno cannot scrape
worker dynos). Each process adds its increments up in memory and flushes the sums,
one HINCRBY per changed field per flush interval, not one round trip per job.

Outcomes: done, retried, rate_limited, deferred, skipped, dead; plus `enqueued`.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from typing import Any

import redis

from state.buffer import Write, WriteBuffer

#: Upper bounds (ms) of the run-duration histogram's buckets; +Inf is implied.
BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000)
SEP = "\t"
_BUCKET_NAMES = tuple(map(str, BUCKETS_MS))


class MetricsStore:
    """Reads and writes the aggregated counters and histograms."""

    def __init__(self, client: redis.Redis, buffer: WriteBuffer, *, prefix: str) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.buffer = buffer
        self.counters_key = f"{prefix}:metrics:counters"
        self.durations_key = f"{prefix}:metrics:durations"
        self._counts: Counter[str] = Counter()
        self._buckets: Counter[str] = Counter()
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()
        buffer.add_source(self._drain, lazy=True)

    def count(self, actor: str, queue: str, outcome: str) -> None:
        self.finish(actor, queue, outcome, None)

    def observe(self, actor: str, queue: str, duration_ms: float) -> None:
        self.finish(actor, queue, None, duration_ms)

    def finish(self, actor: str, queue: str, outcome: str | None,
               duration_ms: float | None) -> None:
        """Count a delivery's `outcome` and observe its run's duration, either optional:
        one lock for both, on every job's path."""
        base = f"{actor}{SEP}{queue}{SEP}"
        if duration_ms is not None:
            i = bisect.bisect_left(BUCKETS_MS, duration_ms)
            bucket = _BUCKET_NAMES[i] if i < len(BUCKETS_MS) else "+Inf"
        with self._lock:
            if outcome is not None:
                self._counts[base + outcome] += 1
            if duration_ms is not None:
                self._buckets[base + bucket] += 1
                self._buckets[base + "count"] += 1
                self._sums[base + "sum"] = self._sums.get(base + "sum", 0.0) + duration_ms
        self.buffer.wake_soon()

    def _drain(self) -> Write | None:
        with self._lock:
            if not (self._counts or self._buckets):
                return None
            counts, buckets, sums = self._counts, self._buckets, self._sums
            self._counts, self._buckets, self._sums = Counter(), Counter(), {}

        def write(pipe: Any) -> None:
            for field, n in counts.items():
                pipe.hincrby(self.counters_key, field, n)
            for field, n in buckets.items():
                pipe.hincrby(self.durations_key, field, n)
            for field, total in sums.items():
                pipe.hincrbyfloat(self.durations_key, field, round(total, 3))

        return write

    def counters(self) -> dict[tuple[str, str, str], int]:
        """(actor, queue, outcome) -> count, summed over every process."""
        raw = self.client.hgetall(self.counters_key)
        return {tuple(k.decode().split(SEP)): int(v) for k, v in raw.items()}

    def durations(self) -> dict[tuple[str, str], dict[str, float]]:
        """(actor, queue) -> {bucket or 'sum' or 'count': value}; buckets not cumulative."""
        result: dict[tuple[str, str], dict[str, float]] = {}
        for k, v in self.client.hgetall(self.durations_key).items():
            actor, queue, name = k.decode().split(SEP)
            result.setdefault((actor, queue), {})[name] = float(v)
        return result

    def totals(self, outcome: str) -> Counter[str]:
        """Per actor total of one outcome."""
        totals: Counter[str] = Counter()
        for (actor, _queue, name), value in self.counters().items():
            if name == outcome:
                totals[actor] += value
        return totals

"""Job counts over time in the state store, for the dashboard's charts.

Each outcome (done, retried, rate-limited, dead, ...) and each queue wait is counted in
a bucket per minute and a bucket per hour: one hash per bucket, `timeline:m:<minute>`
and `timeline:h:<hour>`, each field `<queue>\\t<outcome>` or `<queue>\\twait\\t<bound>`;
per actor (for the Metrics page) `@<actor>\\t<outcome>` and each run's time,
`@<actor>\\trun\\t<bound>` (a queue's name cannot start with `@`).
Every bucket expires (TIMELINE_MINUTE_TTL_MS, TIMELINE_HOUR_TTL_MS), so the store holds
at most a couple of hours of minutes and a couple of days of hours, whatever the load.

Increments add up in memory and are flushed with the other buffered writes: one
HINCRBY per changed field per flush interval. The wait is the time from the moment a
message could first run (its enqueue time, or its `eta` when delayed) to its start;
its p50 and p95, and a run time's p50, p95 and p99, are read from the histograms,
interpolated within the bucket that holds the rank.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from typing import Any

import redis

from state.buffer import Write, WriteBuffer

#: Upper bounds (ms) of the wait-time histogram's buckets; +Inf is implied.
WAIT_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
                  60_000, 300_000, 900_000, 3_600_000)
_BOUND_NAMES = tuple(map(str, WAIT_BOUNDS_MS))
SEP = "\t"
MINUTE_MS, HOUR_MS = 60_000, 3_600_000
#: The resolutions read back: (name, bucket width, how many buckets).
RESOLUTIONS = {"minute": (MINUTE_MS, 60), "hour": (HOUR_MS, 24)}
#: The outcomes the charts draw.
CHARTED = ("done", "retried", "rate_limited", "dead")


#: The outcomes of a run that failed it (a retry, a dead letter).
FAILED = ("retried", "dead")
#: The outcomes of a delivery that ran the job (the Metrics page's count).
RAN = ("done", "retried", "dead", "cancelled")


def percentile(histogram: dict[str, int], fraction: float) -> float | None:
    """The `fraction` rank (ms) of a histogram by WAIT_BOUNDS_MS, interpolated linearly
    within the bucket that holds it (as Prometheus's histogram_quantile does); the top
    bound for the +Inf bucket; None if empty."""
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen, lower = fraction * total, 0, 0.0
    for bound in WAIT_BOUNDS_MS:
        count = histogram.get(str(bound), 0)
        if count and seen + count >= rank:
            return round(lower + (bound - lower) * (rank - seen) / count, 1)
        seen += count
        lower = float(bound)
    return float(WAIT_BOUNDS_MS[-1])


class Timeline:
    """Counts per minute and per hour; `minute_ttl` and `hour_ttl` are in ms."""

    def __init__(self, client: redis.Redis, buffer: WriteBuffer, *, prefix: str,
                 minute_ttl: int, hour_ttl: int) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.prefix = f"{prefix}:timeline"
        self.ttl = {"m": minute_ttl, "h": hour_ttl}
        self._counts: Counter[tuple[int, str]] = Counter()  # (minute start, field)
        self._lock = threading.Lock()
        self.buffer = buffer
        buffer.add_source(self._drain, lazy=True)

    def key(self, kind: str, start_ms: int) -> str:
        return f"{self.prefix}:{kind}:{start_ms}"

    def _add(self, field: str, at_ms: int | None = None) -> None:
        now = int(time.time() * 1000) if at_ms is None else at_ms
        with self._lock:  # per minute; the hours are added up at flush time
            self._counts[now - now % MINUTE_MS, field] += 1
        self.buffer.wake_soon()

    def wait(self, queue: str, wait_ms: float) -> None:
        self._add(f"{queue}{SEP}wait{SEP}{_bound(wait_ms)}")

    def ended(self, queue: str, actor: str, outcome: str, run_ms: float | None) -> None:
        """A delivery of `actor` on `queue` ended `outcome`, after running `run_ms` (None:
        it did not run: skipped, deferred); counted for the queue and for the actor."""
        now = int(time.time() * 1000)
        minute = now - now % MINUTE_MS
        with self._lock:
            self._counts[minute, f"{queue}{SEP}{outcome}"] += 1
            self._counts[minute, f"@{actor}{SEP}{outcome}"] += 1
            if run_ms is not None:
                self._counts[minute, f"@{actor}{SEP}run{SEP}{_bound(run_ms)}"] += 1
        self.buffer.wake_soon()

    def _drain(self) -> Write | None:
        with self._lock:
            if not self._counts:
                return None
            minutes, self._counts = self._counts, Counter()
        counts: Counter[tuple[str, str]] = Counter()
        for (start, field), n in minutes.items():
            counts[self.key("m", start), field] += n
            counts[self.key("h", start - start % HOUR_MS), field] += n

        def write(pipe: Any) -> None:
            for (key, field), n in counts.items():
                pipe.hincrby(key, field, n)
            for key in {key for key, _ in counts}:
                pipe.pexpire(key, self.ttl[key.rsplit(":", 2)[-2]])

        return write

    def series(self, resolution: str, queue: str | None = None,
               now_ms: int | None = None) -> dict[str, Any]:
        """The buckets of `resolution` (minute: the last hour, hour: the last day), oldest
        first: per bucket its start, each charted outcome's count and the wait p50/p95."""
        width, buckets = self._buckets(resolution, now_ms)
        points = [self._point(start, raw, queue) for start, raw in buckets]
        return {"resolution": resolution, "width_ms": width, "points": points}

    def _buckets(self, resolution: str,
                 now_ms: int | None) -> tuple[int, list[tuple[int, dict[bytes, bytes]]]]:
        """The width of `resolution`'s buckets, and its buckets (start, fields) up to
        now, oldest first, read in one round trip."""
        width, n = RESOLUTIONS[resolution]
        now = int(time.time() * 1000) if now_ms is None else now_ms
        starts = [now - now % width - width * i for i in range(n - 1, -1, -1)]
        pipe = self.client.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(self.key(resolution[0], start))
        return width, list(zip(starts, pipe.execute(), strict=True))

    def actor_series(self, resolution: str, now_ms: int | None = None) -> dict[str, Any]:
        """Per actor, the buckets of `resolution` oldest first: its runs, failures
        (retried or dead), failure rate and run time p50/p95/p99; and its totals."""
        width, read = self._buckets(resolution, now_ms)
        starts = [start for start, _ in read]
        per_actor: dict[str, list[tuple[Counter[str], Counter[str]]]] = {}
        for i, (_, raw) in enumerate(read):
            for field, value in raw.items():
                name, _, rest = field.decode().partition(SEP)
                if not name.startswith("@"):
                    continue
                buckets = per_actor.setdefault(name[1:], [(Counter(), Counter())
                                                          for _ in starts])
                counts, runs = buckets[i]
                if rest.startswith(f"run{SEP}"):
                    runs[rest.split(SEP, 1)[1]] += int(value)
                else:
                    counts[rest] += int(value)
        actors = {}
        for actor, buckets in sorted(per_actor.items()):
            points = [{"start": start, **_run_stats(counts, runs)}
                      for start, (counts, runs) in zip(starts, buckets, strict=True)]
            total_counts: Counter[str] = sum((c for c, _ in buckets), Counter())
            total_runs: Counter[str] = sum((r for _, r in buckets), Counter())
            actors[actor] = {"points": points, "total": _run_stats(total_counts, total_runs)}
        return {"resolution": resolution, "width_ms": width, "actors": actors}

    @staticmethod
    def _point(start: int, raw: dict[bytes, bytes], queue: str | None) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        waits: Counter[str] = Counter()
        for field, value in raw.items():
            name, _, rest = field.decode().partition(SEP)
            if (queue is not None and name != queue) or name.startswith("@"):
                continue
            if rest.startswith(f"wait{SEP}"):
                waits[rest.split(SEP, 1)[1]] += int(value)
            else:
                counts[rest] += int(value)
        point: dict[str, Any] = {"start": start, **{o: counts[o] for o in CHARTED}}
        point["wait_p50_ms"] = percentile(waits, 0.50)
        point["wait_p95_ms"] = percentile(waits, 0.95)
        return point


def _bound(ms: float) -> str:
    i = bisect.bisect_left(WAIT_BOUNDS_MS, ms)
    return _BOUND_NAMES[i] if i < len(WAIT_BOUNDS_MS) else "+Inf"


def _run_stats(counts: Counter[str], runs: Counter[str]) -> dict[str, Any]:
    ran = sum(counts[o] for o in RAN)
    failed = sum(counts[o] for o in FAILED)
    return {"runs": ran, "failed": failed,
            "failure_rate": round(failed / ran, 4) if ran else None,
            "run_p50_ms": percentile(runs, 0.50), "run_p95_ms": percentile(runs, 0.95),
            "run_p99_ms": percentile(runs, 0.99)}

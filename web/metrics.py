"""`/metrics` (Prometheus), `/metrics/queues` and `/metrics/system` (monitoring API JSON).

The Prometheus numbers are the pipeline's, summed over every process in the state
store by the metrics middleware, so any web process answers for the whole fleet. Beside
them, what the alert rules of `deploy/prometheus/` watch: whether the state store
answers, each queue's oldest waiting job and live workers, and how late the clock is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psutil
import redis
from dramatiq.common import q_name
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from schedules import SCHEDULES, Schedule
from state.metrics import BUCKETS_MS
from switchyard.clock import Clock, slots_after, utcnow
from switchyard.runtime.app import App
from switchyard.runtime.queues import Survey


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def histogram_buckets(values: dict[str, float]) -> list[tuple[str, float]]:
    """The store's per-bucket counts (ms) as Prometheus's cumulative `le` buckets (s)."""
    buckets, total = [], 0.0
    for bound in BUCKETS_MS:
        total += values.get(str(bound), 0.0)
        buckets.append((f"{bound / 1000:g}", total))
    buckets.append(("+Inf", total + values.get("+Inf", 0.0)))
    return buckets


class PipelineCollector:
    """Reads the metrics store and the queues at each scrape."""

    def __init__(self, sy: App, schedules: tuple[Schedule, ...] = SCHEDULES) -> None:
        self.sy = sy
        self.clock = Clock(sy, schedules)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("switchyard_state_store_up",
                               "1 when the state store (Redis) answers, else 0.")
        try:
            self.sy.state.client.ping()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up  # everything else is read from it
            return
        up.add_metric([], 1)
        yield up
        survey = self.sy.queues.survey()  # once per scrape: one look at the broker
        yield from self.pipeline(survey)
        yield from self.queue_health(survey)
        yield from self.clock_lateness()

    def pipeline(self, survey: Survey) -> Iterator[Metric]:
        jobs = CounterMetricFamily("switchyard_jobs", "Job deliveries by outcome.",
                                   labels=["actor", "queue", "outcome"])
        for (actor, queue, outcome), n in sorted(self.sy.state.metrics.counters().items()):
            jobs.add_metric([actor, queue, outcome], n)
        yield jobs
        durations = HistogramMetricFamily("switchyard_job_duration_seconds",
                                          "Run time of jobs that ran.", labels=["actor", "queue"])
        for (actor, queue), values in sorted(self.sy.state.metrics.durations().items()):
            durations.add_metric([actor, queue], histogram_buckets(values),
                                 sum_value=values.get("sum", 0.0) / 1000)
        yield durations
        depth = GaugeMetricFamily("switchyard_queue_depth",
                                  "Messages waiting in the queue (ready and delayed).",
                                  labels=["queue"])
        dead = GaugeMetricFamily("switchyard_dead_letters", "Dead letters kept for the queue.",
                                 labels=["queue"])
        paused = GaugeMetricFamily("switchyard_queue_paused", "1 while the queue is paused.",
                                   labels=["queue"])
        paused_now = self.sy.state.paused.paused()
        for queue, counts in survey.counts.items():
            depth.add_metric([queue], counts.depth)
            dead.add_metric([queue], self.sy.state.dead_letters.depth(queue))
            paused.add_metric([queue], int(queue in paused_now))
        yield from (depth, dead, paused)

    def queue_health(self, survey: Survey) -> Iterator[Metric]:
        """Per queue: its live workers, and how long its oldest ready job has waited
        (left out where the broker cannot tell: RabbitMQ without its management API, or
        a head message without a timestamp)."""
        workers = GaugeMetricFamily("switchyard_queue_workers",
                                    "Live worker processes consuming the queue.",
                                    labels=["queue"])
        oldest = GaugeMetricFamily(
            "switchyard_queue_oldest_waiting_seconds",
            "How long the queue's oldest ready job has waited (0: none waits).",
            labels=["queue"])
        live = self.sy.state.workers.live()
        now_ms = time.time() * 1000
        for queue in survey.counts:
            # A worker that did not say which queues it reads counts for each.
            workers.add_metric([queue], sum(
                1 for w in live if queue in {q_name(q) for q in w.get("queues", [queue])}))
            if queue not in survey.oldest_unknown:
                since = survey.oldest_ms.get(queue)
                oldest.add_metric([queue], 0 if since is None else
                                  max(0.0, now_ms - since) / 1000)
        yield from (workers, oldest)

    def clock_lateness(self) -> Iterator[Metric]:
        """Per schedule the clock has sent: its last slot sent, and how long the next slot
        after it has been due without being sent (0 until it is due)."""
        last_sent = GaugeMetricFamily(
            "switchyard_clock_last_slot_timestamp_seconds",
            "The newest slot of the schedule sent by any clock (Unix time).",
            labels=["schedule"])
        late = GaugeMetricFamily(
            "switchyard_clock_late_seconds",
            "How long the schedule's oldest slot not sent yet has been due (0: none due).",
            labels=["schedule"])
        now = utcnow()
        for schedule in self.clock.schedules:
            last = self.clock.last(schedule)
            if last is None:  # never sent: nothing tells a missed slot from a new schedule
                continue
            spec, zone = self.clock.specs[schedule.name]
            due = next(slots_after(spec, zone, last), None)
            last_sent.add_metric([schedule.name], last.timestamp())
            late.add_metric([schedule.name], 0 if due is None or due > now
                            else (now - due).total_seconds())
        yield from (last_sent, late)


def system(started: float) -> dict[str, Any]:
    """Host and process numbers in the monitoring API's shape.

    Python has no separate JavaScript heap: `heapTotal` is the process's data segment,
    `heapUsed` its resident memory not shared with others, `external` its shared
    memory. `memory.free` is the memory available to new processes (Linux's
    MemAvailable), not the kernel's strictly free pages.
    """
    memory = psutil.virtual_memory()
    process = psutil.Process()
    info = process.memory_info()
    shared = int(getattr(info, "shared", 0))
    return {
        "cpu": {"usage": psutil.cpu_percent(interval=None), "count": psutil.cpu_count() or 1},
        "memory": {"total": memory.total, "free": memory.available,
                   "used": memory.total - memory.available, "usagePercent": memory.percent},
        "process": {
            "uptime": round(time.monotonic() - started, 3),
            "memoryUsage": {"rss": info.rss, "heapTotal": int(getattr(info, "data", info.vms)),
                            "heapUsed": info.rss - shared, "external": shared},
            "pid": os.getpid(),
        },
    }


def router(sy: App) -> APIRouter:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(sy))  # type: ignore[arg-type]
    psutil.cpu_percent(interval=None)  # the first reading only starts the measurement
    routes = APIRouter(tags=["metrics"])

    @routes.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        """Prometheus text exposition of the pipeline's counters, histograms and gauges."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @routes.get("/metrics/queues")
    def queue_metrics() -> dict[str, Any]:
        """Per queue: waiting, active, completed, failed, delayed, paused and the oldest
        waiting job's age; `notes` say what the broker could not tell."""
        survey = sy.queues.survey()
        return {"queues": sy.queues.snapshot(survey), "notes": list(survey.notes),
                "timestamp": now_iso()}

    @routes.get("/metrics/system")
    def system_metrics(request: Request) -> dict[str, Any]:
        """CPU, memory and this process's numbers."""
        return system(request.app.state.started)

    return routes

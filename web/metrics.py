"""`/metrics` (Prometheus), `/metrics/queues` and `/metrics/system` (monitoring API JSON).

The Prometheus numbers are the pipeline's, summed over every process in the state
store by the metrics middleware, so any web process answers for the whole fleet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psutil
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from state.metrics import BUCKETS_MS
from switchyard.app import App


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

    def __init__(self, sy: App) -> None:
        self.sy = sy

    def collect(self) -> Iterator[Metric]:
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
        for queue in self.sy.queues.names():
            depth.add_metric([queue], self.sy.queues.depth(queue))
            dead.add_metric([queue], self.sy.state.dead_letters.depth(queue))
            paused.add_metric([queue], int(queue in paused_now))
        yield from (depth, dead, paused)


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
        """Per queue: waiting, active, completed, failed, delayed, paused."""
        return {"queues": sy.queues.snapshot(), "timestamp": now_iso()}

    @routes.get("/metrics/system")
    def system_metrics(request: Request) -> dict[str, Any]:
        """CPU, memory and this process's numbers."""
        return system(request.app.state.started)

    return routes

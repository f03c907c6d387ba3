"""`/metrics` (Prometheus text) and the monitoring API's JSON metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.waiting import wait_for
from tests.web.conftest import ECHO, FLAKY
from tests.web.test_jobs_api import done


def scrape(web) -> dict[str, list]:
    response = web.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def run(web, actor: str, payload: dict) -> str:
    message_id = web.client.post(f"/api/jobs/{actor}", json=payload).json()["message_id"]
    wait_for(lambda: done(web, message_id), what="job finished")
    web.sy.state.buffer.flush()
    return message_id


def value(samples: list, name: str, **labels: str) -> float:
    [sample] = [s for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return float(sample.value)


def test_metrics_count_outcomes_and_time_runs(web, start_worker):
    # given two done jobs and one dead letter
    start_worker(web.sy)
    run(web, ECHO, {"text": "a"})
    run(web, ECHO, {"text": "b"})
    run(web, FLAKY, {"name": "x"})

    # when Prometheus scrapes
    metrics = scrape(web)

    # then the counters, the cumulative histogram and the gauges say so
    jobs = metrics["switchyard_jobs"]
    assert value(jobs, "switchyard_jobs_total", actor=ECHO, outcome="done") == 2
    assert value(jobs, "switchyard_jobs_total", actor=FLAKY, outcome="dead") == 1
    durations = [s for s in metrics["switchyard_job_duration_seconds"]
                 if s.labels["actor"] == ECHO]
    buckets = [s.value for s in durations if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 2
    assert [s.labels["le"] for s in durations if s.name.endswith("_bucket")][-1] == "+Inf"
    assert value(durations, "switchyard_job_duration_seconds_count") == 2
    assert value(metrics["switchyard_dead_letters"], "switchyard_dead_letters",
                 queue=web.queue) == 1
    assert value(metrics["switchyard_queue_depth"], "switchyard_queue_depth",
                 queue=web.queue) == 0


def test_queue_metrics_have_the_seed_shape(web, start_worker):
    start_worker(web.sy)
    run(web, ECHO, {"text": "a"})
    run(web, FLAKY, {"name": "x"})

    body = web.client.get("/metrics/queues").json()

    assert body["timestamp"].endswith("Z")
    [row] = [q for q in body["queues"] if q["name"] == web.queue]
    assert row == {"name": web.queue, "waiting": 0, "active": 0, "completed": 1, "failed": 1,
                   "delayed": 0, "paused": False, "oldest_waiting_age_ms": None}
    assert body["notes"] == []  # the Redis broker tells every number


def test_waiting_jobs_are_counted(web):
    web.client.post(f"/api/jobs/{ECHO}", json={"text": "a"})

    [row] = [q for q in web.client.get("/metrics/queues").json()["queues"]
             if q["name"] == web.queue]

    assert row["waiting"] == 1 and row["delayed"] == 0
    assert 0 <= row["oldest_waiting_age_ms"] < 60_000


def test_system_metrics_have_the_seed_shape(web):
    body = web.client.get("/metrics/system").json()

    assert set(body) == {"cpu", "memory", "process"}
    assert set(body["cpu"]) == {"usage", "count"}
    assert set(body["memory"]) == {"total", "free", "used", "usagePercent"}
    assert set(body["process"]) == {"uptime", "memoryUsage", "pid"}
    assert set(body["process"]["memoryUsage"]) == {"rss", "heapTotal", "heapUsed", "external"}
    assert body["memory"]["used"] + body["memory"]["free"] == body["memory"]["total"]

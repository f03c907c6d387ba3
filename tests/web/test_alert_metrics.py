"""`/metrics`' gauges for the alert rules (deploy/prometheus/): the state store answering,
each queue's live workers and oldest waiting job, and how late the clock is."""

from __future__ import annotations

import datetime

from schedules import SCHEDULES
from switchyard.clock import Clock
from tests.support.services import free_port
from tests.support.waiting import wait_for
from tests.web.conftest import ECHO
from tests.web.test_metrics import scrape, value

UTC = datetime.UTC


def gauge(web, name: str, **labels: str) -> float:
    return value(scrape(web)[name], name, **labels)


def test_the_state_store_is_up_while_it_answers(web):
    assert gauge(web, "switchyard_state_store_up") == 1


def test_the_state_store_is_down_when_it_does_not_answer(make_web, redis_url):
    # given a web process whose state store is at a port nothing listens on
    down = make_web(redis_url=f"redis://127.0.0.1:{free_port()}", broker_url=redis_url,
                    redis_timeout_ms=500)
    # when Prometheus scrapes / then the scrape answers, saying so, and nothing else
    metrics = scrape(down)
    assert value(metrics["switchyard_state_store_up"], "switchyard_state_store_up") == 0
    assert set(metrics) == {"switchyard_state_store_up"}


def test_a_queue_shows_its_live_workers_and_how_long_its_oldest_job_waits(web, start_worker):
    # given a job waiting on a queue nobody consumes
    web.client.post(f"/api/jobs/{ECHO}", json={"text": "a"})
    assert gauge(web, "switchyard_queue_workers", queue=web.queue) == 0
    wait_for(lambda: gauge(web, "switchyard_queue_oldest_waiting_seconds",
                           queue=web.queue) > 0.2, what="the job to wait")
    # when a worker starts / then it counts for the queue, and nothing waits any more
    start_worker(web.sy)
    wait_for(lambda: gauge(web, "switchyard_queue_workers", queue=web.queue) == 1,
             what="the worker's beat")
    wait_for(lambda: gauge(web, "switchyard_queue_oldest_waiting_seconds",
                           queue=web.queue) == 0, what="the job to run")


def test_the_clock_metrics_say_the_last_slot_sent_and_how_late_the_next_is(web):
    # given the stories schedule (every 15 minutes) last sent over an hour ago, and the
    # sessions schedule (daily) sent at its last slot
    stories = next(s for s in SCHEDULES if s.name == "cleanup_stories")
    sessions = next(s for s in SCHEDULES if s.name == "cleanup_sessions")
    now = datetime.datetime.now(UTC)
    old = now.replace(minute=0, second=0, microsecond=0) - datetime.timedelta(hours=1)
    today = now.replace(hour=3, minute=10, second=0, microsecond=0)
    last_sessions = today if today <= now else today - datetime.timedelta(days=1)
    clock = Clock(web.sy, SCHEDULES)
    clock.advance(stories, old)
    clock.advance(sessions, last_sessions)
    # when Prometheus scrapes
    metrics = scrape(web)
    # then the stories' next slot (15 minutes after the last) is as late as it is
    late = metrics["switchyard_clock_late_seconds"]
    due = old + datetime.timedelta(minutes=15)
    assert abs(value(late, "switchyard_clock_late_seconds", schedule="cleanup_stories")
               - (now - due).total_seconds()) < 60
    assert value(late, "switchyard_clock_late_seconds", schedule="cleanup_sessions") == 0
    assert value(metrics["switchyard_clock_last_slot_timestamp_seconds"],
                 "switchyard_clock_last_slot_timestamp_seconds",
                 schedule="cleanup_stories") == old.timestamp()
    # and a schedule never sent has no line
    assert {s.labels["schedule"] for s in late} == {"cleanup_stories", "cleanup_sessions"}

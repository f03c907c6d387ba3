"""The bridge carries an AMQP `priority` (seeds 003 and 004 set one) into the job's
priority, as far as the job broker honours one."""

from __future__ import annotations

from types import SimpleNamespace

from switchyard.ingress.bridge import carried_priority


def app_on(settings):
    return SimpleNamespace(settings=settings)


def test_a_delivery_priority_becomes_the_jobs_on_redis(make_settings):
    app = app_on(make_settings(broker_url=None))
    assert [carried_priority(app, p) for p in (None, 0, 1, 5, 9, 10, 255)] == [
        0, 0, 1, 5, 9, 9, 9]


def test_on_rabbitmq_it_needs_rabbitmq_max_priority(make_settings):
    amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2F"
    without = app_on(make_settings(broker_url=amqp_url))
    assert carried_priority(without, 5) == 0  # ignored, as RabbitMQ itself would
    with_levels = app_on(make_settings(broker_url=amqp_url, rabbitmq_max_priority=9))
    assert carried_priority(with_levels, 5) == 5

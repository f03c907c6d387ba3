"""The settings and declarations of docs/deployment.md, without a cluster: what is
refused at start, what a quorum queue is declared with, and an enqueue that no replica
confirmed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from switchyard.base.settings import SettingsError, load
from switchyard.brokers.rabbitmq_broker import RabbitmqJobBroker
from switchyard.brokers.rabbitmq_queues import dead_letter_arguments, queue_arguments
from switchyard.brokers.redis_broker import NotReplicated
from tests.support.jobs import send


def refusal(capsys: pytest.CaptureFixture[str], **settings: Any) -> str:
    with pytest.raises(SettingsError):
        load(_env_file=None, switchyard_env="test", **settings)
    return capsys.readouterr().err.strip()


def test_sentinels_without_redis_url_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert refusal(capsys, redis_sentinels="127.0.0.1:26379") == (
        "switchyard: REDIS_SENTINELS needs REDIS_URL (its scheme, password, database)")


def test_a_malformed_sentinel_list_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    error = refusal(capsys, redis_url="redis://127.0.0.1/0", redis_sentinels="host-without-port")
    assert error.startswith("switchyard: setting REDIS_SENTINELS is invalid")


def test_a_missing_ca_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    assert refusal(capsys, redis_tls_ca_file=str(missing)) == (
        f"switchyard: REDIS_TLS_CA_FILE {missing} is not a file")


def test_an_enqueue_wait_longer_than_the_redis_timeout_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert refusal(capsys, redis_enqueue_replicas=1, redis_enqueue_wait_ms=3_000) == (
        "switchyard: REDIS_ENQUEUE_WAIT_MS must be below REDIS_TIMEOUT_MS")


def test_the_sentinel_list_is_read_as_host_port_pairs() -> None:
    settings = load(_env_file=None, switchyard_env="test", redis_url="redis://x/0",
                    redis_sentinels=" 10.0.0.1:26379, sentinel-b:26380")
    assert settings.sentinel_addresses == [("10.0.0.1", 26379), ("sentinel-b", 26380)]


def test_classic_queues_keep_their_plain_declarations() -> None:
    dead_lettering = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q.XQ"}
    assert queue_arguments("classic", 20, **dead_lettering) == dead_lettering
    assert dead_letter_arguments("classic", "media.dead") == {}


def test_a_quorum_queue_gets_its_type_limit_and_safe_dead_lettering_but_no_priority() -> None:
    arguments = queue_arguments("quorum", 7, **{
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q.XQ",
        "x-max-priority": 5})
    assert arguments == {
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q.XQ",
        "x-queue-type": "quorum", "x-delivery-limit": 7,
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    # a queue that dead-letters nowhere (an .XQ, a .dead) has no limit to dead-letter at
    assert queue_arguments("quorum", 7, **{"x-message-ttl": 1}) == {
        "x-message-ttl": 1, "x-queue-type": "quorum"}


def test_a_quorum_broker_refuses_priorities() -> None:
    with pytest.raises(ValueError, match="quorum queues take no x-max-priority"):
        RabbitmqJobBroker(url="amqp://127.0.0.1:1/%2F", middleware=[], queue_type="quorum",
                          max_priority=5)


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_an_enqueue_no_replica_confirmed_fails(build_switchyard: Callable[..., Any],
                                               queue: str) -> None:
    # given a Redis with no replica and an enqueue that waits for one
    sy = build_switchyard(redis_enqueue_replicas=1, redis_enqueue_wait_ms=50)

    # when a job is sent, then the producer is told it is not durable
    with pytest.raises(NotReplicated, match="0 of 1 replicas confirmed the enqueue within 50 ms"):
        send(sy, queue, "record")

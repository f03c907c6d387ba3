"""The bridge's routing table and id rule (`switchyard.ingress.routes`) over the real families."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import actors
from switchyard.ingress import routes as ingress
from switchyard.runtime.jobs import jobs_of

SEED_003_KEYS = ["media.image", "media.video", "media.audio", "notification.push",
                 "notification.email", "notification.sms", "cleanup.stories",
                 "cleanup.sessions", "cleanup.messages", "cleanup.temp_files",
                 "cleanup.prekeys", "cleanup.orphaned_media"]


def app_with(*families: Any) -> Any:
    """What `route` reads of an app: its declared jobs."""
    return SimpleNamespace(jobs={j.name: j for f in families for j in jobs_of(f)})


@pytest.mark.parametrize("routing_key", SEED_003_KEYS)
def test_every_seed_003_routing_key_has_its_actor(routing_key: str) -> None:
    route, declared = ingress.route(app_with(*actors.families()), routing_key,
                                    "switchyard.ingress.x")
    assert declared, routing_key
    job = app_with(*actors.families()).jobs[route.actor]
    assert job.queue_name == routing_key.split(".")[0] == route.queue
    assert routing_key.split(".")[1] in ingress.literals(job.model.model_fields["type"].annotation)


def test_a_family_not_registered_yet_is_no_actor_yet_under_its_intended_name() -> None:
    app = app_with(*actors.families(["notifications"]))
    route, declared = ingress.route(app, "media.image", "q")
    assert (route, declared) == (ingress.Route("process_image", "media"), False)


def test_a_type_no_table_names_is_found_by_the_payload_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(ingress.ROUTES, "cleanup.prekeys")
    route, declared = ingress.route(app_with(*actors.families()), "cleanup.prekeys", "q")
    assert declared and route.actor == "cleanup_prekeys"


def test_unknown_keys_and_undeclared_seed_004_queues_have_stand_ins() -> None:
    app = app_with(*actors.families())
    assert ingress.route(app, "notification.fax", "q") == (
        ingress.Route("ingress:notification.fax", "notification"), False)
    assert ingress.route(app_with(*actors.families(["notifications"])), "",
                         ingress.GUILD_EVENTS) == (
        ingress.Route(f"ingress:{ingress.GUILD_EVENTS}", ingress.DISCORD_QUEUE), False)


@pytest.mark.parametrize(("queue", "actor", "job_queue"), [
    (ingress.INTERACTIONS, "discord_interaction", "discord-interactions"),
    (ingress.GUILD_EVENTS, "discord_guild_event", "discord-events"),
])
def test_seed_004s_queues_go_to_the_discord_jobs(queue: str, actor: str, job_queue: str) -> None:
    app = app_with(*actors.families())
    assert ingress.route(app, queue, queue) == (ingress.Route(actor, job_queue), True)
    assert app.jobs[actor].queue_name == job_queue


@pytest.mark.parametrize(("message_id", "body", "key"), [
    ("amqp-1", {"messageId": "m-1"}, "amqp-1"),
    (None, {"messageId": "m-1", "userId": "u"}, "m-1"),
    (None, {"eventId": "e-1", "id": "x"}, "e-1"),
    (None, {"id": 12345}, "12345"),
    (None, {"type": "push", "userId": "u"}, None),
    (None, ["not", "an", "object"], None),
    ("", {"messageId": ""}, None),
])
def test_the_id_rule(message_id: str | None, body: Any, key: str | None) -> None:
    assert ingress.idempotency_key(message_id, body) == key


def test_a_long_id_is_hashed_to_fit() -> None:
    key = ingress.idempotency_key("x" * 500, None)
    assert key is not None and len(key) == 64

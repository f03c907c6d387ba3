"""Seed 004 through `switchyard bridge`: its gateway publishes interactions and guild events
to `arrakis.interactions` and `arrakis.events.guild` (a real RabbitMQ, queues declared as
its producer declares them), a bridge process turns them into jobs, and the shared
`world`'s worker answers them against the loopback Discord."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pika
import pytest

from switchyard.base.keys import JobKey
from switchyard.ingress import routes as ingress
from tests.actors.conftest import DISCORD_APPLICATION, World, world  # noqa: F401
from tests.actors.test_discord import (
    Guild,
    answer,
    callbacks,
    dms,
    event_body,
    interaction_body,
    new_guild,
)
from tests.fakes.discord import DiscordFake, Interaction, snowflake
from tests.support.waiting import wait_for
from tests.switchyard.ingress.test_bridge import (  # noqa: F401  (the bridge fixtures)
    Bridges,
    amqp_url,
    bridges,
    publisher,
)

pytestmark = pytest.mark.parametrize("world", ["sqlite"], indirect=True)


def publish(url: str, queue: str, body: dict[str, Any], *, message_id: str | None = None,
            priority: int | None = None) -> None:
    """As seed 004's gateway does: persistent JSON on the default exchange."""
    with publisher(url) as channel:
        channel.basic_publish("", queue, json.dumps(body).encode(), pika.BasicProperties(
            delivery_mode=2, content_type="application/json", message_id=message_id,
            priority=priority), mandatory=True)


def interact(url: str, body: dict[str, Any]) -> None:
    publish(url, ingress.INTERACTIONS, body, priority=5)


def job_of(world: World, actor: str, key: str) -> dict[str, Any]:  # noqa: F811
    """The finished job the bridge made for the body with id `key` (and its `id`)."""
    job_id = wait_for(lambda: world.sy.state.keys.holder(JobKey(actor, key)), timeout=30,
                      what=f"the {actor} job")
    return {**world.finished(job_id), "id": job_id}


def answered(world: World, made: Interaction) -> str:  # noqa: F811
    return wait_for(lambda: answer(world.discord, made), timeout=30, what="the answer")


def test_an_interaction_is_deferred_then_answered(world: World, bridges: Bridges,  # noqa: F811
                                                  amqp_url: str) -> None:  # noqa: F811
    guild = new_guild(world)
    made = world.discord.new_interaction(DISCORD_APPLICATION)
    interact(amqp_url, interaction_body(made, guild, "status"))
    assert answered(world, made).startswith("Ann")
    callback = next(r for r in world.discord.requests if f"/interactions/{made.id}/" in r.path)
    edit = next(r for r in world.discord.requests
                if r.method == "PATCH" and made.token in r.path)
    assert callback.at <= edit.at and callbacks(world.discord, made) == 1


def test_an_interaction_three_seconds_old_is_not_deferred_and_dead_lettered(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    guild = new_guild(world)
    made = world.discord.new_interaction(DISCORD_APPLICATION, age=3.0)
    body = interaction_body(made, guild, "status")
    interact(amqp_url, body)
    job = job_of(world, "discord_interaction", body["eventId"])
    assert job["status"] == "failed" and job["error"]["code"] == "deadline_missed"
    letter = world.sy.state.dead_letters.show(job["id"])
    assert letter is not None and letter["reason"]["message"].startswith("deadline missed")
    assert callbacks(world.discord, made) == 0


def test_a_button_continues_the_verification_flow_to_the_role(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    guild = new_guild(world)
    started = world.discord.new_interaction(DISCORD_APPLICATION)
    interact(amqp_url, interaction_body(started, guild, "verify", "start"))
    code = answered(world, started).split("your code is ")[1][:6]
    checked = world.discord.new_interaction(DISCORD_APPLICATION)
    body = {**interaction_body(checked, guild, "verify", "answer"),
            "eventType": "interaction.modal", "commandName": None, "customId": "verify:answer",
            "data": {"code": code}}
    interact(amqp_url, body)
    assert "Step 2 of 3" in answered(world, checked)
    confirmed = world.discord.new_interaction(DISCORD_APPLICATION)
    body = {**interaction_body(confirmed, guild, "verify"), "eventType": "interaction.button",
            "commandName": None, "customId": "verify:confirm", "componentType": 2, "data": {}}
    interact(amqp_url, body)
    assert "you are verified" in answered(world, confirmed)
    assert guild.verified in world.discord.roles_of(guild.id, guild.user)


def test_a_rate_limited_answer_waits_without_spending_an_attempt(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    guild = new_guild(world)
    made = world.discord.new_interaction(DISCORD_APPLICATION)
    world.discord.script(DiscordFake.rate_limited(0.4, bucket=f"b{made.id}"), method="PATCH",
                         path=made.token)
    body = interaction_body(made, guild, "status")
    interact(amqp_url, body)
    job = job_of(world, "discord_interaction", body["eventId"])
    assert job["status"] == "done" and job["retries"] == 0 and job["deferred_ms"] >= 400
    assert callbacks(world.discord, made) == 1 and answer(world.discord, made)


@pytest.mark.parametrize(("kind", "data", "result"), [
    ("guild.create", {"name": "Acme"}, {"registered": False}),
    ("member.join", {}, {"welcomed": True, "roleGiven": True}),
    ("member.update", {"pending": False, "roles": []}, {"roleGiven": True}),
    ("member.leave", {}, {"sessionsDropped": 0}),
    ("guild.delete", {}, {"removed": True}),
])
def test_every_guild_event_type_runs_its_handler(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
    kind: str, data: dict[str, Any], result: dict[str, Any],
) -> None:
    guild = new_guild(world)
    body = event_body(kind, guild, **data)
    publish(amqp_url, ingress.GUILD_EVENTS, body)
    job = job_of(world, "discord_guild_event", body["eventId"])
    assert job["status"] == "done" and job["result"] == {"type": kind, **result}, job


def test_the_same_event_id_twice_changes_state_once(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    # given a member.join delivered twice under two AMQP message ids (a gateway retry)
    guild = new_guild(world)
    body = event_body("member.join", guild)
    publish(amqp_url, ingress.GUILD_EVENTS, body, message_id="first-" + body["eventId"])
    publish(amqp_url, ingress.GUILD_EVENTS, body, message_id="second-" + body["eventId"])
    jobs = [job_of(world, "discord_guild_event", f"{which}-{body['eventId']}")
            for which in ("first", "second")]
    # then both jobs ran, one of them as a duplicate: one welcome, one role
    assert sorted(bool(j["result"].get("duplicate")) for j in jobs) == [False, True]
    assert dms(world.discord, guild.user) == ["Welcome!"]
    assert [e for e in world.discord.audit_log if e["guild_id"] == guild.id] != []
    assert len([e for e in world.discord.audit_log if e["guild_id"] == guild.id]) == 1


def test_an_unknown_event_type_is_dead_lettered_with_its_reason(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    body = event_body("guild.explode", Guild("1", "2", "3", "4", "5"))
    publish(amqp_url, ingress.GUILD_EVENTS, body)

    def letter() -> dict[str, Any] | None:
        return next((r for r in world.sy.state.dead_letters.list("discord-events", limit=1000)
                     if r["message"]["kwargs"].get("eventId") == body["eventId"]), None)
    found = wait_for(letter, timeout=30, what="the dead letter")
    assert found["reason"]["code"] == "invalid" and "eventType" in found["reason"]["message"]


def test_an_interaction_is_not_kept_waiting_behind_a_backlog_of_guild_events(
    world: World, bridges: Bridges, amqp_url: str,  # noqa: F811
) -> None:
    # given 1,200 guild events queued before an interaction, while no bridge runs (and the
    # events' queue paused, so that every event keeps its `queued` record)
    bridges.stop_all()
    world.sy.state.paused.pause("discord-events")
    try:
        nowhere = Guild(*(snowflake() for _ in range(5)))  # unregistered: cheap to run
        events = [event_body("guild.delete", nowhere) for _ in range(1_200)]
        with publisher(amqp_url) as channel:
            for body in events:
                channel.basic_publish("", ingress.GUILD_EVENTS, json.dumps(body).encode(),
                                      pika.BasicProperties(delivery_mode=2), mandatory=True)
        made = world.discord.new_interaction(DISCORD_APPLICATION)
        interact(amqp_url, interaction_body(made, new_guild(world), "status"))
        # when a bridge that may take all the events at once starts
        bridges.start(BRIDGE_PREFETCH="2000")
        # then the interaction is enqueued before most of the events, not after them all
        first = job_of(world, "discord_interaction", f"evt-{made.id}")
        keys = [JobKey("discord_guild_event", body["eventId"]) for body in events]
        holders = [wait_for(partial(world.sy.state.keys.holder, key), timeout=60,
                            what="the event's job") for key in keys]
        world.sy.state.buffer.flush()
        queued = [world.sy.state.history.get(job_id) for job_id in holders]
        assert all(job and "enqueued_at" in job for job in queued)
        ahead = sum(1 for job in queued if job and job["enqueued_at"] < first["enqueued_at"])
        assert ahead <= 250, f"{ahead} events were enqueued before the interaction"
    finally:
        world.sy.state.paused.resume("discord-events")

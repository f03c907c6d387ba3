"""Discord interactions and guild events (seed 004), end to end: a real worker process,
Redis, both databases and the loopback Discord."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from store import discord as guilds
from tests.actors.conftest import DISCORD_APPLICATION, World
from tests.fakes.base import html_error
from tests.fakes.discord import DiscordFake, Interaction, snowflake
from tests.support.processes import ROOT, WorkerProcesses


@dataclass
class Guild:
    """A guild of one test's own: configured in the database and on the fake."""

    id: str
    user: str
    verified: str
    default: str
    self_role: str


def new_guild(world: World, *, welcome: str | None = "Welcome!") -> Guild:
    guild = Guild(*(snowflake() for _ in range(5)))
    for role in (guild.verified, guild.default, guild.self_role):
        world.discord.add_role(guild.id, role)
    world.discord.add_member(guild.id, guild.user, "ann", nick="Ann")
    with world.db.session() as session:
        guilds.register(session, guilds.GuildConfig(
            guild.id, "Acme", welcome, guild.default, guild.verified, (guild.self_role,)))
    return guild


def interaction_body(made: Interaction, guild: Guild, command: str,
                     subcommand: str | None = None, **options: Any) -> dict[str, Any]:
    """Seed 004's payload for a slash command, as its gateway publishes it."""
    body: dict[str, Any] = {
        "eventId": f"evt-{made.id}", "eventType": f"interaction.command.{command}",
        "timestamp": 0, "shardId": 0, "guildId": guild.id, "channelId": made.channel_id,
        "userId": guild.user, "interactionId": made.id, "interactionToken": made.token,
        "commandName": command, "data": {"options": [
            {"name": k, "type": 3, "value": v} for k, v in options.items()]},
    }
    if subcommand is not None:
        body["subcommand"] = subcommand
    return body


def event_body(kind: str, guild: Guild, **data: Any) -> dict[str, Any]:
    return {"eventId": f"evt-{snowflake()}", "eventType": kind, "timestamp": 0, "shardId": 0,
            "guildId": guild.id, "userId": guild.user, "data": data}


def callbacks(fake: DiscordFake, made: Interaction) -> int:
    return fake.count(f"/interactions/{made.id}/", method="POST")


def answer(fake: DiscordFake, made: Interaction) -> str:
    original = fake.interactions[made.id].original
    return "" if original is None else str(original["content"])


def run_command(world: World, guild: Guild, command: str, subcommand: str | None = None,
                **options: Any) -> tuple[dict[str, Any], str]:
    made = world.discord.new_interaction(DISCORD_APPLICATION)
    job = world.run("discord_interaction",
                    interaction_body(made, guild, command, subcommand, **options))
    return job, answer(world.discord, made)


def dms(fake: DiscordFake, user: str) -> list[str]:
    channel = fake.dm_channels.get(user)
    return [m["content"] for m in fake.messages if channel and m["channel_id"] == channel]


def test_an_interaction_is_deferred_then_answered(world: World) -> None:
    guild = new_guild(world)
    made = world.discord.new_interaction(DISCORD_APPLICATION)
    job = world.run("discord_interaction", interaction_body(made, guild, "status"))
    assert job["status"] == "done", job
    assert job["result"]["outcome"] == "profile"
    assert callbacks(world.discord, made) == 1
    assert answer(world.discord, made).startswith("Ann")


def test_an_interaction_three_seconds_old_is_dead_lettered_undeferred(world: World) -> None:
    guild = new_guild(world)
    made = world.discord.new_interaction(DISCORD_APPLICATION, age=3.0)
    message = world.send("discord_interaction", interaction_body(made, guild, "status"))
    job = world.finished(message.message_id)
    assert job["status"] == "failed" and job["runs"] == 1
    letter = world.sy.state.dead_letters.show(message.message_id)
    assert letter is not None and letter["reason"]["code"] == "deadline_missed"
    assert letter["reason"]["message"].startswith("deadline missed")
    assert callbacks(world.discord, made) == 0


def test_the_verification_flow_across_interactions_gives_the_verified_role(
    world: World,
) -> None:
    guild = new_guild(world)
    job, started = run_command(world, guild, "verify", "start")
    assert job["result"]["outcome"] == "started", job
    code = started.split("your code is ")[1][:6]
    job, _ = run_command(world, guild, "verify", "answer", code=code)
    assert job["result"]["outcome"] == "answered", job
    job, done = run_command(world, guild, "verify", "confirm")
    assert job["result"]["outcome"] == "verified" and "you are verified" in done
    assert guild.verified in world.discord.roles_of(guild.id, guild.user)


def test_a_cooldown_refuses_a_second_command_in_its_window(world: World) -> None:
    guild = new_guild(world)
    first, second = (world.discord.new_interaction(DISCORD_APPLICATION) for _ in range(2))
    messages = [world.send("discord_interaction", interaction_body(made, guild, "status"))
                for made in (first, second)]
    outcomes = sorted(world.finished(m.message_id)["result"]["outcome"] for m in messages)
    assert outcomes == ["profile", "refused"]
    assert sorted("cooling down" in answer(world.discord, m) for m in (first, second)) == [
        False, True]


def test_a_role_from_the_list_is_self_assigned(world: World) -> None:
    guild = new_guild(world)
    job, _ = run_command(world, guild, "role", "add", role=guild.self_role)
    assert job["result"]["outcome"] == "added"
    assert guild.self_role in world.discord.roles_of(guild.id, guild.user)


def test_a_member_join_welcomes_and_gives_the_default_role(world: World) -> None:
    guild = new_guild(world, welcome="Welcome to the Acme server!")
    job = world.run("discord_guild_event", event_body("member.join", guild))
    assert job["status"] == "done" and job["result"]["welcomed"] is True, job
    assert dms(world.discord, guild.user) == ["Welcome to the Acme server!"]
    assert guild.default in world.discord.roles_of(guild.id, guild.user)


def test_the_same_event_id_twice_changes_state_once(world: World) -> None:
    guild = new_guild(world)
    body = event_body("member.join", guild)
    first = world.send("discord_guild_event", body, idempotency_key="one")
    second = world.send("discord_guild_event", body, idempotency_key="two")
    finished = [world.finished(m.message_id) for m in (first, second)]
    assert sorted(bool(j["result"].get("duplicate")) for j in finished) == [False, True]
    assert len(dms(world.discord, guild.user)) == 1


def test_429s_are_waited_out_without_spending_attempts(world: World) -> None:
    guild = new_guild(world, welcome=None)
    world.discord.script(DiscordFake.rate_limited(0.3, bucket=f"b{guild.id}"), method="PUT",
                         path=f"/guilds/{guild.id}/", times=2)
    job = world.run("discord_guild_event", event_body("member.join", guild))
    assert job["status"] == "done", job
    assert job["retries"] == 0 and job["deferred_ms"] >= 600
    assert world.discord.count(f"/guilds/{guild.id}/members/{guild.user}/roles/",
                               method="PUT") == 3
    assert guild.default in world.discord.roles_of(guild.id, guild.user)


def test_a_transient_failure_is_retried_and_the_event_still_runs_once(world: World) -> None:
    guild = new_guild(world)
    world.discord.script(html_error(502), method="PUT", path=f"/guilds/{guild.id}/")
    job = world.run("discord_guild_event", event_body("member.join", guild))
    assert job["status"] == "done" and job["retries"] == 1, job
    assert dms(world.discord, guild.user) == ["Welcome!"]
    assert guild.default in world.discord.roles_of(guild.id, guild.user)


def test_a_permanent_failure_is_dead_lettered_with_discords_code(world: World) -> None:
    guild = new_guild(world, welcome=None)
    world.discord.guilds[guild.id].roles[guild.default].above_bot = True  # 50013
    message = world.send("discord_guild_event", event_body("member.join", guild))
    job = world.finished(message.message_id)
    assert job["status"] == "failed" and job["runs"] == 1
    letter = world.sy.state.dead_letters.show(message.message_id)
    assert letter is not None and letter["reason"]["code"] == 50013


def test_guilds_are_registered_and_removed_by_their_events(world: World) -> None:
    guild = Guild(*(snowflake() for _ in range(5)))
    job = world.run("discord_guild_event", {**event_body("guild.create", guild),
                                            "data": {"name": "Fresh"}})
    assert job["result"]["registered"] is True
    with world.db.session() as session:
        assert guilds.guild(session, guild.id) == guilds.GuildConfig(guild.id, "Fresh")
    assert world.run("discord_guild_event", event_body("guild.delete", guild))["result"][
        "removed"] is True


def test_an_invalid_payload_is_dead_lettered_with_the_field(world: World) -> None:
    message = world.send("discord_guild_event", {"eventId": "e", "eventType": "guild.explode",
                                                 "guildId": "1"})
    job = world.finished(message.message_id)
    assert job["status"] == "failed" and "eventType" in job["error"]["message"]


@pytest.mark.e2e  # a product worker process driven by CLI processes
def test_switchyard_send_runs_each_job_type_against_the_outbox(
    test_env: dict[str, str], tmp_path: Any,
) -> None:
    # given a development worker: Discord calls go to var/outbox/discord
    from store.migrate import upgrade

    database_url = f"sqlite:///{tmp_path}/dev.db"
    upgrade(database_url)
    env = {**test_env, "DATABASE_URL": database_url, "DISCORD_APPLICATION_ID": "1",
           "VAR_DIR": str(tmp_path / "var")}
    workers = WorkerProcesses(env, module="tests.support.product_worker")
    workers.start()
    try:
        guild = Guild(*(snowflake() for _ in range(5)))
        made = Interaction(snowflake(), "dev-token", "1", "0", 0.0)
        payloads = [("discord_guild_event", event_body("guild.create", guild)),
                    ("discord_guild_event", event_body("member.join", guild)),
                    ("discord_interaction", interaction_body(made, guild, "status"))]
        for actor, payload in payloads:
            # when each is sent from the command line and waited for
            done = subprocess.run(
                [sys.executable, "-m", "switchyard.cli", "send", actor, json.dumps(payload),
                 "--wait", "--timeout", "30"], cwd=ROOT, capture_output=True, text=True,
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, timeout=90)
            # then it is done
            assert done.returncode == 0, (actor, done.stdout, done.stderr)
        calls = [json.loads(p.read_text())["call"]
                 for p in (tmp_path / "var" / "outbox" / "discord").glob("*.json")]
        assert sorted(calls) == ["defer", "edit_original", "get_member"]
    finally:
        workers.stop_all()

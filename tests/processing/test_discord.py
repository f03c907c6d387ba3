"""Discord interactions and guild events (seed 004), in process: the real client against
the loopback Discord, the real Redis state, SQLite (and PostgreSQL for the guild store)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from integrations.discord import Discord
from processing.discord import events, interactions
from processing.discord.commands import verify
from processing.discord.services import Event, Interaction, Services
from state.discord import Limits, StateManager
from store import discord as guilds
from store.db import Database
from switchyard.base.errors import PermanentError, RateLimited, RetryableError
from tests.fakes.base import html_error
from tests.fakes.discord import DiscordFake, snowflake
from tests.support.waiting import wait_for

APP = "1100000000000000001"
GUILD, USER, OTHER = "2200000000000000001", "3300000000000000001", "3300000000000000002"
VERIFIED, DEFAULT, PING_ROLE, STAFF = ("4400000000000000001", "4400000000000000002",
                                       "4400000000000000003", "4400000000000000004")
LIMITS = Limits(session_ttl_ms=60_000, cooldown_ms=5_000, rate_limit=20,
                rate_window_ms=60_000, event_ttl_ms=60_000)


@pytest.fixture(scope="module")
def fake() -> Iterator[DiscordFake]:
    with DiscordFake(bucket_limit=1_000) as server:
        for role in (VERIFIED, DEFAULT, PING_ROLE, STAFF):
            server.add_role(GUILD, role)
        server.add_member(GUILD, USER, "ann", nick="Ann")
        server.add_member(GUILD, OTHER, "bob", accepts_dms=False)
        yield server


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    from store.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('discord')}/switchyard.db"
    upgrade(url)
    database = Database(url)
    with database.session() as session:
        guilds.register(session, guilds.GuildConfig(
            GUILD, "Acme", "Welcome to Acme!", DEFAULT, VERIFIED, (PING_ROLE,)))
    yield database
    database.dispose()


@pytest.fixture
def discord(fake: DiscordFake) -> Iterator[Discord]:
    client = Discord(fake.token, base_url=fake.api_url)
    yield client
    client.close()


def make_services(state: redis.Redis, prefix: str, discord: Discord, db: Database,
                  **limits: Any) -> Services:
    manager = StateManager(state, prefix=prefix, limits=dataclasses.replace(LIMITS, **limits))
    return Services(discord, manager, db, application_id=APP)


@pytest.fixture
def services(state: redis.Redis, prefix: str, discord: Discord, db: Database) -> Services:
    return make_services(state, prefix, discord, db)


def new(fake: DiscordFake, command: str, *, user: str = USER, subcommand: str | None = None,
        age: float = 0.0, **options: Any) -> Interaction:
    made = fake.new_interaction(APP, age=age)
    return Interaction(f"evt-{made.id}", made.id, made.token, GUILD, user, command,
                       subcommand, options)


def callbacks(fake: DiscordFake, interaction: Interaction) -> list[Any]:
    return [r for r in fake.requests
            if r.path.endswith(f"/interactions/{interaction.interaction_id}/"
                               f"{interaction.token}/callback")]


def answer_of(fake: DiscordFake, interaction: Interaction) -> str:
    original = fake.interactions[interaction.interaction_id].original
    assert original is not None, "not deferred"
    return str(original["content"])


# Interactions --------------------------------------------------------------------------

def test_the_snowflake_gives_the_interaction_creation_time() -> None:
    at = 1_764_000_000_123
    assert interactions.created_ms(snowflake(at)) == at


def test_an_interaction_is_deferred_first_then_answered_by_editing_the_original(
    services: Services, fake: DiscordFake,
) -> None:
    interaction = new(fake, "status")
    result = interactions.handle(services, interaction)
    assert result["outcome"] == "profile"
    [callback] = callbacks(fake, interaction)
    assert callback.json() == {"type": 5}  # public: /status is shown to the channel
    edit = next(r for r in fake.requests if r.method == "PATCH"
                and interaction.token in r.path)
    assert callback.at <= edit.at
    assert "Ann" in answer_of(fake, interaction) and "Verified: no" in answer_of(
        fake, interaction)


def test_an_interaction_already_three_seconds_old_is_not_deferred(
    services: Services, fake: DiscordFake,
) -> None:
    interaction = new(fake, "status", age=3.0)
    with pytest.raises(PermanentError) as caught:
        interactions.handle(services, interaction)
    assert caught.value.code == "deadline_missed"
    assert caught.value.message.startswith("deadline missed")
    assert callbacks(fake, interaction) == []


def test_the_margin_refuses_what_discord_would_refuse_in_transit(
    state: redis.Redis, prefix: str, discord: Discord, db: Database, fake: DiscordFake,
) -> None:
    services = dataclasses.replace(make_services(state, prefix, discord, db),
                                   defer_margin_ms=1_000)
    interaction = new(fake, "status", age=2.2)  # 0.8 s left: under the margin
    with pytest.raises(PermanentError, match="deadline missed"):
        interactions.handle(services, interaction)
    assert callbacks(fake, interaction) == []


def test_a_retry_neither_defers_again_nor_meets_the_deadline(
    services: Services, fake: DiscordFake,
) -> None:
    # given an interaction deferred in time whose answer failed (Discord's 502)
    interaction = new(fake, "status")
    fake.script(html_error(502), method="PATCH", path=interaction.token)
    with pytest.raises(RetryableError):
        interactions.handle(services, interaction)
    # when the retry comes after the 3 s window
    late = dataclasses.replace(services, clock=lambda: int(time.time() * 1000) + 5_000)
    interactions.handle(late, interaction)
    # then it answered without a second defer
    assert len(callbacks(fake, interaction)) == 1
    assert "Ann" in answer_of(fake, interaction)


def test_an_interaction_past_its_token_life_is_given_up(
    services: Services, fake: DiscordFake,
) -> None:
    interaction = new(fake, "status")
    services.state.mark_deferred(interaction.interaction_id, interactions.ALLOWED)
    late = dataclasses.replace(services, clock=lambda: int(time.time() * 1000) + 15 * 60_000)
    with pytest.raises(PermanentError) as caught:
        interactions.handle(late, interaction)
    assert caught.value.code == "token_expired"


def test_an_already_acknowledged_interaction_counts_as_deferred(
    services: Services, fake: DiscordFake,
) -> None:
    interaction = new(fake, "status")
    fake.interactions[interaction.interaction_id].acknowledged = True
    fake.interactions[interaction.interaction_id].original = {"content": "", "flags": 128}
    assert interactions.handle(services, interaction)["outcome"] == "profile"


def test_an_unknown_interaction_at_the_defer_is_final(
    services: Services, fake: DiscordFake,
) -> None:
    interaction = dataclasses.replace(new(fake, "status"), token="not-its-token")
    with pytest.raises(PermanentError) as caught:
        interactions.handle(services, interaction)
    assert caught.value.code == 10062


def test_an_unknown_command_gets_a_private_answer(services: Services, fake: DiscordFake) -> None:
    interaction = new(fake, "launch-rockets")
    assert interactions.handle(services, interaction)["outcome"] == "unknown_command"
    assert callbacks(fake, interaction)[0].json() == {"type": 5, "data": {"flags": 64}}
    assert "I do not know the command /launch-rockets" in answer_of(fake, interaction)


def test_a_cooldown_refuses_the_same_command_in_its_window(
    services: Services, fake: DiscordFake,
) -> None:
    first, second = new(fake, "status"), new(fake, "status")
    assert interactions.handle(services, first)["outcome"] == "profile"
    assert interactions.handle(services, second)["outcome"] == "refused"
    assert "cooling down" in answer_of(fake, second)
    # another user, or another command, is not held back
    assert interactions.handle(services, new(fake, "status", user=OTHER))["outcome"] == "profile"
    assert interactions.handle(services, new(fake, "role"))["outcome"] == "listed"


def test_the_sliding_window_refuses_past_the_rate_limit(
    state: redis.Redis, prefix: str, discord: Discord, db: Database, fake: DiscordFake,
) -> None:
    services = make_services(state, prefix, discord, db, rate_limit=2, cooldown_ms=0)
    outcomes = [interactions.handle(services, new(fake, "role"))["outcome"] for _ in range(3)]
    assert outcomes == ["listed", "listed", "refused"]


# Verification ----------------------------------------------------------------------------

def code_in(text: str) -> str:
    return text.split("your code is ")[1][:verify.CODE_LENGTH]


def step(services: Services, fake: DiscordFake, subcommand: str, **options: Any) -> str:
    interaction = new(fake, "verify", subcommand=subcommand, **options)
    interactions.handle(services, interaction)
    return answer_of(fake, interaction)


def test_the_verification_flow_ends_with_the_verified_role(
    services: Services, fake: DiscordFake,
) -> None:
    fake.guilds[GUILD].members[USER].roles = []
    code = code_in(step(services, fake, "start"))
    assert "Step 2 of 3" in step(services, fake, "answer", code=code.lower())
    assert VERIFIED not in fake.roles_of(GUILD, USER)
    assert "you are verified" in step(services, fake, "confirm")
    assert VERIFIED in fake.roles_of(GUILD, USER)
    assert fake.audit_log[-1]["reason"] == "verification completed"


def test_confirm_before_the_code_gives_no_role(services: Services, fake: DiscordFake) -> None:
    fake.guilds[GUILD].members[USER].roles = []
    step(services, fake, "start")
    assert "Type your code back first" in step(services, fake, "confirm")
    assert VERIFIED not in fake.roles_of(GUILD, USER)


def test_three_wrong_codes_end_the_flow(
    state: redis.Redis, prefix: str, discord: Discord, db: Database, fake: DiscordFake,
) -> None:
    services = make_services(state, prefix, discord, db, cooldown_ms=0)
    step(services, fake, "start")
    answers = [step(services, fake, "answer", code="WRONG1") for _ in range(3)]
    assert "Try again" in answers[0] and "too many times" in answers[2]
    assert services.state.session(verify.SESSION, GUILD, USER) is None


def test_a_session_expires_after_its_ttl(
    state: redis.Redis, prefix: str, discord: Discord, db: Database, fake: DiscordFake,
) -> None:
    services = make_services(state, prefix, discord, db, session_ttl_ms=1_000)
    code = code_in(step(services, fake, "start"))
    assert 0 < state.pttl(f"{prefix}:discord:sess:verify:{GUILD}:{USER}") <= 1_000
    wait_for(lambda: services.state.session(verify.SESSION, GUILD, USER) is None,
             timeout=5, what="the session to expire")
    assert "No verification is in progress" in step(services, fake, "answer", code=code)


# Roles -------------------------------------------------------------------------------------

def test_a_member_gives_themselves_a_listed_role_and_takes_it_back(
    services: Services, fake: DiscordFake,
) -> None:
    step_role = new(fake, "role", subcommand="add", role=PING_ROLE)
    assert interactions.handle(services, step_role)["outcome"] == "added"
    assert PING_ROLE in fake.roles_of(GUILD, USER)
    remove = new(fake, "role", subcommand="remove", role=PING_ROLE)
    assert interactions.handle(services, remove)["outcome"] == "removed"
    assert PING_ROLE not in fake.roles_of(GUILD, USER)


def test_a_role_not_on_the_list_is_refused(services: Services, fake: DiscordFake) -> None:
    interaction = new(fake, "role", subcommand="add", role=STAFF)
    assert interactions.handle(services, interaction)["outcome"] == "not_allowed"
    assert STAFF not in fake.roles_of(GUILD, USER)


def test_a_final_discord_refusal_is_told_to_the_user_then_raised(
    services: Services, fake: DiscordFake,
) -> None:
    fake.script(DiscordFake.error(403, 50013, "Missing Permissions"), method="PUT")
    interaction = new(fake, "role", subcommand="add", role=PING_ROLE)
    with pytest.raises(PermanentError) as caught:
        interactions.handle(services, interaction)
    assert caught.value.code == 50013
    assert "error 50013" in answer_of(fake, interaction)


def test_a_429_is_raised_with_discords_wait(services: Services, fake: DiscordFake) -> None:
    fake.script(DiscordFake.rate_limited(0.75, bucket="roles-429"), method="PUT")
    interaction = new(fake, "role", subcommand="add", role=PING_ROLE)
    with pytest.raises(RateLimited) as caught:
        interactions.handle(services, interaction)
    assert caught.value.retry_after == pytest.approx(0.75)


# Guild events --------------------------------------------------------------------------------

def event(kind: str, *, user: str | None = USER, guild: str = GUILD,
          **data: Any) -> Event:
    return Event(f"evt-{snowflake()}", kind, guild, user, data)


def dms_to(fake: DiscordFake, user: str) -> list[dict[str, Any]]:
    channel = fake.dm_channels.get(user)
    return [m for m in fake.messages if channel is not None and m["channel_id"] == channel]


def test_a_member_joining_is_welcomed_and_given_the_default_role(
    services: Services, fake: DiscordFake,
) -> None:
    fake.guilds[GUILD].members[USER].roles = []
    before = len(dms_to(fake, USER))
    result = events.handle(services, event("member.join"))
    assert result == {"type": "member.join", "welcomed": True, "roleGiven": True}
    assert [m["content"] for m in dms_to(fake, USER)[before:]] == ["Welcome to Acme!"]
    assert DEFAULT in fake.roles_of(GUILD, USER)


def test_the_same_event_id_twice_changes_state_once(
    services: Services, fake: DiscordFake,
) -> None:
    before = len(dms_to(fake, USER))
    joined = event("member.join")
    events.handle(services, joined)
    assert events.handle(services, joined) == {"type": "member.join", "duplicate": True}
    assert len(dms_to(fake, USER)) == before + 1


def test_a_failed_event_is_retried_and_then_runs_once(
    services: Services, fake: DiscordFake,
) -> None:
    before = len(dms_to(fake, USER))
    joined = event("member.join")
    fake.script(html_error(502), path="/channels/")
    with pytest.raises(RetryableError):
        events.handle(services, joined)
    assert events.handle(services, joined)["welcomed"] is True
    assert len(dms_to(fake, USER)) == before + 1


def test_a_member_with_closed_dms_still_gets_the_role(
    services: Services, fake: DiscordFake,
) -> None:
    fake.guilds[GUILD].members[OTHER].roles = []
    result = events.handle(services, event("member.join", user=OTHER))
    assert result["welcomed"] is False and result["roleGiven"] is True


def test_screening_holds_the_default_role_until_the_member_update(
    services: Services, fake: DiscordFake,
) -> None:
    fake.guilds[GUILD].members[USER].roles = []
    assert events.handle(services, event("member.join", pending=True))["roleGiven"] is False
    assert DEFAULT not in fake.roles_of(GUILD, USER)
    assert events.handle(services, event("member.update", pending=False))["roleGiven"] is True
    assert DEFAULT in fake.roles_of(GUILD, USER)


def test_a_member_leaving_drops_their_state(services: Services, fake: DiscordFake) -> None:
    step(services, fake, "start")
    assert events.handle(services, event("member.leave"))["sessionsDropped"] == 1
    assert services.state.session(verify.SESSION, GUILD, USER) is None


def test_an_event_without_its_user_is_final(services: Services) -> None:
    with pytest.raises(PermanentError, match="needs userId"):
        events.handle(services, event("member.join", user=None))


def test_a_guild_is_registered_on_create_and_removed_on_delete(services: Services) -> None:
    guild = "2200000000000000077"
    created = event("guild.create", guild=guild, user=None, name="New", welcomeMessage="Hi",
                    verifiedRoleId=VERIFIED, selfRoles=[PING_ROLE, "not a snowflake"])
    assert events.handle(services, created)["registered"] is True
    with services.database.session() as session:
        config = guilds.guild(session, guild)
    assert config == guilds.GuildConfig(guild, "New", "Hi", None, VERIFIED, (PING_ROLE,))
    assert events.handle(services, event("guild.delete", guild=guild, user=None))["removed"]
    with services.database.session() as session:
        assert guilds.guild(session, guild) is None


# The guild store, on both engines ------------------------------------------------------------

def test_registering_again_keeps_what_the_guild_configured(database_url: str) -> None:
    database = Database(database_url)
    try:
        with database.session() as session:
            guilds.register(session, guilds.GuildConfig(GUILD, "Acme", "Hello", DEFAULT))
        with database.session() as session:
            config, created = guilds.register(session, guilds.GuildConfig(
                GUILD, "Acme 2", "Other", VERIFIED, VERIFIED, (PING_ROLE,)))
        assert created is False
        assert (config.name, config.welcome_message, config.default_role_id,
                config.verified_role_id, config.self_roles) == (
            "Acme 2", "Hello", DEFAULT, VERIFIED, (PING_ROLE,))
        with database.session() as session:
            assert guilds.remove(session, GUILD) and not guilds.remove(session, GUILD)
    finally:
        database.dispose()


def test_the_outbox_writes_calls_without_the_interaction_token(tmp_path: Path) -> None:
    from integrations.discord_outbox import DiscordOutbox

    outbox = DiscordOutbox(tmp_path)
    outbox.defer_interaction("123", "secret-token", ephemeral=True)
    outbox.edit_original(APP, "secret-token", "hello")
    written = [p.read_text() for p in sorted((tmp_path / "discord").glob("*.json"))]
    assert len(written) == 2 and all("secret-token" not in text for text in written)


def test_the_rate_window_keeps_no_more_entries_than_it_needs(
    state: redis.Redis, prefix: str, discord: Discord, db: Database,
) -> None:
    services = make_services(state, prefix, discord, db, rate_limit=3)
    assert [services.state.over_rate_limit(USER) for _ in range(10)] == [False] * 3 + [True] * 7
    key = f"{prefix}:discord:rl:{USER}"
    assert state.zcard(key) == 4 and 0 < state.pttl(key) <= LIMITS.rate_window_ms


def test_without_an_application_id_nothing_is_deferred(
    services: Services, fake: DiscordFake,
) -> None:
    interaction = new(fake, "status")
    with pytest.raises(PermanentError, match="DISCORD_APPLICATION_ID") as caught:
        interactions.handle(dataclasses.replace(services, application_id=None), interaction)
    assert caught.value.code == "not_configured" and callbacks(fake, interaction) == []

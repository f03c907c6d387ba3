"""Discord interactions and guild events (seed 004), on two queues of their own.

`discord_interaction` runs on `discord-interactions`, which its own worker process
serves alone (Procfile), so an interaction never waits behind guild events or other
families: Discord allows 3 s from the interaction's creation for the first response.
Its retries are short and bounded by the token's 15-minute life. `discord_guild_event`
runs on `discord-events` with the default schedule (5 s, 10 s, 20 s; 3 retries).

Both take seed 004's `DiscordEventPayload` as the gateway publishes it to
`arrakis.interactions` and `arrakis.events.guild`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from processing.discord import events, interactions
from processing.discord.services import Event, Interaction, Services
from state.discord import Limits, StateManager
from switchyard.base.errors import PermanentError
from switchyard.runtime.jobs import Context, Payload, job

INTERACTIONS_QUEUE = "discord-interactions"
EVENTS_QUEUE = "discord-events"
#: Discord ids are 64-bit integers written as decimal strings.
SNOWFLAKE = r"^[0-9]{1,20}$"
INTERACTION_OPTIONS: dict[str, Any] = {
    "queue_name": INTERACTIONS_QUEUE, "max_retries": 4, "min_backoff": 500,
    "max_backoff": 30_000,
    # 429 waits spend no attempt; they stop well inside the token's 15 minutes.
    "max_deferral": 10 * 60_000, "time_limit": 60_000,
}
EVENT_OPTIONS: dict[str, Any] = {"queue_name": EVENTS_QUEUE, "time_limit": 5 * 60_000}
#: The guild events seed 004 names (and the two aliases its worker's types use).
EventType = Literal["member.join", "member.leave", "member.update", "guild.create",
                    "guild.delete", "guild.join", "guild.leave"]
#: Autocomplete wants choices at once (callback type 8), never a deferred reply.
AUTOCOMPLETE = "interaction.autocomplete"
#: Discord's option type for a subcommand, whose own options sit inside it.
SUB_COMMAND = 1


class DiscordPayload(Payload):
    """Seed 004's `DiscordEventPayload`, camelCase on the wire."""

    event_id: str = Field(min_length=1, max_length=128)
    event_type: str = Field(min_length=1, max_length=128)
    timestamp: int | None = None
    shard_id: int | None = None
    guild_id: str | None = Field(None, pattern=SNOWFLAKE)
    channel_id: str | None = Field(None, pattern=SNOWFLAKE)
    user_id: str | None = Field(None, pattern=SNOWFLAKE)
    interaction_id: str | None = Field(None, pattern=SNOWFLAKE)
    interaction_token: str | None = Field(None, min_length=1, max_length=1_000)
    command_name: str | None = Field(None, max_length=32)
    subcommand: str | None = Field(None, max_length=32)
    custom_id: str | None = Field(None, max_length=100)
    component_type: int | None = None
    selected_values: list[str] | None = Field(None, max_length=25)
    data: dict[str, Any] | list[Any] | None = None
    #: Not in the seed: the application whose webhook answers (else the setting).
    application_id: str | None = Field(None, pattern=SNOWFLAKE)


class InteractionPayload(DiscordPayload):
    event_type: str = Field(pattern=r"^interaction\.[a-z]+(\.[\w-]{1,32})?$", max_length=64)
    interaction_id: str = Field(pattern=SNOWFLAKE)
    interaction_token: str = Field(min_length=1, max_length=1_000)


class GuildEventPayload(DiscordPayload):
    event_type: EventType  # type: ignore[assignment]
    guild_id: str = Field(pattern=SNOWFLAKE)


def services(ctx: Context) -> Services:
    if ctx.providers.state is None:
        raise PermanentError("the Discord jobs need the Redis state store", code="no_state")
    state = StateManager(ctx.providers.state, prefix=ctx.settings.key_prefix,
                         limits=Limits.from_settings(ctx.settings))
    return Services.from_settings(ctx.settings, ctx.providers.discord(), state, ctx.database)


@job(InteractionPayload, actor_name="discord_interaction",
     idempotency_key=lambda **p: str(p.get("interactionId")), **INTERACTION_OPTIONS)
def discord_interaction(ctx: Context, payload: InteractionPayload) -> dict[str, Any]:
    if payload.event_type.startswith(AUTOCOMPLETE):
        raise PermanentError("autocomplete interactions are answered with choices, which "
                             "no command offers; it cannot be deferred", code="unsupported")
    return interactions.handle(services(ctx), interaction(payload))


@job(GuildEventPayload, actor_name="discord_guild_event",
     idempotency_key=lambda **p: str(p.get("eventId")), **EVENT_OPTIONS)
def discord_guild_event(ctx: Context, payload: GuildEventPayload) -> dict[str, Any]:
    event = Event(payload.event_id, payload.event_type, payload.guild_id, payload.user_id,
                  payload.data if isinstance(payload.data, dict) else {})
    return events.handle(services(ctx), event)


def interaction(payload: InteractionPayload) -> Interaction:
    """The command, subcommand and options, wherever the gateway put them."""
    command, subcommand = command_of(payload)
    found_sub, options = options_of(payload.data)
    if payload.selected_values:
        options.setdefault("values", ",".join(payload.selected_values))
    return Interaction(payload.event_id, payload.interaction_id, payload.interaction_token,
                       payload.guild_id, payload.user_id, command,
                       subcommand or found_sub, options, payload.application_id,
                       payload.channel_id)


def command_of(payload: InteractionPayload) -> tuple[str, str | None]:
    """`commandName`, else `interaction.command.<name>`, else a `<command>:<step>` customId."""
    if payload.command_name:
        return payload.command_name, payload.subcommand
    parts = payload.event_type.split(".", 2)
    if len(parts) == 3:
        return parts[2], payload.subcommand
    if payload.custom_id:
        name, _, step = payload.custom_id.partition(":")
        return name, payload.subcommand or step or None
    return "", payload.subcommand


def options_of(data: dict[str, Any] | list[Any] | None) -> tuple[str | None, dict[str, Any]]:
    """Discord's `options` array (a subcommand's nested in it), or a flat object."""
    if isinstance(data, dict):
        if not isinstance(data.get("options"), list):
            return None, {k: v for k, v in data.items() if isinstance(v, str | int | float)}
        data = data["options"]
    items = [item for item in data or [] if isinstance(item, dict)]
    sub = next((item for item in items if item.get("type") == SUB_COMMAND), None)
    if sub is not None:
        return str(sub.get("name")), options_of(sub.get("options") or [])[1]
    return None, {str(item.get("name")): item.get("value") for item in items}

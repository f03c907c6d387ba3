"""Guild events: each event id is handled once for DISCORD_EVENT_TTL_MS (24 h).

A worker claims the id before handling it and marks it done after; a failure gives the
claim back so the retry can take it, and a copy arriving while one runs is retried
later. Handlers are idempotent towards Discord too (a role given twice is one role).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processing.discord.commands import verify
from processing.discord.services import Event, Services
from state.discord import DONE
from store import discord as guilds
from switchyard.base.errors import PermanentError, RetryableError

#: Sessions a member's departure ends.
SESSION_KINDS = (verify.SESSION,)
#: Discord: "Cannot send messages to this user" (DMs closed); the welcome is skipped.
DMS_CLOSED = 50007

Handler = Callable[[Services, Event], dict[str, Any]]


def handle(services: Services, event: Event) -> dict[str, Any]:
    """Run the event's handler unless its id was handled already."""
    claimed = services.state.claim_event(event.event_id)
    if claimed == DONE:
        return {"type": event.event_type, "duplicate": True}
    if claimed is not None:
        raise RetryableError("another worker is handling this event", code="event_running")
    try:
        result = HANDLERS[event.event_type](services, event)
    except BaseException:
        services.state.release_event(event.event_id)
        raise
    services.state.event_done(event.event_id)
    return {"type": event.event_type, **result}


def member_join(services: Services, event: Event) -> dict[str, Any]:
    """Welcome DM and default role, as the guild's configuration says."""
    user_id = need_user(event)
    config = guild_config(services, event)
    if config is None:
        return {"configured": False}
    # The role first: giving it again on a retry is harmless; the DM goes last, so a
    # retry after a failure elsewhere does not welcome twice.
    given = default_role(services, config, user_id, event.data)
    return {"welcomed": welcome(services, config, user_id), "roleGiven": given}


def guild_config(services: Services, event: Event) -> guilds.GuildConfig | None:
    """The event's guild configuration; None for a guild never registered."""
    with services.database.session() as session:
        return guilds.guild(session, event.guild_id)


def welcome(services: Services, config: guilds.GuildConfig, user_id: str) -> bool:
    if not config.welcome_message:
        return False
    try:
        services.discord.send_dm(user_id, config.welcome_message)
    except PermanentError as error:
        if error.code != DMS_CLOSED:
            raise
        return False
    return True


def default_role(services: Services, config: guilds.GuildConfig, user_id: str,
                 data: dict[str, Any]) -> bool:
    """Give the default role, unless Discord's membership screening is still pending."""
    if config.default_role_id is None or data.get("pending") is True:
        return False
    if config.default_role_id in (data.get("roles") or []):
        return False
    services.discord.add_role(config.guild_id, user_id, config.default_role_id,
                              reason="default role on joining")
    return True


def member_update(services: Services, event: Event) -> dict[str, Any]:
    """A member past membership screening gets the default role they waited for."""
    user_id = need_user(event)
    config = guild_config(services, event)
    if config is None:
        return {"configured": False}
    return {"roleGiven": default_role(services, config, user_id, event.data)}


def member_leave(services: Services, event: Event) -> dict[str, Any]:
    """Drop what we keep about the member in that guild."""
    dropped = services.state.forget_member(event.guild_id, need_user(event), SESSION_KINDS)
    return {"sessionsDropped": dropped}


def guild_create(services: Services, event: Event) -> dict[str, Any]:
    """Register the guild's configuration (what the event carries fills the gaps)."""
    data = event.data
    roles = data.get("selfRoles") or []
    config = guilds.GuildConfig(
        event.guild_id, text(data.get("name"), 100), text(data.get("welcomeMessage"), 2_000),
        snowflake(data.get("defaultRoleId")), snowflake(data.get("verifiedRoleId")),
        tuple(s for s in (snowflake(r) for r in roles if isinstance(roles, list)) if s))
    with services.database.session() as session:
        _, created = guilds.register(session, config)
    return {"registered": created}


def guild_delete(services: Services, event: Event) -> dict[str, Any]:
    with services.database.session() as session:
        removed = guilds.remove(session, event.guild_id)
    return {"removed": removed}


def need_user(event: Event) -> str:
    if not event.user_id:
        raise PermanentError(f"{event.event_type} needs userId", code="invalid")
    return event.user_id


def text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value.strip() else None


def snowflake(value: Any) -> str | None:
    value = str(value) if isinstance(value, int | str) else ""
    return value if value.isdigit() and len(value) <= 20 else None


HANDLERS: dict[str, Handler] = {
    "member.join": member_join, "member.leave": member_leave, "member.update": member_update,
    "guild.create": guild_create, "guild.delete": guild_delete,
    # The same events under the names seed 004's worker types also use.
    "guild.join": guild_create, "guild.leave": guild_delete,
}

"""Discord guilds' configuration, as the Discord jobs read and write it (seed 004)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from store.models import DiscordGuild

#: Self-assignable roles a guild may list, at most.
MAX_SELF_ROLES = 25


@dataclass(frozen=True)
class GuildConfig:
    """A guild's configuration, detached from the session."""

    guild_id: str
    name: str | None = None
    welcome_message: str | None = None
    default_role_id: str | None = None
    verified_role_id: str | None = None
    self_roles: tuple[str, ...] = field(default_factory=tuple)


def _config(row: DiscordGuild) -> GuildConfig:
    return GuildConfig(row.id, row.name, row.welcome_message, row.default_role_id,
                       row.verified_role_id, tuple(row.self_roles or ()))


def guild(session: Session, guild_id: str) -> GuildConfig | None:
    row = session.get(DiscordGuild, guild_id)
    return None if row is None else _config(row)


def register(session: Session, config: GuildConfig) -> tuple[GuildConfig, bool]:
    """Create the guild's row (True) or fill in only what it does not have yet (False)."""
    row = session.get(DiscordGuild, config.guild_id)
    created = row is None
    if row is None:
        row = DiscordGuild(id=config.guild_id, self_roles=[])
        session.add(row)
    row.name = config.name or row.name
    row.welcome_message = row.welcome_message or config.welcome_message
    row.default_role_id = row.default_role_id or config.default_role_id
    row.verified_role_id = row.verified_role_id or config.verified_role_id
    row.self_roles = list(row.self_roles or config.self_roles)[:MAX_SELF_ROLES]
    session.flush()
    return _config(row), created


def remove(session: Session, guild_id: str) -> bool:
    """Delete the guild's configuration; False if there was none."""
    row = session.get(DiscordGuild, guild_id)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True

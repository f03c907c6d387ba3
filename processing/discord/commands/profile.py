"""`/status` and `/profile`: the member's own standing in the server, from Discord."""

from __future__ import annotations

from typing import Any

from processing.discord.commands import verify
from processing.discord.commands.base import Command
from processing.discord.services import Interaction, Reply, Services
from store import discord as guilds


def run(services: Services, interaction: Interaction) -> Reply:
    if not interaction.guild_id or not interaction.user_id:
        return Reply("Profiles live inside a server.", "not_in_guild")
    guild_id, user_id = interaction.guild_id, interaction.user_id
    member = services.discord.get_member(guild_id, user_id)
    with services.database.session() as session:
        config = guilds.guild(session, guild_id)
    flow = services.state.session(verify.SESSION, guild_id, user_id)
    return Reply(describe(member, config, flow), "profile")


def describe(member: dict[str, Any], config: guilds.GuildConfig | None,
             flow: dict[str, Any] | None) -> str:
    roles = [str(role) for role in member.get("roles") or []]
    user = member.get("user") or {}
    name = member.get("nick") or user.get("global_name") or user.get("username") or "member"
    verified = bool(config and config.verified_role_id and config.verified_role_id in roles)
    lines = [f"{name}", f"Member since: {str(member.get('joined_at') or 'unknown')[:10]}",
             f"Roles: {len(roles)}", f"Verified: {'yes' if verified else 'no'}"]
    if flow is not None and not verified:
        lines.append(f"Verification in progress: {flow.get('step')}")
    return "\n".join(lines)


COMMAND = Command(("status", "profile"), run, ephemeral=False)

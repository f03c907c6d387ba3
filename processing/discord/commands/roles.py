"""`/role add|remove|list`: members give themselves the roles the server lists as
self-assignable (and no other)."""

from __future__ import annotations

from processing.discord.commands.base import Command, option
from processing.discord.services import Interaction, Reply, Services
from store import discord as guilds


def run(services: Services, interaction: Interaction) -> Reply:
    if not interaction.guild_id or not interaction.user_id:
        return Reply("Roles live inside a server.", "not_in_guild")
    with services.database.session() as session:
        config = guilds.guild(session, interaction.guild_id)
    allowed = config.self_roles if config is not None else ()
    action = interaction.subcommand or "list"
    if action == "list" or not allowed:
        return listing(allowed)
    role_id = option(interaction, "role")
    if role_id is None or role_id not in allowed:
        return Reply("That role is not one you can give yourself; /role list shows them.",
                     "not_allowed")
    return change(services, interaction, action, role_id)


def listing(allowed: tuple[str, ...]) -> Reply:
    if not allowed:
        return Reply("This server has no roles you can give yourself.", "none")
    return Reply("Roles you can give yourself: " + ", ".join(f"<@&{r}>" for r in allowed),
                 "listed")


def change(services: Services, interaction: Interaction, action: str, role_id: str) -> Reply:
    guild_id, user_id = str(interaction.guild_id), str(interaction.user_id)
    if action == "add":
        services.discord.add_role(guild_id, user_id, role_id, reason="self-assigned")
        return Reply(f"You now have <@&{role_id}>.", "added")
    if action == "remove":
        services.discord.remove_role(guild_id, user_id, role_id, reason="self-removed")
        return Reply(f"You no longer have <@&{role_id}>.", "removed")
    return Reply("Use /role add, /role remove or /role list.", "unknown_action")


COMMAND = Command(("role", "roles"), run, ephemeral=True)

"""`/verify`: a three-step flow (start, answer the code, confirm) that ends with the
guild's verified role. Its state is a session that expires (DISCORD_SESSION_TTL_MS),
so every step may reach a different worker, and a step after expiry starts over.
Buttons with custom id `verify:<step>` take the same steps.
"""

from __future__ import annotations

import secrets
import string

from processing.discord.commands.base import Command, option
from processing.discord.services import Interaction, Reply, Services
from store import discord as guilds

SESSION = "verify"
#: Wrong answers before the flow is ended and must be started again.
MAX_WRONG = 3
CODE_LENGTH = 6
CODE_ALPHABET = string.ascii_uppercase + string.digits
STARTED, ANSWERED, VERIFIED = "started", "answered", "verified"
NONE_RUNNING = "No verification is in progress (or it expired): run /verify start."


def run(services: Services, interaction: Interaction) -> Reply:
    step = interaction.subcommand or "start"
    if not interaction.guild_id or not interaction.user_id:
        return Reply("Verification works inside a server.", "not_in_guild")
    with services.database.session() as session:
        config = guilds.guild(session, interaction.guild_id)
    if config is None or config.verified_role_id is None:
        return Reply("Verification is not set up in this server.", "not_configured")
    if step == "start":
        return start(services, interaction)
    if step == "answer":
        return answer(services, interaction)
    if step == "confirm":
        return confirm(services, interaction, config.verified_role_id)
    return Reply("Use /verify start, /verify answer or /verify confirm.", "unknown_step")


def start(services: Services, interaction: Interaction) -> Reply:
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    services.state.set_session(SESSION, str(interaction.guild_id), str(interaction.user_id),
                               {"step": STARTED, "code": code, "wrong": 0})
    return Reply(f"Step 1 of 3: your code is {code}. Type it back with "
                 "/verify answer code:<your code>.", STARTED)


def answer(services: Services, interaction: Interaction) -> Reply:
    guild_id, user_id = str(interaction.guild_id), str(interaction.user_id)
    session = services.state.session(SESSION, guild_id, user_id)
    if session is None:
        return Reply(NONE_RUNNING, "no_session")
    if session.get("step") != STARTED:
        return Reply("Code accepted already: run /verify confirm.", str(session.get("step")))
    given = (option(interaction, "code") or "").upper()
    if not secrets.compare_digest(given.encode(), str(session.get("code")).encode()):
        return wrong(services, guild_id, user_id, session)
    services.state.update_session(SESSION, guild_id, user_id, {**session, "step": ANSWERED})
    return Reply("Step 2 of 3: code accepted. Run /verify confirm to finish.", ANSWERED)


def wrong(services: Services, guild_id: str, user_id: str, session: dict[str, object]) -> Reply:
    count = int(str(session.get("wrong", 0))) + 1
    if count >= MAX_WRONG:
        services.state.end_session(SESSION, guild_id, user_id)
        return Reply("That code does not match, too many times: run /verify start again.",
                     "too_many_wrong")
    services.state.update_session(SESSION, guild_id, user_id, {**session, "wrong": count})
    return Reply("That code does not match. Try again.", "wrong_code")


def confirm(services: Services, interaction: Interaction, role_id: str) -> Reply:
    guild_id, user_id = str(interaction.guild_id), str(interaction.user_id)
    session = services.state.session(SESSION, guild_id, user_id)
    if session is None:
        return Reply(NONE_RUNNING, "no_session")
    if session.get("step") not in (ANSWERED, VERIFIED):
        return Reply("Type your code back first: /verify answer code:<your code>.",
                     "not_answered")
    # Idempotent on Discord's side: a retried confirm gives the role again, harmlessly.
    services.discord.add_role(guild_id, user_id, role_id, reason="verification completed")
    services.state.update_session(SESSION, guild_id, user_id, {**session, "step": VERIFIED})
    return Reply("Step 3 of 3: you are verified and have the verified role.", VERIFIED)


COMMAND = Command(("verify",), run, ephemeral=True)

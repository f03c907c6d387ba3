"""An interaction, from its deferred response to its answer.

Discord gives 3 s from the interaction's creation (its snowflake's timestamp, not
when it reached us) for the first response, and 15 minutes for the webhook after.
So: first the deadline (an interaction too old to defer in time is a dead letter,
"deadline missed"), then the defer, then the command, whose answer replaces the
"thinking..." response (editing the original is idempotent, so a retried job never
answers twice). A retry finds the defer remembered in Redis and does not repeat it,
nor the cooldown and rate-limit checks, whose verdict is kept with it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from processing.discord import commands
from processing.discord.commands.base import Command
from processing.discord.services import TOKEN_LIFETIME_MS, Interaction, Reply, Services
from switchyard.base.errors import JobError, PermanentError

#: Discord's epoch: snowflakes count milliseconds from 2015-01-01T00:00:00Z.
DISCORD_EPOCH_MS = 1_420_070_400_000
ALLOWED = "ok"


def created_ms(interaction_id: str | int) -> int:
    """When Discord created the snowflake (ms since the Unix epoch)."""
    return (int(interaction_id) >> 22) + DISCORD_EPOCH_MS


def handle(services: Services, interaction: Interaction) -> dict[str, Any]:
    """Defer (once), run the command, answer; the job's small result."""
    application_id(services, interaction)  # nothing can answer without it: final, first
    command = commands.find(interaction.command)
    verdict = services.state.deferred(interaction.interaction_id)
    if verdict is None:
        verdict = first_response(services, interaction, command)
    check_token(services, interaction)
    reply = Reply(verdict, "refused") if verdict != ALLOWED else run(services, interaction,
                                                                     command)
    answer(services, interaction, reply.content)
    return {"command": interaction.command[:32], "outcome": reply.outcome,
            "interactionId": interaction.interaction_id}


def first_response(services: Services, interaction: Interaction, command: Command) -> str:
    """Check the deadline, decide the gates, defer; the gates' verdict is remembered."""
    age = services.clock() - created_ms(interaction.interaction_id)
    left = services.callback_window_ms - age
    if left < services.defer_margin_ms:
        raise PermanentError(f"deadline missed: the interaction is {max(0, age)} ms old; "
                             f"{services.callback_window_ms} ms allowed, less a "
                             f"{services.defer_margin_ms} ms margin",
                             code="deadline_missed", provider="Discord")
    verdict = gates(services, interaction, command)
    services.discord.defer_interaction(interaction.interaction_id, interaction.token,
                                       ephemeral=command.ephemeral)
    services.state.mark_deferred(interaction.interaction_id, verdict)
    return verdict


def gates(services: Services, interaction: Interaction, command: Command) -> str:
    """The cooldown and the rate limit: ALLOWED, or the refusal the user reads."""
    if not command.limited or interaction.user_id is None:
        return ALLOWED
    if services.state.over_rate_limit(interaction.user_id):
        return "You are sending commands too fast; try again in a minute."
    # Per step of a command: a multi-step flow's steps do not hold each other back.
    name = " ".join(filter(None, (command.names[0], interaction.subcommand)))
    left = services.state.cooldown(name, interaction.user_id)
    if left:
        return f"/{name} is cooling down; try again in {left / 1000:.1f} s."
    return ALLOWED


def run(services: Services, interaction: Interaction, command: Command) -> Reply:
    """The command's reply; a final failure is told to the user, then dead-lettered."""
    try:
        return command.run(services, interaction)
    except PermanentError as error:
        with contextlib.suppress(JobError):  # the dead letter keeps the first cause
            answer(services, interaction, "Sorry, that did not work; the server's admins "
                                          f"can see why (error {error.code or 'unknown'}).")
        raise


def check_token(services: Services, interaction: Interaction) -> None:
    """Past the token's life (less the margin) nothing can answer: final."""
    age = services.clock() - created_ms(interaction.interaction_id)
    if age > TOKEN_LIFETIME_MS - services.token_margin_ms:
        raise PermanentError("interaction token expired: its 15 minutes are over",
                             code="token_expired", provider="Discord")


def application_id(services: Services, interaction: Interaction) -> str:
    found = interaction.application_id or services.application_id
    if found is None:
        raise PermanentError("no application id to answer with: set "
                             "DISCORD_APPLICATION_ID or send applicationId",
                             code="not_configured", provider="Discord")
    return found


def answer(services: Services, interaction: Interaction, content: str) -> None:
    services.discord.edit_original(application_id(services, interaction), interaction.token,
                                   content)

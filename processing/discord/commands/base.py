"""A command: its names, whether its answers are private, and the function that runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from processing.discord.services import Interaction, Reply, Services

Run = Callable[[Services, Interaction], Reply]


@dataclass(frozen=True)
class Command:
    names: tuple[str, ...]
    run: Run
    #: Deferred with flag 64: only the user who ran it sees the answer.
    ephemeral: bool = True
    #: Subject to the per-user, per-command cooldown and the rate limit.
    limited: bool = True


def option(interaction: Interaction, name: str) -> str | None:
    """An option's value as text, or None when the user left it out."""
    value = interaction.options.get(name)
    return None if value is None else str(value).strip() or None

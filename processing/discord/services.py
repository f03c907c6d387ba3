"""What the Discord processors are given: clients, state and the settings' numbers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from integrations.discord import DiscordApi
from state.discord import StateManager
from store.db import Database

#: Discord's window for the first response to an interaction.
CALLBACK_WINDOW_MS = 3_000
#: How long an interaction's token (and so its webhook) lives.
TOKEN_LIFETIME_MS = 15 * 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Services:
    discord: DiscordApi
    state: StateManager
    database: Database
    #: Defer only when at least this much of the 3-second window remains.
    defer_margin_ms: int = 300
    #: Give an interaction up this long before its 15-minute token dies.
    token_margin_ms: int = 30_000
    #: The application whose webhooks answer, when the interaction does not say.
    application_id: str | None = None
    clock: Callable[[], int] = field(default=now_ms)
    #: Discord's window for the first response. The development outbox is not Discord
    #: and keeps no such clock: there the window is the token's whole life, so an
    #: interaction typed into `switchyard send` still runs.
    callback_window_ms: int = CALLBACK_WINDOW_MS

    @classmethod
    def from_settings(cls, settings: Any, discord: DiscordApi, state: StateManager,
                      database: Database) -> Services:
        window = TOKEN_LIFETIME_MS if settings.discord_backend == "outbox" \
            else CALLBACK_WINDOW_MS
        return cls(discord, state, database, settings.discord_defer_margin_ms,
                   settings.discord_token_margin_ms, settings.discord_application_id,
                   callback_window_ms=window)


@dataclass(frozen=True)
class Interaction:
    """An interaction as the jobs need it (seed 004's payload, parsed)."""

    event_id: str
    interaction_id: str
    token: str
    guild_id: str | None
    user_id: str | None
    command: str
    subcommand: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    application_id: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True)
class Event:
    """A guild event (seed 004's payload, parsed)."""

    event_id: str
    event_type: str
    guild_id: str
    user_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A command's answer: what the user reads, and a word for the job's result."""

    content: str
    outcome: str = "done"

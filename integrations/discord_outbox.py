"""Discord for development: every call is written under `var/outbox/discord`.

With `DISCORD_BACKEND=outbox` (the development default) the Discord jobs run against a
Discord where every call succeeds: defers are acknowledged, follow-ups and DMs get
made-up message ids, role changes are accepted, and a member is a plain member with no
roles. Interaction tokens are secrets for 15 minutes, so the files name the
interaction, never its token.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from integrations.outbox import Outbox

#: Made-up message and channel ids start here (Discord snowflakes are 64-bit integers).
FIRST_ID = 1_300_000_000_000_000_000


class DiscordOutbox:
    """The `DiscordApi` surface, written to files instead of sent."""

    def __init__(self, root: Path) -> None:
        self.outbox = Outbox(root, "discord", ".json")
        self._ids = itertools.count(FIRST_ID)

    def __repr__(self) -> str:
        return f"DiscordOutbox({str(self.outbox.dir)!r})"

    def _record(self, call: str, **params: Any) -> str:
        self.outbox.write(json.dumps({"call": call, "params": params, "at": time.time()},
                                     indent=2, default=str).encode(), None)
        return str(next(self._ids))

    def _message(self, message_id: str, channel_id: str, content: str) -> dict[str, Any]:
        return {"id": message_id, "type": 0, "channel_id": channel_id, "content": content,
                "timestamp": datetime.now(UTC).isoformat(), "flags": 0}

    def defer_interaction(self, interaction_id: str | int, token: str, *,
                          ephemeral: bool = False) -> None:
        self._record("defer", interaction_id=str(interaction_id), ephemeral=ephemeral)

    def follow_up(self, application_id: str | int, token: str, content: str, *,
                  ephemeral: bool = False) -> dict[str, Any]:
        message_id = self._record("follow_up", application_id=str(application_id),
                                  content=content, ephemeral=ephemeral)
        return self._message(message_id, "0", content)

    def edit_original(self, application_id: str | int, token: str,
                      content: str) -> dict[str, Any]:
        message_id = self._record("edit_original", application_id=str(application_id),
                                  content=content)
        return self._message(message_id, "0", content)

    def add_role(self, guild_id: str | int, user_id: str | int, role_id: str | int, *,
                 reason: str | None = None) -> None:
        self._record("add_role", guild_id=str(guild_id), user_id=str(user_id),
                     role_id=str(role_id), reason=reason)

    def remove_role(self, guild_id: str | int, user_id: str | int, role_id: str | int, *,
                    reason: str | None = None) -> None:
        self._record("remove_role", guild_id=str(guild_id), user_id=str(user_id),
                     role_id=str(role_id), reason=reason)

    def get_member(self, guild_id: str | int, user_id: str | int) -> dict[str, Any]:
        self._record("get_member", guild_id=str(guild_id), user_id=str(user_id))
        return {"user": {"id": str(user_id), "username": f"user{user_id}"}, "nick": None,
                "roles": [], "joined_at": datetime.now(UTC).isoformat()}

    def send_dm(self, user_id: str | int, content: str) -> dict[str, Any]:
        message_id = self._record("send_dm", user_id=str(user_id), content=content)
        return self._message(message_id, str(user_id), content)

    def close(self) -> None:
        """Nothing to close; here for `Providers.close()`."""

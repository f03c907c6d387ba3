"""What the channel jobs need from a Telegram user account, and what it answers.

Kept apart from the Telethon adapter (`integrations.telegram_user`), which is slow to
import, so producers and the CLI do not pay for Telethon.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ChannelInfo:
    """A channel as the account sees it.

    `telegram_id` is the marked id, the same number the Bot API uses (-100... for
    channels and supergroups); `participants` is None when Telegram hides the count.
    """

    telegram_id: int
    title: str
    username: str | None
    participants: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JoinPending:
    """The invite needs an admin's approval: the request is sent, nothing failed."""

    note: str = "join request sent; an admin of the chat must approve it"

    def as_dict(self) -> dict[str, Any]:
        return {"pending": True, "note": self.note}


class TelegramGateway(Protocol):
    """What the channel jobs need from a Telegram user account."""

    def resolve(self, username: str) -> ChannelInfo: ...

    def join_public(self, username: str) -> ChannelInfo: ...

    def join_invite(self, invite_hash: str) -> ChannelInfo | JoinPending: ...

    def leave(self, telegram_id: int) -> None: ...


__all__ = ["ChannelInfo", "JoinPending", "TelegramGateway"]

"""Telegram for development: every call is written under `var/outbox/telegram`.

With `TELEGRAM_BACKEND=outbox` (the development default) the bot and the user account
answer the way Telegram would for a channel where everything is allowed: invite links
are made up (`https://t.me/+outbox...`), the bot is an administrator with every right,
joins succeed. Nothing reaches Telegram; the files show what would have been sent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from pathlib import Path
from typing import Any

from integrations.outbox import Outbox
from integrations.telegram_gateway import ChannelInfo, JoinPending

#: The made-up bot's user id.
BOT_ID = 1
_BOT = {"id": BOT_ID, "is_bot": True, "first_name": "Switchyard outbox", "username": "outbox_bot"}


class _Calls:
    def __init__(self, root: Path) -> None:
        self.outbox = Outbox(root, "telegram", ".json")
        self._ids = itertools.count(1)

    def record(self, method: str, **params: Any) -> int:
        self.outbox.write(json.dumps({"method": method, "params": params, "at": time.time()},
                                     indent=2, default=str).encode(), None)
        return next(self._ids)


def _stable_id(text: str) -> int:
    """A channel id (-100...) that stays the same for the same username."""
    return -1_000_000_000_000 - int(hashlib.sha256(text.encode()).hexdigest()[:9], 16)


class TelegramBotOutbox:
    """The `TelegramBot` surface, written to files instead of sent."""

    def __init__(self, root: Path) -> None:
        self._calls = _Calls(root)

    @property
    def bot_id(self) -> int:
        return BOT_ID

    def get_me(self) -> dict[str, Any]:
        self._calls.record("getMe")
        return dict(_BOT)

    def create_invite_link(self, chat_id: int | str, *, expire_date: int, member_limit: int = 1,
                           name: str | None = None) -> dict[str, Any]:
        self._calls.record("createChatInviteLink", chat_id=chat_id, expire_date=expire_date,
                           member_limit=member_limit, name=name)
        code = hashlib.sha256(f"{chat_id}:{name}:{time.time_ns()}".encode()).hexdigest()[:16]
        return {"invite_link": f"https://t.me/+outbox{code}", "creator": dict(_BOT),
                "creates_join_request": False, "is_primary": False, "is_revoked": False,
                "expire_date": expire_date, "member_limit": member_limit, "name": name}

    def send_message(self, chat_id: int | str, text: str, *,
                     parse_mode: str | None = None) -> dict[str, Any]:
        message_id = self._calls.record("sendMessage", chat_id=chat_id, text=text,
                                        parse_mode=parse_mode)
        return {"message_id": message_id, "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"}, "text": text}

    def approve_join_request(self, chat_id: int | str, user_id: int) -> bool:
        self._calls.record("approveChatJoinRequest", chat_id=chat_id, user_id=user_id)
        return True

    def remove_member(self, chat_id: int | str, user_id: int) -> bool:
        self._calls.record("banChatMember", chat_id=chat_id, user_id=user_id)
        self._calls.record("unbanChatMember", chat_id=chat_id, user_id=user_id,
                           only_if_banned=True)
        return True

    def get_chat_member(self, chat_id: int | str, user_id: int) -> dict[str, Any]:
        self._calls.record("getChatMember", chat_id=chat_id, user_id=user_id)
        if user_id == BOT_ID:
            return {"status": "administrator", "user": dict(_BOT), "can_invite_users": True,
                    "can_restrict_members": True, "can_manage_chat": True}
        return {"status": "member", "user": {"id": user_id, "is_bot": False}}

    def close(self) -> None:
        pass


class TelegramUserOutbox:
    """The `TelegramGateway` surface: joins and leaves written to files, always allowed."""

    def __init__(self, root: Path) -> None:
        self._calls = _Calls(root)

    def resolve(self, username: str) -> ChannelInfo:
        self._calls.record("resolve", username=username)
        return ChannelInfo(_stable_id(username), username, username, None)

    def join_public(self, username: str) -> ChannelInfo:
        self._calls.record("JoinChannelRequest", username=username)
        return ChannelInfo(_stable_id(username), username, username, None)

    def join_invite(self, invite_hash: str) -> ChannelInfo | JoinPending:
        self._calls.record("ImportChatInviteRequest", hash=invite_hash)
        return ChannelInfo(_stable_id(invite_hash), "private channel", None, None)

    def leave(self, telegram_id: int) -> None:
        self._calls.record("LeaveChannelRequest", telegram_id=telegram_id)

    def close(self) -> None:
        pass

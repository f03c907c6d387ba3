"""A stateful Telegram Bot API on loopback, answering with Telegram's shapes and errors.

Chats hold the bot's own status and rights, members with their statuses, bans and
join requests; the fake records the invite links it issued and the messages it sent.
Errors carry the descriptions Telegram really uses (shared/reference/external-apis.md,
section 1). Tests put scripted answers in front of it with `script()`, built with
`TelegramFake.error()` / `TelegramFake.rate_limited()`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeServer, Recorded, Reply

_PATH = re.compile(r"^/bot(?P<token>[^/]*)/(?P<method>[A-Za-z]+)/?$")
_TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")

#: Statuses of someone inside the chat.
INSIDE = ("creator", "administrator", "member", "restricted")


class BotApiError(Exception):
    """Raised inside a method handler; becomes the Bot API's error answer."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


@dataclass
class FakeChat:
    """One chat as the fake keeps it."""

    id: int
    title: str
    type: str = "channel"  # channel, supergroup or group
    username: str | None = None
    bot_status: str = "administrator"
    can_invite_users: bool = True
    can_restrict_members: bool = True
    migrate_to: int | None = None
    members: dict[int, str] = field(default_factory=dict)  # user id -> status
    banned: dict[int, int] = field(default_factory=dict)  # user id -> until_date (0: forever)
    join_requests: set[int] = field(default_factory=set)

    @property
    def kind(self) -> str:
        """How Telegram names the chat in its 403 descriptions."""
        return {"channel": "channel", "supergroup": "supergroup"}.get(self.type, "group")


class TelegramFake(FakeServer):
    """The Bot API for one bot (its `token`); everything else is someone else's bot."""

    def __init__(self, token: str, *, bot_username: str = "switchyard_test_bot") -> None:
        self.token = token
        self.bot_id = int(token.partition(":")[0])
        self.bot_user = {"id": self.bot_id, "is_bot": True, "first_name": "Switchyard",
                         "username": bot_username}
        self.chats: dict[int, FakeChat] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.started: set[int] = set()  # users who opened a private chat with the bot
        self.blocked: set[int] = set()  # users who blocked the bot
        self.invite_links: list[dict[str, Any]] = []  # ChatInviteLink + chat_id + uses
        self.messages: list[dict[str, Any]] = []  # Message objects as answered
        self._state = threading.RLock()
        self._next_message_id = 1
        super().__init__()

    # Building the world.

    def add_chat(self, chat_id: int, title: str, *, bot_status: str = "administrator",
                 can_invite_users: bool = True, can_restrict_members: bool = True,
                 migrate_to: int | None = None, chat_type: str = "channel",
                 username: str | None = None) -> FakeChat:
        """A chat the bot knows; `migrate_to` makes it an upgraded group that moved there."""
        chat = FakeChat(chat_id, title, chat_type, username, bot_status, can_invite_users,
                        can_restrict_members, migrate_to)
        with self._state:
            self.chats[chat_id] = chat
        return chat

    def add_user(self, user_id: int, first_name: str = "User", *, username: str | None = None,
                 started: bool = False, blocked: bool = False) -> dict[str, Any]:
        """A Telegram user; `started` means they opened a private chat with the bot."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        with self._state:
            self.users[user_id] = user
            if started:
                self.started.add(user_id)
            if blocked:
                self.blocked.add(user_id)
        return user

    def add_member(self, chat_id: int, user_id: int, status: str = "member") -> None:
        """Put a user in a chat with `status` (creator, administrator, member, ...)."""
        with self._state:
            self._user(user_id)
            self.chats[chat_id].members[user_id] = status

    def request_join(self, chat_id: int, user_id: int) -> None:
        """The user asked to join through a link that needs approval."""
        with self._state:
            self._user(user_id)
            self.chats[chat_id].join_requests.add(user_id)

    def join_by_link(self, invite_link: str, user_id: int) -> str:
        """A user opens an invite link: "joined", or why not ("expired", "banned", ...)."""
        with self._state:
            link = next((x for x in self.invite_links if x["invite_link"] == invite_link), None)
            if link is None or link["is_revoked"]:
                return "invalid"
            chat = self.chats[link["chat_id"]]
            if link.get("expire_date") and link["expire_date"] <= time.time():
                return "expired"
            if link.get("member_limit") and link["uses"] >= link["member_limit"]:
                return "used up"
            if user_id in chat.banned:
                return "banned"
            self._user(user_id)
            link["uses"] += 1
            chat.members[user_id] = "member"
            return "joined"

    def status(self, chat_id: int, user_id: int) -> str:
        """The user's status in the chat, as getChatMember would say it."""
        with self._state:
            return self._status(self.chats[chat_id], user_id)

    @property
    def banned(self) -> set[tuple[int, int]]:
        """Every (chat id, user id) currently banned."""
        with self._state:
            return {(c.id, u) for c in self.chats.values() for u in c.banned}

    # Scripted answers.

    @staticmethod
    def error(code: int, description: str, parameters: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> Reply:
        """Telegram's error answer: the status equals `error_code`."""
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters is not None:
            body["parameters"] = parameters
        return Reply(code, json=body, headers=dict(headers or {}))

    @staticmethod
    def rate_limited(retry_after: int = 5, *, header: int | None = None) -> Reply:
        """A 429 with `parameters.retry_after`; `header` also sets a Retry-After header."""
        headers = {"Retry-After": str(header)} if header is not None else {}
        return TelegramFake.error(429, f"Too Many Requests: retry after {retry_after}",
                                  {"retry_after": retry_after}, headers)

    def echo_into(self, reply: Reply, text: str) -> Reply:
        """Telegram's `description`, followed by what it was sent."""
        body = copy.deepcopy(reply.json)
        if isinstance(body, dict) and "description" in body:
            body["description"] = f"{body['description']}: {text}"
        return dataclasses.replace(reply, json=body)

    # Serving.

    def handle(self, request: Recorded) -> Reply:
        match = _PATH.match(request.path)
        if match is None:
            return self.error(404, "Not Found")
        token, method = match["token"], match["method"].lower()
        if token != self.token:
            return self.error(401 if _TOKEN_SHAPE.match(token) else 404,
                              "Unauthorized" if _TOKEN_SHAPE.match(token) else "Not Found")
        handler = self._methods().get(method)
        if handler is None:
            return self.error(404, "Not Found")
        try:
            with self._state:
                return Reply(200, json={"ok": True, "result": handler(_params(request))})
        except BotApiError as failure:
            return self.error(failure.code, failure.description, failure.parameters)

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "getme": lambda p: dict(self.bot_user, can_join_groups=True,
                                    can_read_all_group_messages=False,
                                    supports_inline_queries=False),
            "createchatinvitelink": self._create_invite_link,
            "sendmessage": self._send_message,
            "approvechatjoinrequest": self._approve_join_request,
            "banchatmember": self._ban,
            "unbanchatmember": self._unban,
            "getchatmember": self._get_chat_member,
            "getchatadministrators": self._get_administrators,
        }

    # Methods.

    def _create_invite_link(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(p, rights="can_invite_users",
                          denied="not enough rights to manage chat invite link")
        limit, expire = _int(p.get("member_limit")), _int(p.get("expire_date"))
        if limit is not None and _bool(p.get("creates_join_request")):
            # [unconfirmed wording] Telegram refuses the combination with a 400.
            raise BotApiError(400, "Bad Request: can't combine member_limit and join requests")
        if limit is not None and not 1 <= limit <= 99_999:
            raise BotApiError(400, "Bad Request: MEMBER_LIMIT_INVALID")
        link: dict[str, Any] = {
            "invite_link": "https://t.me/+" + secrets.token_urlsafe(12)[:16],
            "creator": dict(self.bot_user), "creates_join_request": _bool(p.get(
                "creates_join_request")), "is_primary": False, "is_revoked": False,
        }
        for key, value in (("expire_date", expire), ("member_limit", limit),
                           ("name", p.get("name"))):
            if value is not None:
                link[key] = value
        self.invite_links.append({**link, "chat_id": chat.id, "uses": 0})
        return link

    def _send_message(self, p: dict[str, Any]) -> dict[str, Any]:
        text = str(p.get("text") or "")
        if not text.strip():
            raise BotApiError(400, "Bad Request: message text is empty")
        chat_id = _int(p.get("chat_id"))
        if chat_id is not None and chat_id > 0:  # a private chat with a user
            chat_ref = self._private_chat(chat_id)
        else:
            found = self._chat(p)
            chat_ref = {"id": found.id, "title": found.title, "type": found.type}
        message = {"message_id": self._next_message_id, "date": int(time.time()),
                   "chat": chat_ref, "text": text}
        self._next_message_id += 1
        self.messages.append(message)
        return message

    def _approve_join_request(self, p: dict[str, Any]) -> bool:
        chat = self._chat(p, rights="can_invite_users",
                          denied="not enough rights to manage chat invite link")
        user_id = self._user_id(p)
        if self._status(chat, user_id) in INSIDE:
            raise BotApiError(400, "Bad Request: USER_ALREADY_PARTICIPANT")
        if user_id not in chat.join_requests:
            raise BotApiError(400, "Bad Request: HIDE_REQUESTER_MISSING")
        chat.join_requests.discard(user_id)
        chat.members[user_id] = "member"
        return True

    def _ban(self, p: dict[str, Any]) -> bool:
        chat, user_id = self._restrictable(p)
        chat.members.pop(user_id, None)
        chat.join_requests.discard(user_id)
        chat.banned[user_id] = _int(p.get("until_date")) or 0
        return True

    def _unban(self, p: dict[str, Any]) -> bool:
        chat, user_id = self._restrictable(p)
        if user_id in chat.banned:
            del chat.banned[user_id]
        elif not _bool(p.get("only_if_banned")):
            chat.members.pop(user_id, None)  # without only_if_banned a member is removed too
        return True

    def _get_chat_member(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(p)
        user_id = self._user_id(p)
        if user_id != self.bot_id and user_id not in self.users:
            raise BotApiError(400, "Bad Request: user not found")
        return self._member(chat, user_id)

    def _get_administrators(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        chat = self._chat(p)
        ids = [u for u, s in chat.members.items() if s in ("creator", "administrator")]
        if chat.bot_status == "administrator":
            ids.append(self.bot_id)
        return [self._member(chat, user_id) for user_id in ids]

    # Lookups and checks, in the order Telegram makes them.

    def _chat(self, p: dict[str, Any], *, rights: str | None = None,
              denied: str = "") -> FakeChat:
        """The chat named by `chat_id`, checked for the bot's presence and `rights`."""
        chat = self._find_chat(p.get("chat_id"))
        if chat.migrate_to is not None:
            raise BotApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                              {"migrate_to_chat_id": chat.migrate_to})
        if chat.bot_status == "kicked":
            raise BotApiError(403, f"Forbidden: bot was kicked from the {chat.kind} chat")
        if chat.bot_status == "left":
            raise BotApiError(403, f"Forbidden: bot is not a member of the {chat.kind} chat")
        if rights and not (chat.bot_status == "administrator" and getattr(chat, rights)):
            raise BotApiError(400, f"Bad Request: {denied}")
        return chat

    def _find_chat(self, chat_id: Any) -> FakeChat:
        if chat_id in (None, ""):
            raise BotApiError(400, "Bad Request: chat_id is empty")
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            for chat in self.chats.values():
                if chat.username and chat.username.lower() == chat_id[1:].lower():
                    return chat
        elif (number := _int(chat_id)) is not None and number in self.chats:
            return self.chats[number]
        raise BotApiError(400, "Bad Request: chat not found")

    def _restrictable(self, p: dict[str, Any]) -> tuple[FakeChat, int]:
        chat = self._chat(p, rights="can_restrict_members",
                          denied="not enough rights to restrict/unrestrict chat member")
        user_id = self._user_id(p)
        if user_id != self.bot_id and user_id not in self.users:
            raise BotApiError(400, "Bad Request: PARTICIPANT_ID_INVALID")
        if chat.members.get(user_id) == "creator":
            raise BotApiError(400, "Bad Request: can't remove chat owner")
        return chat, user_id

    def _user_id(self, p: dict[str, Any]) -> int:
        user_id = _int(p.get("user_id"))
        if user_id is None or user_id <= 0:
            raise BotApiError(400, "Bad Request: USER_ID_INVALID")
        return user_id

    def _private_chat(self, user_id: int) -> dict[str, Any]:
        user = self.users.get(user_id)
        if user is None:
            raise BotApiError(400, "Bad Request: chat not found")
        if user_id in self.blocked:
            raise BotApiError(403, "Forbidden: bot was blocked by the user")
        if user_id not in self.started:
            raise BotApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return {"id": user_id, "first_name": user["first_name"], "type": "private"}

    def _status(self, chat: FakeChat, user_id: int) -> str:
        if user_id == self.bot_id:
            return chat.bot_status
        if user_id in chat.banned:
            return "kicked"
        return chat.members.get(user_id, "left")

    def _user(self, user_id: int) -> dict[str, Any]:
        if user_id not in self.users:
            self.users[user_id] = {"id": user_id, "is_bot": False, "first_name": "User"}
        return self.users[user_id]

    def _member(self, chat: FakeChat, user_id: int) -> dict[str, Any]:
        """A ChatMember object in the shape its status has."""
        status = self._status(chat, user_id)
        user = dict(self.bot_user) if user_id == self.bot_id else dict(self._user(user_id))
        member: dict[str, Any] = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(_admin_rights(chat, bot=user_id == self.bot_id))
        elif status == "restricted":
            member.update(is_member=True, can_send_messages=False, until_date=0)
        elif status == "kicked":
            member["until_date"] = chat.banned.get(user_id, 0)
        return member


def _admin_rights(chat: FakeChat, *, bot: bool) -> dict[str, Any]:
    invite = chat.can_invite_users if bot else True
    restrict = chat.can_restrict_members if bot else True
    rights: dict[str, Any] = {
        "can_be_edited": False, "is_anonymous": False, "can_manage_chat": True,
        "can_delete_messages": True, "can_manage_video_chats": True,
        "can_restrict_members": restrict, "can_promote_members": False,
        "can_change_info": True, "can_invite_users": invite, "can_post_stories": False,
        "can_edit_stories": False, "can_delete_stories": False,
    }
    if chat.type == "channel":
        rights.update(can_post_messages=True, can_edit_messages=True)
    else:
        rights["can_pin_messages"] = True
    return rights


def _params(request: Recorded) -> dict[str, Any]:
    """The call's parameters: JSON body, form body or query string, like Telegram."""
    params: dict[str, Any] = {k: v[-1] for k, v in request.query.items()}
    content_type = request.headers.get("content-type", "")
    if request.body and "json" in content_type:
        body = request.json()
        if isinstance(body, dict):
            params.update(body)
    elif request.body:
        params.update(request.form())
    return params


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")

"""The Telegram Bot API: invite links, messages, join requests, bans, membership checks.

Every call is `POST {base}/bot<token>/<method>` with a JSON body and answers
`{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, "description": ...,
"parameters": {...}}`, the HTTP status equal to `error_code` (5xx bodies may be HTML).
Errors follow the shared rule in `integrations.http.classify` with Telegram's own
overrides (shared/reference/external-apis.md, section 1):

- 429: wait `parameters.retry_after`, else the `Retry-After` header;
- 400 with `parameters.migrate_to_chat_id`: the group became a supergroup; the call is
  repeated at once, once, with the new id (and a WARNING names both ids);
- HIDE_REQUESTER_MISSING / USER_ALREADY_PARTICIPANT on approveChatJoinRequest: the
  request was already handled, which is what the caller wanted: success.

An error keeps Telegram's `error_code` and status with a fixed phrase for the
description (`DESCRIPTIONS`), never the description itself: Telegram can echo what it
was sent. The token is in every URL, so URLs never go into messages, logs or reprs.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx2 as httpx

from integrations.error_text import safe_code, status_phrase
from integrations.http import Http, HttpConfig, body_json, classify
from switchyard.base.errors import JobError, NotConfigured, PermanentError, RetryableError

logger = logging.getLogger("switchyard.telegram")

PROVIDER = "Telegram"
#: The public Bot API server; a self-hosted `telegram-bot-api` server works the same.
DEFAULT_API_URL = "https://api.telegram.org"
#: approveChatJoinRequest answers meaning the request is already handled.
ALREADY_APPROVED = ("HIDE_REQUESTER_MISSING", "USER_ALREADY_PARTICIPANT")
#: Our phrase for each description Telegram is known to give (matched at its start,
#: case-folded); any other description gets its status class's phrase.
DESCRIPTIONS: tuple[tuple[str, str], ...] = (
    ("bad request: chat not found", "chat not found"),
    ("bad request: user not found", "user not found"),
    ("bad request: participant_id_invalid", "user is not known to the chat "
                                            "(PARTICIPANT_ID_INVALID)"),
    ("bad request: user_id_invalid", "invalid user id (USER_ID_INVALID)"),
    ("bad request: not enough rights to restrict/unrestrict chat member",
     "the bot has not enough rights to restrict members"),
    ("bad request: not enough rights to manage chat invite link",
     "the bot has not enough rights to manage invite links"),
    ("bad request: can't remove chat owner", "the chat owner cannot be removed"),
    ("bad request: hide_requester_missing", "no such join request (HIDE_REQUESTER_MISSING)"),
    ("bad request: user_already_participant",
     "the user is already a participant (USER_ALREADY_PARTICIPANT)"),
    ("bad request: group chat was upgraded to a supergroup chat",
     "the group was upgraded to a supergroup"),
    ("bad request: message text is empty", "the message text is empty"),
    ("bad request: member_limit_invalid", "invalid member limit (MEMBER_LIMIT_INVALID)"),
    ("bad request: chat_id is empty", "no chat id given"),
    ("forbidden: bot is not a member of the", "the bot is not a member of the chat"),
    ("forbidden: bot was kicked from the", "the bot was kicked from the chat"),
    ("forbidden: bot was blocked by the user", "the bot was blocked by the user"),
    ("forbidden: bot can't initiate conversation with a user",
     "the bot cannot start a conversation with the user"),
    ("unauthorized", "the bot token was refused"),
    ("not found", "the bot token is malformed or the method unknown"),
    ("too many requests", "rate limited"),
)

#: A chat id: a number (-100... for channels and supergroups) or "@channelusername".
ChatId = int | str


class BotApi(Protocol):
    """What the bot jobs use of the Bot API (`TelegramBot`, or the development outbox)."""

    @property
    def bot_id(self) -> int: ...

    def get_me(self) -> dict[str, Any]: ...

    def create_invite_link(self, chat_id: ChatId, *, expire_date: int, member_limit: int = 1,
                           name: str | None = None) -> dict[str, Any]: ...

    def send_message(self, chat_id: ChatId, text: str, *,
                     parse_mode: str | None = None) -> dict[str, Any]: ...

    def remove_member(self, chat_id: ChatId, user_id: int) -> bool: ...

    def get_chat_member(self, chat_id: ChatId, user_id: int) -> dict[str, Any]: ...


class ChatMigrated(PermanentError):
    """The group was upgraded to a supergroup and now lives at `migrate_to_chat_id`."""

    def __init__(self, message: str, *, migrate_to_chat_id: int, code: str | int | None,
                 status: int | None) -> None:
        super().__init__(message, code=code, provider=PROVIDER, status=status)
        self.migrate_to_chat_id = migrate_to_chat_id


class TelegramBot:
    """A Bot API client; stateless apart from the pooled HTTP client, so threads share it."""

    def __init__(self, token: str, *, base_url: str = DEFAULT_API_URL,
                 config: HttpConfig | None = None) -> None:
        self._token = token
        self._http = Http(PROVIDER, base_url, config=config)

    def __repr__(self) -> str:  # the token is a full credential for the bot
        prefix = self._token.partition(":")[0]
        bot = prefix if prefix.isdigit() else "?"
        return f"TelegramBot(bot_id={bot}, base_url={self._http.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> TelegramBot:
        """The bot that TELEGRAM_BOT_TOKEN names, talking to TELEGRAM_API_URL."""
        if settings.telegram_bot_token is None:
            raise NotConfigured(PROVIDER, "TELEGRAM_BOT_TOKEN", why="Telegram bot jobs need it")
        return cls(settings.telegram_bot_token.get_secret_value(),
                   base_url=settings.telegram_api_url, config=HttpConfig.from_settings(settings))

    @property
    def bot_id(self) -> int:
        """The bot's user id: the numeric prefix of its token (no request needed)."""
        prefix = self._token.partition(":")[0]
        if not prefix.isdigit():
            raise PermanentError("the bot token is malformed", code="bad_token",
                                 provider=PROVIDER)
        return int(prefix)

    def close(self) -> None:
        self._http.close()

    # The Bot API methods the jobs use.

    def get_me(self) -> dict[str, Any]:
        """The bot's User: `{id, is_bot, first_name, username, ...}`."""
        return dict(self._call("getMe", {}))

    def create_invite_link(self, chat_id: ChatId, *, expire_date: int, member_limit: int = 1,
                           name: str | None = None) -> dict[str, Any]:
        """A ChatInviteLink (`invite_link`, `expire_date`, `member_limit`, ...).

        Single-use by default. `member_limit` cannot be combined with
        `creates_join_request`, so this never asks for join requests.
        """
        payload: dict[str, Any] = {"chat_id": chat_id, "expire_date": expire_date,
                                   "member_limit": member_limit}
        if name is not None:
            payload["name"] = name
        return dict(self._call("createChatInviteLink", payload))

    def send_message(self, chat_id: ChatId, text: str, *,
                     parse_mode: str | None = None) -> dict[str, Any]:
        """The sent Message: `{message_id, date, chat: {id, type}, text}`."""
        payload: dict[str, Any] = {"chat_id": chat_id, "text": text}
        if parse_mode is not None:
            payload["parse_mode"] = parse_mode
        return dict(self._call("sendMessage", payload))

    def approve_join_request(self, chat_id: ChatId, user_id: int) -> bool:
        """Let the user in; a request already handled (or the user already in) is success."""
        return bool(self._call("approveChatJoinRequest", {"chat_id": chat_id, "user_id": user_id},
                               already_done=ALREADY_APPROVED))

    def ban_member(self, chat_id: ChatId, user_id: int, *, until_date: int | None = None,
                   revoke_messages: bool | None = None) -> bool:
        """Remove the user and keep them out (until `until_date`, unix seconds, if given)."""
        payload: dict[str, Any] = {"chat_id": chat_id, "user_id": user_id}
        if until_date is not None:
            payload["until_date"] = until_date
        if revoke_messages is not None:
            payload["revoke_messages"] = revoke_messages
        return bool(self._call("banChatMember", payload))

    def unban_member(self, chat_id: ChatId, user_id: int) -> bool:
        """Lift a ban; `only_if_banned` keeps a current member in (and makes it idempotent)."""
        return bool(self._call("unbanChatMember",
                               {"chat_id": chat_id, "user_id": user_id, "only_if_banned": True}))

    def remove_member(self, chat_id: ChatId, user_id: int) -> bool:
        """Take the user out of the chat but let them rejoin later with a new link.

        Telegram has no "kick": ban, then unban with `only_if_banned`. Both steps are
        idempotent, so a retry after a failure between them is safe.
        """
        self.ban_member(chat_id, user_id)
        return self.unban_member(chat_id, user_id)

    def get_chat_member(self, chat_id: ChatId, user_id: int) -> dict[str, Any]:
        """A ChatMember: `{status, user, ...}`, with the `can_*` rights for administrators."""
        return dict(self._call("getChatMember", {"chat_id": chat_id, "user_id": user_id}))

    # Transport and error mapping.

    def _call(self, method: str, payload: dict[str, Any], *,
              already_done: tuple[str, ...] = ()) -> Any:
        """Call `method`, following a group's move to a supergroup once.

        A 400 whose description names one of `already_done` is success (`True`).
        """
        try:
            return self._send(method, payload, already_done)
        except ChatMigrated as moved:
            logger.warning("Telegram chat %s was upgraded to supergroup %s; %s retried there.",
                           payload.get("chat_id"), moved.migrate_to_chat_id, method)
            return self._send(method, {**payload, "chat_id": moved.migrate_to_chat_id},
                              already_done)

    def _send(self, method: str, payload: dict[str, Any], already_done: tuple[str, ...]) -> Any:
        response = self._http.request("POST", f"/bot{self._token}/{method}", json=payload)
        data = body_json(response)
        if response.status_code == 200 and isinstance(data, dict) and data.get("ok") is True:
            return data.get("result")
        error = error_from(response, data)
        if (error.status == 400 and not isinstance(error, ChatMigrated)
                and any(marker in description(data) for marker in already_done)):
            return True
        raise error


def description(data: Any) -> str:
    """Telegram's `description` of an error answer ("" when there is none)."""
    text = data.get("description") if isinstance(data, dict) else None
    return text if isinstance(text, str) else ""


def describe(text: str, status: int) -> str:
    """Our fixed phrase for a Telegram description; the description itself is not kept."""
    folded = text.casefold()
    for start, words in DESCRIPTIONS:
        if folded.startswith(start):
            return words
    return status_phrase(status)


def error_from(response: httpx.Response, data: Any) -> JobError:
    """A Bot API error answer as a job error (see the module docstring for the rules)."""
    body: dict[str, Any] = data if isinstance(data, dict) else {}
    parameters = body.get("parameters")
    if not isinstance(parameters, dict):
        parameters = {}
    code = body.get("error_code", response.status_code)
    message = describe(description(data), response.status_code)
    if response.status_code == 200:  # "ok" missing or false on a 200: a broken proxy
        return RetryableError("unreadable answer (HTTP 200)", code="bad_answer",
                              provider=PROVIDER, status=200)
    migrate_to = parameters.get("migrate_to_chat_id")
    if response.status_code == 400 and isinstance(migrate_to, int):
        return ChatMigrated(message, migrate_to_chat_id=migrate_to, code=safe_code(code),
                            status=400)
    retry_after = parameters.get("retry_after")
    wait = float(retry_after) if isinstance(retry_after, int | float) else None
    return classify(response, provider=PROVIDER, code=code, message=message, retry_after=wait)

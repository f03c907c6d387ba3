"""A loopback Discord REST v10: guilds, members, roles, interactions, webhooks and DMs.

It answers with Discord's shapes, codes and rate-limit headers
(shared/reference/external-apis.md, section 3), so the client's error mapping and bucket
tracking are tested for real, and end-to-end job tests can read what a job did
(`messages`, `interactions`, `guilds[...].members[...].roles`, `audit_log`).

Statuses the reference leaves open, chosen as Discord answers them: an unknown or
expired webhook token is 401 50027 ("401 Unauthorized (error code: 50027): Invalid
Webhook Token"), an unknown, late or expired interaction is 404 10062, a second
acknowledgement 400 40060, an unknown channel 404 10003, a follow-up before the
interaction was acknowledged 404 10015, an empty message 400 50006.

Every answer to a matched route carries `X-RateLimit-*` headers for a per-route bucket
(`bucket_limit` calls per `bucket_window` seconds, split by the major parameter); the
call past the limit gets Discord's 429. The two role routes share one bucket, as they do
on Discord. Time comes from `clock`, which a test may share with the client.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from tests.fakes.base import FakeServer, Recorded, Reply

#: Where Discord serves v10; requests may also come without it.
API_PREFIX = "/api/v10"
#: Seconds after an interaction within which its callback must arrive.
CALLBACK_DEADLINE = 3.0
#: Seconds an interaction token lives (follow-ups, edits).
TOKEN_LIFETIME = 900.0
#: Longest message content Discord takes.
MAX_CONTENT = 2_000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
BOT_USER = {"id": "1000000000000000001", "username": "switchyard", "bot": True}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class User:
    id: str
    username: str
    accepts_dms: bool = True

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "global_name": None, "avatar": None}


@dataclass
class Member:
    user: User
    roles: list[str]
    nick: str | None = None
    joined_at: str = field(default_factory=_now_iso)


@dataclass
class Role:
    id: str
    name: str
    above_bot: bool = False  # higher than the bot's top role: 50013 on assignment


@dataclass
class Guild:
    id: str
    access: bool = True  # False: the bot is not in it any more (403 50001)
    roles: dict[str, Role] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)


@dataclass
class Interaction:
    id: str
    token: str
    application_id: str
    channel_id: str
    created: float
    acknowledged: bool = False
    ephemeral: bool = False
    original: dict[str, Any] | None = None
    followups: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: str
    bucket: str  # routes sharing a name share a bucket
    major: tuple[str, ...]
    bot: bool = True  # needs `Authorization: Bot <token>`


def _route(method: str, path: str, handler: str, bucket: str, major: tuple[str, ...],
           bot: bool = True) -> _Route:
    return _Route(method, re.compile(f"^{path}$"), handler, bucket, major, bot)


_ROUTES = [
    _route("POST", r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback",
           "_callback", "interaction_callback", ("interaction_id", "token"), bot=False),
    _route("POST", r"/webhooks/(?P<application_id>\d+)/(?P<token>[^/]+)", "_follow_up",
           "webhook_execute", ("application_id", "token"), bot=False),
    _route("PATCH", r"/webhooks/(?P<application_id>\d+)/(?P<token>[^/]+)/messages/@original",
           "_edit_original", "webhook_edit", ("application_id", "token"), bot=False),
    _route("PUT", r"/guilds/(?P<guild_id>\d+)/members/(?P<user_id>\d+)/roles/(?P<role_id>\d+)",
           "_add_role", "member_roles", ("guild_id",)),
    _route("DELETE",
           r"/guilds/(?P<guild_id>\d+)/members/(?P<user_id>\d+)/roles/(?P<role_id>\d+)",
           "_remove_role", "member_roles", ("guild_id",)),
    _route("GET", r"/guilds/(?P<guild_id>\d+)/members/(?P<user_id>\d+)", "_get_member",
           "member", ("guild_id",)),
    _route("POST", r"/users/@me/channels", "_open_dm", "dm_create", ()),
    _route("POST", r"/channels/(?P<channel_id>\d+)/messages", "_send_message",
           "channel_messages", ("channel_id",)),
]


#: Discord's epoch: snowflakes count milliseconds from 2015-01-01T00:00:00Z.
DISCORD_EPOCH_MS = 1_420_070_400_000
_increment = itertools.count()


def snowflake(at_ms: int | None = None) -> str:
    """A snowflake made at `at_ms` (ms since the Unix epoch; default now), as Discord's:
    the timestamp in the top 42 bits, an increment in the low 12."""
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    return str(((at_ms - DISCORD_EPOCH_MS) << 22) | (next(_increment) % 4096))


def bucket_hash(name: str) -> str:
    """The opaque hash Discord names a bucket by (stable per route group)."""
    return hashlib.sha256(name.encode()).hexdigest()[:32]


@dataclass
class _Window:
    used: int
    reset_at: float


class DiscordFake(FakeServer):
    """A stateful Discord for one bot: give it guilds, members and interactions."""

    def __init__(self, token: str = "fake-bot-token", *, bucket_limit: int = 5,
                 bucket_window: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.token = token
        self.bucket_limit = bucket_limit
        self.bucket_window = bucket_window
        self.clock = clock
        self.guilds: dict[str, Guild] = {}
        self.users: dict[str, User] = {}
        self.interactions: dict[str, Interaction] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.dm_channels: dict[str, str] = {}  # user id -> channel id
        self.messages: list[dict[str, Any]] = []
        self.audit_log: list[dict[str, Any]] = []
        self._windows: dict[tuple[str, str], _Window] = {}
        self._state = threading.RLock()
        self._next_id = 1_200_000_000_000_000_000
        super().__init__()

    @property
    def api_url(self) -> str:
        """The base URL to give the client, like https://discord.com/api/v10."""
        return self.url + API_PREFIX

    # Setting the scene -------------------------------------------------------------

    def add_guild(self, guild_id: str, *, access: bool = True) -> Guild:
        with self._state:
            return self.guilds.setdefault(guild_id, Guild(guild_id, access=access))

    def add_role(self, guild_id: str, role_id: str, name: str = "role", *,
                 above_bot: bool = False) -> Role:
        with self._state:
            role = Role(role_id, name, above_bot)
            self.add_guild(guild_id).roles[role_id] = role
            return role

    def add_user(self, user_id: str, username: str, *, accepts_dms: bool = True) -> User:
        with self._state:
            user = self.users.setdefault(user_id, User(user_id, username))
            user.accepts_dms = accepts_dms
            return user

    def add_member(self, guild_id: str, user_id: str, username: str, *,
                   roles: list[str] | tuple[str, ...] = (), nick: str | None = None,
                   accepts_dms: bool = True) -> Member:
        with self._state:
            user = self.add_user(user_id, username, accepts_dms=accepts_dms)
            member = Member(user, list(roles), nick)
            self.add_guild(guild_id).members[user_id] = member
            return member

    def add_channel(self, channel_id: str, guild_id: str, name: str = "general") -> None:
        with self._state:
            self.add_guild(guild_id)
            self.channels[channel_id] = {"id": channel_id, "type": 0, "guild_id": guild_id,
                                         "name": name}

    def add_interaction(self, interaction_id: str, token: str, application_id: str, *,
                        channel_id: str = "0", age: float = 0.0) -> Interaction:
        """An interaction a user just triggered (`age` seconds ago)."""
        with self._state:
            interaction = Interaction(interaction_id, token, application_id, channel_id,
                                      created=self.clock() - age)
            self.interactions[interaction_id] = interaction
            return interaction

    def new_interaction(self, application_id: str, *, channel_id: str = "0",
                        age: float = 0.0) -> Interaction:
        """An interaction whose snowflake says it was made `age` seconds ago, as the
        gateway would publish it (its token is random)."""
        made_ms = int((time.time() - age) * 1000)
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(24)
        return self.add_interaction(snowflake(made_ms), token, application_id,
                                    channel_id=channel_id, age=age)

    def roles_of(self, guild_id: str, user_id: str) -> list[str]:
        with self._state:
            return list(self.guilds[guild_id].members[user_id].roles)

    # Replies a test can script -------------------------------------------------------

    @staticmethod
    def error(status: int, code: int, message: str, errors: dict[str, Any] | None = None,
              **headers: str) -> Reply:
        """Discord's error body: `{"code", "message", "errors"?}`."""
        body: dict[str, Any] = {"message": message, "code": code}
        if errors is not None:
            body["errors"] = errors
        return Reply(status, json=body, headers=dict(headers))

    @staticmethod
    def rate_limited(retry_after: float = 64.57, *, scope: str = "user",
                     bucket: str | None = None) -> Reply:
        """A 429 with Discord's body and headers (scope user, global or shared)."""
        is_global = scope == "global"
        headers = {"Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": scope}
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        else:
            headers.update({"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                            "X-RateLimit-Bucket": bucket or bucket_hash("scripted")})
        body = {"message": "You are being rate limited.", "retry_after": retry_after,
                "global": is_global}
        return Reply(429, json=body, headers=headers)

    @classmethod
    def global_429(cls, retry_after: float = 64.57) -> Reply:
        return cls.rate_limited(retry_after, scope="global")

    @classmethod
    def shared_429(cls, retry_after: float = 64.57, *, bucket: str | None = None) -> Reply:
        return cls.rate_limited(retry_after, scope="shared", bucket=bucket)

    def echo_into(self, reply: Reply, text: str) -> Reply:
        """Discord's `message` and each form error's, repeating what it was sent."""
        body = copy.deepcopy(reply.json)
        if isinstance(body, dict) and "message" in body:
            body["message"] = f"{body['message']}: {text}"
            _echo_form_errors(body.get("errors"), text)
        return dataclasses.replace(reply, json=body)

    # Serving -------------------------------------------------------------------------

    def handle(self, request: Recorded) -> Reply:
        path = request.path.removeprefix(API_PREFIX)
        found = self._match(request.method, path)
        if isinstance(found, Reply):
            return found
        route, params = found
        if route.bot and request.headers.get("authorization") != f"Bot {self.token}":
            return self.error(401, 0, "401: Unauthorized")
        with self._state:
            refused, headers = self._spend(route, params)
            reply = refused or getattr(self, route.handler)(request, params)
        reply.headers = {**headers, **reply.headers}
        return reply

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | Reply:
        path_known = False
        for route in _ROUTES:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method == method:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
            path_known = True
        if path_known:
            return self.error(405, 0, "405: Method Not Allowed")
        return self.error(404, 0, "404: Not Found")

    def _spend(self, route: _Route, params: dict[str, str]) -> tuple[Reply | None, dict[str, str]]:
        """Count the call against its bucket; past the limit, Discord's 429."""
        name = bucket_hash(route.bucket)
        key = (name, ":".join(params[p] for p in route.major))
        now = self.clock()
        window = self._windows.get(key)
        if window is None or window.reset_at <= now:
            window = self._windows[key] = _Window(0, now + self.bucket_window)
        reset_after = window.reset_at - now
        limited = window.used >= self.bucket_limit
        window.used += 0 if limited else 1
        headers = {
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": str(max(0, self.bucket_limit - window.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": name,
        }
        if not limited:
            return None, headers
        refused = self.rate_limited(round(reset_after, 3), scope="user", bucket=name)
        return refused, {**headers, **refused.headers}

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def _message(self, channel_id: str, content: str, *, flags: int = 0,
                 webhook_id: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self._new_id(), "type": 0, "channel_id": channel_id, "content": content,
            "author": dict(BOT_USER), "timestamp": _now_iso(), "edited_timestamp": None,
            "flags": flags, "mentions": [], "attachments": [], "embeds": [],
        }
        if webhook_id is not None:
            message["webhook_id"] = webhook_id
            message["application_id"] = webhook_id
        self.messages.append(message)
        return message

    # Interactions and their webhooks ---------------------------------------------------

    def _callback(self, request: Recorded, params: dict[str, str]) -> Reply:
        interaction = self.interactions.get(params["interaction_id"])
        late = interaction is not None and self.clock() - interaction.created > CALLBACK_DEADLINE
        if interaction is None or interaction.token != params["token"] or (
                late and not interaction.acknowledged):
            return self.error(404, 10062, "Unknown interaction")
        if interaction.acknowledged:
            return self.error(400, 40060, "Interaction has already been acknowledged.")
        body = request.json()
        data = body.get("data", {}) if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("type") != 5:
            return self._invalid_form("type", "Value must be one of {5}.", "BASE_TYPE_CHOICES")
        if not isinstance(data, dict) or set(data) - {"flags"}:
            return self._invalid_form("data", "Only flags may be set on a deferred reply.")
        interaction.acknowledged = True
        interaction.ephemeral = bool(int(data.get("flags") or 0) & EPHEMERAL)
        flags = LOADING | (EPHEMERAL if interaction.ephemeral else 0)
        interaction.original = self._message(interaction.channel_id, "", flags=flags,
                                             webhook_id=interaction.application_id)
        return Reply(204)

    def _webhook(self, params: dict[str, str]) -> Interaction | Reply:
        """The live interaction behind a webhook token, or Discord's refusal."""
        for interaction in self.interactions.values():
            if (interaction.token == params["token"]
                    and interaction.application_id == params["application_id"]
                    and self.clock() - interaction.created <= TOKEN_LIFETIME):
                if not interaction.acknowledged:
                    return self.error(404, 10015, "Unknown Webhook")
                return interaction
        return self.error(401, 50027, "Invalid Webhook Token")

    def _follow_up(self, request: Recorded, params: dict[str, str]) -> Reply:
        interaction = self._webhook(params)
        if isinstance(interaction, Reply):
            return interaction
        content, refused = self._content(request)
        if refused is not None:
            return refused
        body = request.json()
        flags = int(body.get("flags") or 0) & EPHEMERAL
        message = self._message(interaction.channel_id, content, flags=flags,
                                webhook_id=interaction.application_id)
        interaction.followups.append(message)
        return Reply(200, json=message)

    def _edit_original(self, request: Recorded, params: dict[str, str]) -> Reply:
        interaction = self._webhook(params)
        if isinstance(interaction, Reply):
            return interaction
        if interaction.original is None:
            return self.error(404, 10008, "Unknown Message")
        content, refused = self._content(request)
        if refused is not None:
            return refused
        original = interaction.original
        original.update(content=content, flags=original["flags"] & ~LOADING,
                        edited_timestamp=_now_iso())
        return Reply(200, json=original)

    # Guilds, members and roles ---------------------------------------------------------

    def _guild_member(self, params: dict[str, str]) -> tuple[Guild, Member] | Reply:
        guild = self.guilds.get(params["guild_id"])
        if guild is None:
            return self.error(404, 10004, "Unknown Guild")
        if not guild.access:
            return self.error(403, 50001, "Missing Access")
        member = guild.members.get(params["user_id"])
        if member is None:
            return self.error(404, 10007, "Unknown Member")
        return guild, member

    def _role_change(self, request: Recorded, params: dict[str, str]) -> Member | Reply:
        found = self._guild_member(params)
        if isinstance(found, Reply):
            return found
        guild, member = found
        role = guild.roles.get(params["role_id"])
        if role is None:
            return self.error(404, 10011, "Unknown Role")
        if role.above_bot:
            return self.error(403, 50013, "Missing Permissions")
        self.audit_log.append({"action": request.method, "guild_id": guild.id,
                               "user_id": member.user.id, "role_id": role.id,
                               "reason": unquote(request.headers.get("x-audit-log-reason", ""))
                               or None})
        return member

    def _add_role(self, request: Recorded, params: dict[str, str]) -> Reply:
        member = self._role_change(request, params)
        if isinstance(member, Reply):
            return member
        if params["role_id"] not in member.roles:
            member.roles.append(params["role_id"])
        return Reply(204)

    def _remove_role(self, request: Recorded, params: dict[str, str]) -> Reply:
        member = self._role_change(request, params)
        if isinstance(member, Reply):
            return member
        if params["role_id"] in member.roles:
            member.roles.remove(params["role_id"])
        return Reply(204)

    def _get_member(self, request: Recorded, params: dict[str, str]) -> Reply:
        found = self._guild_member(params)
        if isinstance(found, Reply):
            return found
        _, member = found
        return Reply(200, json={
            "user": member.user.public(), "nick": member.nick, "roles": list(member.roles),
            "joined_at": member.joined_at, "deaf": False, "mute": False, "flags": 0,
        })

    # DMs and channel messages ----------------------------------------------------------

    def _open_dm(self, request: Recorded, params: dict[str, str]) -> Reply:
        body = request.json()
        recipient = body.get("recipient_id") if isinstance(body, dict) else None
        user = self.users.get(str(recipient))
        if user is None:
            return self._invalid_form("recipient_id", "Value is not snowflake.",
                                      "NUMBER_TYPE_COERCE")
        channel_id = self.dm_channels.get(user.id)
        if channel_id is None:
            channel_id = self.dm_channels[user.id] = self._new_id()
            self.channels[channel_id] = {"id": channel_id, "type": 1, "last_message_id": None,
                                         "recipients": [user.public()]}
        return Reply(200, json=self.channels[channel_id])

    def _send_message(self, request: Recorded, params: dict[str, str]) -> Reply:
        channel = self.channels.get(params["channel_id"])
        if channel is None:
            return self.error(404, 10003, "Unknown Channel")
        if channel["type"] == 1:
            recipient = self.users[channel["recipients"][0]["id"]]
            if not recipient.accepts_dms:
                return self.error(403, 50007, "Cannot send messages to this user")
        elif not self.guilds[channel["guild_id"]].access:
            return self.error(403, 50001, "Missing Access")
        content, refused = self._content(request)
        if refused is not None:
            return refused
        message = self._message(channel["id"], content)
        channel["last_message_id"] = message["id"]
        return Reply(200, json=message)

    def _content(self, request: Recorded) -> tuple[str, Reply | None]:
        body = request.json()
        content = body.get("content") if isinstance(body, dict) else None
        if not content:
            return "", self.error(400, 50006, "Cannot send an empty message")
        if not isinstance(content, str) or len(content) > MAX_CONTENT:
            return "", self._invalid_form(
                "content", f"Must be {MAX_CONTENT} or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        return content, None

    def _invalid_form(self, field_name: str, message: str, code: str = "INVALID") -> Reply:
        errors = {field_name: {"_errors": [{"code": code, "message": message}]}}
        return self.error(400, 50035, "Invalid Form Body", errors)


def _echo_form_errors(errors: Any, text: str) -> None:
    """Form errors quote the value they refuse ('Value "..." is not snowflake.')."""
    if not isinstance(errors, dict):
        return
    for key, value in errors.items():
        if key == "_errors" and isinstance(value, list):
            for item in value:
                item["message"] = f'Value "{text}" is invalid. {item.get("message")}'
        else:
            _echo_form_errors(value, text)

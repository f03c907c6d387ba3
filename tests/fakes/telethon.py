"""A stand-in for Telethon's `TelegramClient`: there is no MTProto test server.

`StandIn` has the part of the client the gateway uses, answers with real TL objects
and raises real Telethon exception instances, so the adapter's mapping is what is
tested. `echo()` makes a step fail with an RPC error whose text repeats what the step
was given, as the text of an error Telethon does not know is whatever the server sent.
`ScriptedStandIn` lets a test in another process (the end-to-end worker) define
channels and failures through Redis (`TelethonScript`).
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import redis
from telethon import errors
from telethon.tl import types


class StandIn:
    """The part of TelegramClient the gateway uses, with scripted failures and a call log."""

    def __init__(self, *, authorized: bool = True) -> None:
        self.authorized = authorized
        self.calls: list[str] = []
        self.by_username: dict[str, Any] = {}
        self.by_invite: dict[str, types.Channel] = {}
        self.channels: dict[int, types.Channel] = {}
        self.participants: dict[int, int | None] = {}
        self.joined: set[int] = set()  # channels the account is in
        self.cached: set[int] = set()  # channels whose access hash the session holds
        self.failures: dict[str, list[BaseException]] = {}
        self.echoes: dict[str, tuple[str, int]] = {}  # step -> (RPC name, code)
        self.hang_on: str | None = None
        self.calls_at_once = 0

    def add_channel(self, channel_id: int, title: str, *, username: str | None = None,
                    invite: str | None = None, participants: int | None = None,
                    joined: bool = False, cached: bool = True) -> types.Channel:
        channel = types.Channel(id=channel_id, title=title, photo=types.ChatPhotoEmpty(),
                                date=None, access_hash=channel_id * 7, username=username,
                                broadcast=True)
        self.channels[channel_id] = channel
        self.participants[channel_id] = participants
        if username:
            self.by_username[username] = channel
        if invite:
            self.by_invite[invite] = channel
        if joined:
            self.joined.add(channel_id)
        if cached:
            self.cached.add(channel_id)
        return channel

    def fail(self, step: str, error: BaseException) -> None:
        """Raise `error` the next time `step` (a method or a request class name) runs."""
        self.failures.setdefault(step, []).append(error)

    def echo(self, step: str, rpc: str, code: int = 400) -> None:
        """Fail `step` once with RPC error `rpc` (code `code`) whose text repeats its input."""
        self.echoes[step] = (rpc, code)

    async def _step(self, name: str, given: Any = None) -> None:
        self.calls.append(name)
        if self.hang_on == name:
            await asyncio.Event().wait()  # never answers; the gateway's timeout must fire
        if self.failures.get(name):
            raise self.failures[name].pop(0)
        if name in self.echoes:
            rpc, code = self.echoes.pop(name)
            kind = _RPC_KINDS.get(code, errors.RPCError)
            raise kind(given if hasattr(given, "to_dict") else None,
                       f"{rpc} {_inputs(given)}", code)

    # TelegramClient's surface.

    async def connect(self) -> None:
        # A real connect takes a while: hold it until `calls_at_once` calls are in flight
        # (polling with a deadline), so they all find the gateway still connecting.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(asyncio.all_tasks()) < self.calls_at_once and loop.time() < deadline:
            await asyncio.sleep(0.001)
        await self._step("connect")

    async def is_user_authorized(self) -> bool:
        await self._step("is_user_authorized")
        return self.authorized

    async def disconnect(self) -> None:
        await self._step("disconnect")

    async def get_entity(self, username: str) -> Any:
        await self._step("get_entity", username)
        name = username.removeprefix("@")
        if name not in self.by_username:
            raise ValueError(f'No user has "{name}" as username')
        return self.by_username[name]

    async def get_input_entity(self, peer: types.PeerChannel) -> types.InputPeerChannel:
        await self._step("get_input_entity")
        if peer.channel_id not in self.cached:
            raise ValueError(f"Could not find the input entity for {peer} (PeerChannel). "
                             "Please read https://docs.telethon.dev/en/stable/concepts/"
                             "entities.html to find out more details.")
        return types.InputPeerChannel(peer.channel_id, peer.channel_id * 7)

    async def get_dialogs(self) -> list[Any]:
        await self._step("get_dialogs")
        self.cached |= self.joined
        return []

    async def __call__(self, request: Any) -> Any:
        name = type(request).__name__
        await self._step(name, request)
        return getattr(self, "_" + name)(request)

    # The requests, answered the way Telegram does.

    def _JoinChannelRequest(self, request: Any) -> Any:  # noqa: N802
        self.joined.add(request.channel.id)
        return _updates(request.channel)

    def _ImportChatInviteRequest(self, request: Any) -> Any:  # noqa: N802
        channel = self.by_invite.get(request.hash)
        if channel is None:
            raise errors.InviteHashInvalidError(request=request)
        if channel.id in self.joined:
            raise errors.UserAlreadyParticipantError(request=request)
        self.joined.add(channel.id)
        return _updates(channel)

    def _CheckChatInviteRequest(self, request: Any) -> Any:  # noqa: N802
        channel = self.by_invite[request.hash]
        if channel.id in self.joined:
            return types.ChatInviteAlready(chat=channel)
        return types.ChatInvitePeek(chat=channel, expires=None)

    def _LeaveChannelRequest(self, request: Any) -> Any:  # noqa: N802
        channel_id = request.channel.channel_id
        if channel_id not in self.joined:
            raise errors.UserNotParticipantError(request=request)
        self.joined.discard(channel_id)
        return _updates()

    def _GetFullChannelRequest(self, request: Any) -> Any:  # noqa: N802
        count = self.participants[request.channel.id]
        return SimpleNamespace(full_chat=SimpleNamespace(participants_count=count))


#: The Telethon class an RPC error of each code is raised as.
_RPC_KINDS: dict[int, type[errors.RPCError]] = {
    400: errors.BadRequestError, 403: errors.ForbiddenError, 420: errors.FloodError,
    500: errors.ServerError,
}


def _inputs(given: Any) -> str:
    """What a step was given, as a server would repeat it: a request's fields, or a string."""
    if hasattr(given, "to_dict"):
        return " ".join(str(v) for k, v in given.to_dict().items() if k != "_")
    return str(given)


def _updates(*chats: Any) -> types.Updates:
    return types.Updates(updates=[], users=[], chats=list(chats), date=None, seq=0)


class TelethonScript:
    """The test's side: channels and failures for a `ScriptedStandIn` in a worker."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client: Any = client  # redis-py's annotations mix sync and async results
        self.key = f"{prefix}:telethon"

    def add_channel(self, channel_id: int, title: str, *, username: str | None = None,
                    invite: str | None = None, participants: int | None = None) -> None:
        self.client.hset(f"{self.key}:channels", str(channel_id), json.dumps(
            {"title": title, "username": username, "invite": invite,
             "participants": participants}))

    def fail(self, step: str, error: str, *, seconds: int | None = None) -> None:
        """Raise Telethon's `error` (a class name in telethon.errors) at `step` once."""
        self.client.rpush(f"{self.key}:fail:{step}", json.dumps([error, seconds]))

    def calls(self) -> list[str]:
        return [c.decode() for c in self.client.lrange(f"{self.key}:calls", 0, -1)]


class ScriptedStandIn(StandIn):
    """A `StandIn` whose channels and failures come from a `TelethonScript`."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        super().__init__()
        self.script = TelethonScript(client, prefix)

    async def _step(self, name: str, given: Any = None) -> None:
        script = self.script
        for channel_id, raw in script.client.hgetall(f"{script.key}:channels").items():
            if int(channel_id) not in self.channels:
                spec = json.loads(raw)
                self.add_channel(int(channel_id), spec["title"], username=spec["username"],
                                 invite=spec["invite"], participants=spec["participants"])
        script.client.rpush(f"{script.key}:calls", name)
        failure = script.client.lpop(f"{script.key}:fail:{name}")
        if failure is not None:
            error, seconds = json.loads(failure)
            raise telethon_error(error, seconds)
        await super()._step(name, given)


def telethon_error(name: str, seconds: int | None = None) -> BaseException:
    """A real Telethon exception, built without a connection."""
    cls = getattr(errors, name)
    if seconds is not None:
        return cls(request=None, capture=seconds)  # type: ignore[no-any-return]
    return cls(request=None)  # type: ignore[no-any-return]

"""A Telegram user account (MTProto, through Telethon) that joins and leaves channels.

Jobs see the small `TelegramGateway` protocol; `TelethonGateway` is its adapter and
only maps Telethon's exceptions (shared/reference/external-apis.md, section 2):

- FLOOD_WAIT / FLOOD_PREMIUM_WAIT / SLOWMODE_WAIT -> `RateLimited(seconds)`;
- Telegram-side failures, network errors and timeouts -> `RetryableError`;
- private/invalid channels, unknown usernames, dead invite links, too many channels
  -> `PermanentError` with the RPC name as `code` (`CHANNEL_PRIVATE`, ...);
- a logged-out, revoked or banned account -> `SessionDead`: logged at CRITICAL once,
  then every call fails fast without contacting Telegram;
- already a participant (join), not a participant (leave) -> success; a join request
  sent for approval -> `JoinPending`.

RPC errors the table does not name follow their MTProto code: 401 means the session
cannot act (SessionDead); other 4xx (400, 403, 404, 406) are the request's fault
(PermanentError); 420 is a flood limit (RateLimited when it names seconds); 303, 5xx
and anything else are Telegram's trouble (RetryableError).

An error keeps the RPC name as its code (only when it is a plain RPC name) with a fixed
phrase for it (`RPC_PHRASES`), never the text of Telethon's exception: an unknown RPC
error's text is whatever the server sent, and Telethon's ValueErrors quote the username
or invite they were given. Those exceptions are not chained onto the job error either.

Telethon is asyncio, the workers are threads: each gateway runs one event loop in a
daemon thread and every call is submitted to it, so one client serves every thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from telethon import errors, utils
from telethon.errors import rpcerrorlist
from telethon.tl import functions, types

from integrations.error_text import safe_code
from integrations.telegram_gateway import ChannelInfo, JoinPending
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)

logger = logging.getLogger("switchyard.telegram_user")

PROVIDER = "Telegram user"
#: Longest wait for one gateway call (connect included), in milliseconds.
DEFAULT_TIMEOUT_MS = 60_000

T = TypeVar("T")


class SessionDead(PermanentError):
    """The account's session is logged out, revoked or banned: someone must log in again."""


# Classification.

#: Telethon error classes mapped back to Telegram's RPC names (FLOOD_WAIT_X -> FLOOD_WAIT).
_RPC_NAMES: dict[type, str] = {
    **{cls: pattern.split("_(")[0] for pattern, cls in rpcerrorlist.rpc_errors_re},
    **{cls: name for name, cls in reversed(list(rpcerrorlist.rpc_errors_dict.items()))},
}
_WAITS = (errors.FloodWaitError, errors.FloodPremiumWaitError, errors.SlowModeWaitError)
_SESSION_DEAD = (
    errors.AuthKeyUnregisteredError, errors.SessionRevokedError, errors.UserDeactivatedError,
    errors.UserDeactivatedBanError, errors.AuthKeyDuplicatedError, errors.UnauthorizedError,
)
_TRANSIENT = (errors.ServerError, errors.TimedOutError, errors.RpcCallFailError,
              errors.InvalidDCError)
#: The reference's permanent rows; other 4xx fall under the same rule.
_PERMANENT = (
    errors.ChannelPrivateError, errors.ChannelInvalidError, errors.UsernameNotOccupiedError,
    errors.UsernameInvalidError, errors.InviteHashExpiredError, errors.InviteHashInvalidError,
    errors.ChannelsTooMuchError, errors.UserChannelsTooMuchError,
)


#: An RPC name at the start of a server's error text: upper case, digits and `_`.
_RPC_NAME = re.compile(r"[A-Z][A-Z0-9_]*(?![A-Za-z0-9_])")
#: Our phrase for each RPC name the reference names; others get their class's phrase.
RPC_PHRASES: dict[str, str] = {
    "FLOOD_WAIT": "Telegram asked to wait before the next request",
    "FLOOD_PREMIUM_WAIT": "Telegram asked to wait before the next request",
    "SLOWMODE_WAIT": "slow mode: Telegram asked to wait before the next request",
    "CHANNEL_PRIVATE": "the channel is private, or this account is banned from it",
    "CHANNEL_INVALID": "the channel is invalid",
    "USERNAME_NOT_OCCUPIED": "nothing on Telegram has that username",
    "USERNAME_INVALID": "the username is invalid",
    "INVITE_HASH_EXPIRED": "the invite link has expired",
    "INVITE_HASH_INVALID": "the invite link is invalid",
    "CHANNELS_TOO_MUCH": "this account is in too many channels",
    "USER_CHANNELS_TOO_MUCH": "this account is in too many channels",
    "AUTH_KEY_UNREGISTERED": "the session is logged out",
    "SESSION_REVOKED": "the session was revoked",
    "SESSION_EXPIRED": "the session has expired",
    "USER_DEACTIVATED": "the account was deleted",
    "USER_DEACTIVATED_BAN": "the account was banned",
    "AUTH_KEY_DUPLICATED": "the session was used from two places at once",
    "RPC_CALL_FAIL": "Telegram failed to call an internal service",
}


def rpc_name(error: errors.RPCError) -> str:
    """Telegram's own name for an RPC error (`CHANNEL_PRIVATE`, `FLOOD_WAIT`, ...).

    Telethon knows most names; for an unknown one only a plain name at the start of the
    server's text is taken, else the Telethon class's own name for its kind of error.
    """
    known = _RPC_NAMES.get(type(error))
    if known is not None:
        return known
    found = _RPC_NAME.match(error.message) if isinstance(error.message, str) else None
    name = safe_code(found.group()) if found else None
    kind = getattr(type(error), "message", None)
    return str(name or (kind if isinstance(kind, str) else type(error).__name__))


def _rpc_phrase(error: errors.RPCError, name: str) -> str:
    """Our fixed phrase for an RPC error: its name's, else its class's."""
    known = RPC_PHRASES.get(name)
    if known is not None:
        return known
    if isinstance(error, _SESSION_DEAD):
        return "the session cannot act (logged out, revoked or banned)"
    if isinstance(error, errors.FloodError):
        return "Telegram asked to slow down"
    if isinstance(error, _TRANSIENT):
        return "Telegram had a server-side failure"
    if 400 <= abs(error.code or 0) < 500:
        return "Telegram refused the request"
    return "Telegram failed the request"


def classify_telethon(error: BaseException) -> JobError:
    """Any Telethon failure as a job error; success answers are the callers' business."""
    if isinstance(error, errors.RPCError):
        return _classify_rpc(error)
    if isinstance(error, ValueError):
        return _classify_value_error(error)
    if isinstance(error, TimeoutError):  # asyncio.TimeoutError is this one too
        return RetryableError("Telegram did not answer in time", code="timeout",
                              provider=PROVIDER)
    if isinstance(error, OSError):
        return RetryableError(f"Telegram could not be reached ({type(error).__name__})",
                              code="network", provider=PROVIDER)
    # Not one of Telethon's documented failures: retry it, within the retry budget.
    return RetryableError(f"unexpected {type(error).__name__}", code=type(error).__name__,
                          provider=PROVIDER)


def _classify_rpc(error: errors.RPCError) -> JobError:
    name = rpc_name(error)
    message = _rpc_phrase(error, name)
    seconds = getattr(error, "seconds", None)
    if isinstance(error, _WAITS) or (isinstance(error, errors.FloodError)
                                     and isinstance(seconds, int)):
        return RateLimited(message, retry_after=max(0, seconds or 0), code=name,
                           provider=PROVIDER)
    if isinstance(error, _SESSION_DEAD):
        return SessionDead(message, code=name, provider=PROVIDER)
    if isinstance(error, _TRANSIENT + (errors.FloodError,)):
        return RetryableError(message, code=name, provider=PROVIDER)
    if isinstance(error, _PERMANENT) or 400 <= abs(error.code or 0) < 500:
        return PermanentError(message, code=name, provider=PROVIDER)
    return RetryableError(message, code=name, provider=PROVIDER)


def _classify_value_error(error: ValueError) -> JobError:
    """Telethon reports some failures as ValueError; the text tells which."""
    text = str(error)
    if text.startswith("Request was unsuccessful"):  # its own retries ran out
        return RetryableError("Telegram did not answer after several tries",
                              code="REQUEST_UNSUCCESSFUL", provider=PROVIDER)
    if text.startswith(("No user has", "Cannot find any entity corresponding")):
        return PermanentError("nothing on Telegram has that username",
                              code="USERNAME_NOT_OCCUPIED", provider=PROVIDER)
    if text.startswith("Could not find the input entity"):
        return PermanentError("this account does not know that chat",
                              code="ENTITY_NOT_FOUND", provider=PROVIDER)
    return PermanentError("Telethon refused an argument of the request",
                          code="INVALID_ARGUMENT", provider=PROVIDER)


# The adapter.

def _is_missing_entity(error: ValueError) -> bool:
    return str(error).startswith("Could not find the input entity")


class TelethonGateway:
    """`TelegramGateway` on a Telethon client logged in as a user (a StringSession).

    `client_factory` builds the client inside the gateway's loop; tests hand in a
    stand-in that raises real Telethon exceptions (there is no MTProto test server).
    """

    def __init__(self, api_id: int, api_hash: str, session: str, *,
                 client_factory: Callable[[], Any] | None = None,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.api_id = api_id
        self._api_hash, self._session = api_hash, session
        self._factory = client_factory or self._telethon_client
        self._timeout_s = timeout_ms / 1000
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._connecting: asyncio.Lock | None = None
        self._connected = False
        self._dead: SessionDead | None = None

    def __repr__(self) -> str:  # the session string is a full login: never show it
        state = "dead" if self._dead else "connected" if self._connected else "idle"
        return f"TelethonGateway(api_id={self.api_id}, session=[redacted], {state})"

    @classmethod
    def from_settings(cls, settings: Any) -> TelethonGateway:
        """The account TELEGRAM_API_ID / TELEGRAM_API_HASH / TELEGRAM_SESSION log in as."""
        why = "channel joins and leaves need it"
        if settings.telegram_api_id is None:
            raise NotConfigured(PROVIDER, "TELEGRAM_API_ID", why=why)
        if settings.telegram_api_hash is None:
            raise NotConfigured(PROVIDER, "TELEGRAM_API_HASH", why=why)
        if settings.telegram_session is None:
            raise NotConfigured(PROVIDER, "TELEGRAM_SESSION", why=why)
        return cls(settings.telegram_api_id, settings.telegram_api_hash.get_secret_value(),
                   settings.telegram_session.get_secret_value())

    # TelegramGateway.

    def resolve(self, username: str) -> ChannelInfo:
        """The public channel behind `username`, without joining it."""
        async def run(client: Any) -> ChannelInfo:
            return await _info(client, await _channel(client, username))
        return self._run(run)

    def join_public(self, username: str) -> ChannelInfo:
        """Join a public channel; already being in it is success."""
        async def run(client: Any) -> ChannelInfo:
            channel = await _channel(client, username)
            with contextlib.suppress(errors.UserAlreadyParticipantError):
                await client(functions.channels.JoinChannelRequest(channel))
            return await _info(client, channel)
        return self._run(run)

    def join_invite(self, invite_hash: str) -> ChannelInfo | JoinPending:
        """Join through a private invite (`t.me/+HASH` or the bare hash)."""
        code = _invite_hash(invite_hash)

        async def run(client: Any) -> ChannelInfo | JoinPending:
            try:
                updates = await client(functions.messages.ImportChatInviteRequest(code))
            except errors.UserAlreadyParticipantError:
                chat = await _invited_chat(client, code)
            except errors.InviteRequestSentError:
                return JoinPending()
            else:
                chats = getattr(updates, "chats", None) or []
                chat = chats[0] if chats else await _invited_chat(client, code)
            return await _info(client, chat)
        return self._run(run)

    def leave(self, telegram_id: int) -> None:
        """Leave a channel (marked -100... or bare id); not being in it is success."""
        peer = _channel_peer(telegram_id)

        async def run(client: Any) -> None:
            entity = await _input_entity(client, peer)
            if entity is None:
                return  # not among this account's chats: already left
            with contextlib.suppress(errors.UserNotParticipantError):
                await client(functions.channels.LeaveChannelRequest(entity))
        self._run(run)

    def close(self) -> None:
        """Disconnect and stop the loop thread; the next call starts them again."""
        with self._lock:
            loop, thread, client = self._loop, self._thread, self._client
            self._loop = self._thread = self._client = self._connecting = None
            self._connected = False
        if loop is None:
            return
        if client is not None:
            future = asyncio.run_coroutine_threadsafe(_disconnect(client), loop)
            _wait_quietly(future, self._timeout_s)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(self._timeout_s)
        loop.close()

    # Running coroutines on the gateway's loop.

    def _run(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        """Run `operation(client)` on the loop; classify what escapes it."""
        self._fail_fast()
        future = asyncio.run_coroutine_threadsafe(self._with_client(operation),
                                                  self._running_loop())
        try:
            return future.result(self._timeout_s)
        except Exception as error:
            failure = self._failure(future, error)
            if isinstance(failure, SessionDead):
                self._bury(failure)
            if failure is error:
                raise
            raise failure from None  # Telethon's text can quote the server or the input

    def _failure(self, future: Future[Any], error: Exception) -> Exception:
        if isinstance(error, JobError):
            return error
        if isinstance(error, TimeoutError) and not future.done():
            future.cancel()
            return RetryableError("Telegram did not answer in time", code="timeout",
                                  provider=PROVIDER)
        if isinstance(error, errors.RPCError | OSError | ValueError):
            return classify_telethon(error)
        return error  # a bug, not a Telegram answer: let it show as it is

    async def _with_client(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        client = await self._ready_client()
        try:
            return await operation(client)
        except OSError:
            self._connected = False  # connect again on the next call
            raise

    async def _ready_client(self) -> Any:
        """The connected, logged-in client; connects on first use (inside the loop)."""
        if self._connecting is None:  # created here, in the loop it belongs to
            self._connecting = asyncio.Lock()
        async with self._connecting:  # calls from several threads wait for one connect
            if self._client is None:
                self._client = self._factory()
            if not self._connected:
                await self._client.connect()
                if not await self._client.is_user_authorized():
                    raise SessionDead("the Telegram session is not logged in",
                                      code="UNAUTHORIZED", provider=PROVIDER)
                self._connected = True
            return self._client

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                name=f"telethon-{self.api_id}")
                self._thread.start()
            return self._loop

    def _fail_fast(self) -> None:
        dead = self._dead
        if dead is not None:
            raise SessionDead(dead.message, code=dead.code, provider=PROVIDER)

    def _bury(self, failure: SessionDead) -> None:
        """Remember the session is dead, say so once, and drop the connection."""
        with self._lock:
            if self._dead is not None:
                return
            self._dead, loop, client = failure, self._loop, self._client
            self._client, self._connected = None, False
        logger.critical("The Telegram user session is dead (%s): log in again and set "
                        "TELEGRAM_SESSION.", failure.code)
        if loop is not None and client is not None:
            _wait_quietly(asyncio.run_coroutine_threadsafe(_disconnect(client), loop),
                          self._timeout_s)

    def _telethon_client(self) -> Any:
        """The real client: FLOOD_WAIT raises instead of sleeping in a worker thread."""
        from telethon import TelegramClient
        from telethon.sessions import StringSession

        try:
            session = StringSession(self._session)
        except ValueError as error:
            raise SessionDead("TELEGRAM_SESSION is not a valid session string",
                              code="SESSION_INVALID", provider=PROVIDER) from error
        # The job's retry policy does the backing off: Telethon's own retries only
        # hold a worker thread, and its last error classifies better than its ValueError.
        return TelegramClient(session, self.api_id, self._api_hash, flood_sleep_threshold=0,
                              request_retries=2, connection_retries=2,
                              raise_last_call_error=True)


# Helpers the coroutines share.

async def _channel(client: Any, username: str) -> Any:
    """The channel entity for a username (`name`, `@name` or a t.me link)."""
    entity = await client.get_entity(username)
    if not isinstance(entity, types.Channel):
        raise PermanentError("that username is not a channel", code="NOT_A_CHANNEL",
                             provider=PROVIDER)
    return entity


async def _info(client: Any, chat: Any) -> ChannelInfo:
    """ChannelInfo for a Channel (participants from its full info) or a basic group."""
    participants = getattr(chat, "participants_count", None)
    if isinstance(chat, types.Channel):
        full = await client(functions.channels.GetFullChannelRequest(chat))
        participants = full.full_chat.participants_count
    username = getattr(chat, "username", None)
    if username is None:  # collectible usernames live in `usernames`
        active = [u.username for u in getattr(chat, "usernames", None) or [] if u.active]
        username = active[0] if active else None
    return ChannelInfo(utils.get_peer_id(chat), chat.title, username, participants)


async def _invited_chat(client: Any, invite_hash: str) -> Any:
    """The chat an invite leads to, when this account is already in it."""
    invite = await client(functions.messages.CheckChatInviteRequest(invite_hash))
    chat = getattr(invite, "chat", None)
    if chat is None:  # "already a participant" yet the invite says otherwise: a race
        raise RetryableError("the invite does not name its chat yet", code="INVITE_UNRESOLVED",
                             provider=PROVIDER)
    return chat


async def _input_entity(client: Any, peer: types.PeerChannel) -> Any | None:
    """The channel with its access hash, or None when this account is not in it.

    A StringSession does not keep access hashes across restarts; loading the
    dialogs once fills them in for every chat the account is in.
    """
    try:
        return await client.get_input_entity(peer)
    except ValueError as error:
        if not _is_missing_entity(error):
            raise
    await client.get_dialogs()
    try:
        return await client.get_input_entity(peer)
    except ValueError as error:
        if not _is_missing_entity(error):
            raise
        return None


def _channel_peer(telegram_id: int) -> types.PeerChannel:
    if telegram_id > 0:
        return types.PeerChannel(telegram_id)
    bare, kind = utils.resolve_id(telegram_id)
    if kind is not types.PeerChannel:
        raise PermanentError("only channels and supergroups can be left by id",
                             code="NOT_A_CHANNEL", provider=PROVIDER)
    return types.PeerChannel(bare)


def _invite_hash(value: str) -> str:
    """The hash out of `https://t.me/+HASH`, `t.me/joinchat/HASH` or the hash itself."""
    found, is_invite = utils.parse_username(value.strip())
    return str(found) if is_invite and found else value.strip().lstrip("+")


async def _disconnect(client: Any) -> None:
    await client.disconnect()


def _wait_quietly(future: Future[Any], timeout_s: float) -> None:
    """Wait for a clean-up step; a failing disconnect must not hide the real problem."""
    try:
        future.result(timeout_s)
    except Exception as error:
        logger.debug("Telegram disconnect failed: %s", type(error).__name__)

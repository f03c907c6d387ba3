"""The Telethon gateway: every reference row through the public methods, on a stand-in client.

There is no MTProto test server, so the gateway's `client_factory` seam hands it a small
async stand-in for `TelegramClient` that answers with real TL objects and raises REAL
Telethon exception instances; what is tested is the adapter's mapping and its loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from telethon import errors
from telethon.tl import types

from integrations.telegram_gateway import ChannelInfo, JoinPending, TelegramGateway
from integrations.telegram_user import SessionDead, TelethonGateway
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)
from switchyard.base.settings import load
from tests.fakes.telethon import StandIn
from tests.integrations.leaks import PAYLOAD, leaked

SESSION = "1BVtsOKABu0secret-session-string-do-not-print=="
API_HASH = "0123456789abcdef0123456789abcdef"

NEWS = 1234  # a public channel the account can join
INSIDE = 5678  # a private channel the account is already in
MARKED_NEWS, MARKED_INSIDE = -1000000001234, -1000000005678


@pytest.fixture
def stand_in() -> StandIn:
    client = StandIn()
    client.add_channel(NEWS, "Daily News", username="dailynews", participants=1500)
    client.add_channel(INSIDE, "Inner Circle", invite="InSideHash", participants=12,
                       joined=True)
    return client


@pytest.fixture
def gateway(stand_in: StandIn) -> Iterator[TelethonGateway]:
    adapter = TelethonGateway(42, API_HASH, SESSION, client_factory=lambda: stand_in)
    yield adapter
    adapter.close()


NEWS_INFO = ChannelInfo(MARKED_NEWS, "Daily News", "dailynews", 1500)
INSIDE_INFO = ChannelInfo(MARKED_INSIDE, "Inner Circle", None, 12)


# Results.

def test_resolve_describes_the_channel_without_joining(
    gateway: TelethonGateway, stand_in: StandIn,
) -> None:
    # given a public channel / when it is resolved
    info = gateway.resolve("@dailynews")
    # then its marked id, title, username and size come back, and nothing was joined
    assert info == NEWS_INFO
    assert info.as_dict() == {"telegram_id": MARKED_NEWS, "title": "Daily News",
                              "username": "dailynews", "participants": 1500}
    assert "JoinChannelRequest" not in stand_in.calls


def test_join_public_joins_and_describes(gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given a public channel the account is not in / when it joins
    info = gateway.join_public("dailynews")
    # then it is in, and the channel is described
    assert info == NEWS_INFO
    assert NEWS in stand_in.joined


def test_join_invite_accepts_a_link(gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given a private channel's invite link / when the account uses it
    stand_in.joined.discard(INSIDE)
    info = gateway.join_invite("https://t.me/+InSideHash")
    # then the hash was taken out of the link (case kept) and the account is in
    assert info == INSIDE_INFO
    assert INSIDE in stand_in.joined


def test_leave_takes_the_marked_id(gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given a channel the account is in
    assert INSIDE in stand_in.joined
    # when it leaves by the id join_* returned (marked, -100...)
    gateway.leave(INSIDE_INFO.telegram_id)
    # then Telegram was asked to leave it, once, and it is out
    assert stand_in.calls.count("LeaveChannelRequest") == 1
    assert INSIDE not in stand_in.joined


def test_join_public_refuses_a_person(gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given a username that belongs to a user / when the account tries to join it
    stand_in.by_username["someone"] = types.User(id=77, first_name="Someone")
    # then it is a permanent failure, not a join
    with pytest.raises(PermanentError) as caught:
        gateway.join_public("someone")
    assert caught.value.code == "NOT_A_CHANNEL"


def test_the_adapter_satisfies_the_gateway_protocol(gateway: TelethonGateway) -> None:
    # given the adapter / when jobs type it as the protocol / then it fits
    typed: TelegramGateway = gateway
    assert typed is gateway


# Classification: every row of the reference table, through the public methods.

JOIN: Callable[[TelethonGateway], Any] = lambda g: g.join_public("dailynews")  # noqa: E731
RESOLVE: Callable[[TelethonGateway], Any] = lambda g: g.resolve("dailynews")  # noqa: E731
INVITE: Callable[[TelethonGateway], Any] = lambda g: g.join_invite("InSideHash")  # noqa: E731
LEAVE: Callable[[TelethonGateway], Any] = lambda g: g.leave(MARKED_INSIDE)  # noqa: E731


@dataclass
class Row:
    """One reference row: the failure raised at a step, and what the caller must see."""

    name: str
    raise_at: str | None  # None: the stand-in raises it by itself
    error: BaseException | None
    call: Callable[[TelethonGateway], Any]
    expect: type[JobError] | None = None  # None: success, with `result`
    code: str | None = None
    retry_after: float | None = None
    result: Any = None


ROWS = [
    Row("FloodWaitError", "JoinChannelRequest", errors.FloodWaitError(request=None, capture=30),
        JOIN, RateLimited, "FLOOD_WAIT", 30),
    Row("FloodPremiumWaitError", "ImportChatInviteRequest",
        errors.FloodPremiumWaitError(request=None, capture=12), INVITE, RateLimited,
        "FLOOD_PREMIUM_WAIT", 12),
    Row("SlowModeWaitError", "JoinChannelRequest",
        errors.SlowModeWaitError(request=None, capture=7), JOIN, RateLimited, "SLOWMODE_WAIT", 7),
    Row("ServerError", "GetFullChannelRequest", errors.ServerError(None, "INTERNAL", 500),
        RESOLVE, RetryableError, "INTERNAL"),
    Row("TimedOutError", "LeaveChannelRequest", errors.TimedOutError(None, "Timeout", -503),
        LEAVE, RetryableError, "Timeout"),
    Row("RpcCallFailError", "JoinChannelRequest", errors.RpcCallFailError(request=None), JOIN,
        RetryableError, "RPC_CALL_FAIL"),
    Row("OSError", "connect", ConnectionError("Connection to Telegram failed 2 time(s)"), JOIN,
        RetryableError, "network"),
    # asyncio.TimeoutError is the builtin TimeoutError since Python 3.11.
    Row("asyncio.TimeoutError", "get_entity", TimeoutError(), RESOLVE, RetryableError,
        "timeout"),
    Row("ValueError request unsuccessful", "JoinChannelRequest",
        ValueError("Request was unsuccessful 5 time(s)"), JOIN, RetryableError,
        "REQUEST_UNSUCCESSFUL"),
    Row("ChannelPrivateError", "JoinChannelRequest", errors.ChannelPrivateError(request=None),
        JOIN, PermanentError, "CHANNEL_PRIVATE"),
    Row("ChannelInvalidError", "LeaveChannelRequest", errors.ChannelInvalidError(request=None),
        LEAVE, PermanentError, "CHANNEL_INVALID"),
    Row("UsernameNotOccupiedError", "get_entity",
        errors.UsernameNotOccupiedError(request=None), RESOLVE, PermanentError,
        "USERNAME_NOT_OCCUPIED"),
    Row("ValueError no user has username", None, None,
        lambda g: g.join_public("nobody"), PermanentError, "USERNAME_NOT_OCCUPIED"),
    Row("UsernameInvalidError", "get_entity", errors.UsernameInvalidError(request=None), JOIN,
        PermanentError, "USERNAME_INVALID"),
    Row("InviteHashExpiredError", "ImportChatInviteRequest",
        errors.InviteHashExpiredError(request=None), INVITE, PermanentError,
        "INVITE_HASH_EXPIRED"),
    Row("InviteHashInvalidError", None, None, lambda g: g.join_invite("NoSuchHash"),
        PermanentError, "INVITE_HASH_INVALID"),
    Row("ChannelsTooMuchError", "JoinChannelRequest", errors.ChannelsTooMuchError(request=None),
        JOIN, PermanentError, "CHANNELS_TOO_MUCH"),
    Row("UserChannelsTooMuchError", "ImportChatInviteRequest",
        errors.UserChannelsTooMuchError(request=None), INVITE, PermanentError,
        "USER_CHANNELS_TOO_MUCH"),
    Row("UserAlreadyParticipantError on join", "JoinChannelRequest",
        errors.UserAlreadyParticipantError(request=None), JOIN, result=NEWS_INFO),
    Row("UserAlreadyParticipantError on invite", None, None, INVITE, result=INSIDE_INFO),
    Row("UserNotParticipantError on leave", "LeaveChannelRequest",
        errors.UserNotParticipantError(request=None), LEAVE, result=None),
    Row("InviteRequestSentError", "ImportChatInviteRequest",
        errors.InviteRequestSentError(request=None), INVITE, result=JoinPending()),
    Row("AuthKeyUnregisteredError", "JoinChannelRequest",
        errors.AuthKeyUnregisteredError(request=None), JOIN, SessionDead,
        "AUTH_KEY_UNREGISTERED"),
    Row("SessionRevokedError", "get_entity", errors.SessionRevokedError(request=None), RESOLVE,
        SessionDead, "SESSION_REVOKED"),
    Row("UserDeactivatedError", "ImportChatInviteRequest",
        errors.UserDeactivatedError(request=None), INVITE, SessionDead, "USER_DEACTIVATED"),
    Row("UserDeactivatedBanError", "LeaveChannelRequest",
        errors.UserDeactivatedBanError(request=None), LEAVE, SessionDead,
        "USER_DEACTIVATED_BAN"),
    Row("AuthKeyDuplicatedError", "JoinChannelRequest",
        errors.AuthKeyDuplicatedError(request=None), JOIN, SessionDead, "AUTH_KEY_DUPLICATED"),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_reference_classification(row: Row, gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given Telegram answers the call with the row's exception
    if row.raise_at is not None and row.error is not None:
        stand_in.fail(row.raise_at, row.error)
    if row.expect is None:
        # when the call runs / then the idempotent answer is success
        assert row.call(gateway) == row.result
        return
    with pytest.raises(row.expect) as caught:
        row.call(gateway)
    # then the caller sees exactly the row's class, with Telegram's name as the code
    error = caught.value
    assert type(error) is row.expect
    assert (error.code, error.provider) == (row.code, "Telegram user")
    if row.retry_after is not None:
        assert isinstance(error, RateLimited) and error.retry_after == row.retry_after


def test_an_unknown_bad_request_is_permanent(gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given an RPC error the table does not name, with a 4xx code
    stand_in.fail("JoinChannelRequest", errors.BadRequestError(None, "CHAT_NEW_THING", 400))
    # when the account joins / then it is the request's fault: permanent, code kept
    with pytest.raises(PermanentError) as caught:
        gateway.join_public("dailynews")
    assert type(caught.value) is PermanentError
    assert caught.value.code == "CHAT_NEW_THING"


def test_an_unknown_server_side_error_is_retryable(
    gateway: TelethonGateway, stand_in: StandIn,
) -> None:
    # given an RPC error the table does not name, with a code outside 4xx
    stand_in.fail("JoinChannelRequest", errors.RPCError(None, "WORKER_BUSY_TOO_LONG", -500))
    # when the account joins / then it is Telegram's trouble: retry
    with pytest.raises(RetryableError) as caught:
        gateway.join_public("dailynews")
    assert caught.value.code == "WORKER_BUSY_TOO_LONG"


def test_any_unauthorized_answer_means_the_session_is_dead(
    gateway: TelethonGateway, stand_in: StandIn,
) -> None:
    # given a 401 the table does not name
    stand_in.fail("get_entity", errors.UnauthorizedError(None, "SESSION_EXPIRED", 401))
    # when the account resolves / then the session is dead
    with pytest.raises(SessionDead) as caught:
        gateway.resolve("dailynews")
    assert caught.value.code == "SESSION_EXPIRED"


def test_an_echoed_request_reaches_no_error(gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given Telegram answering with an RPC error whose text repeats the invite it was given
    stand_in.echo("ImportChatInviteRequest", "INVITE_HASH_INVALID")
    # when an "invite" holding a token, a code, a phone number and an address is used
    with pytest.raises(PermanentError) as caught:
        gateway.join_invite(PAYLOAD)
    # then the error keeps the class and the RPC name, in words of our own only
    error = caught.value
    assert (type(error), error.code, error.status) == (PermanentError, "INVITE_HASH_INVALID",
                                                       None)
    assert leaked(error) == []
    assert error.message == "the invite link is invalid"


def test_an_rpc_text_that_is_not_a_name_leaves_the_class_name_as_code(
    gateway: TelethonGateway, stand_in: StandIn,
) -> None:
    # given a server error whose text starts with the value it was given, not a name
    stand_in.echo("GetFullChannelRequest", "", code=500)
    # when the account resolves a channel / then it is retryable, coded by Telethon's class
    with pytest.raises(RetryableError) as caught:
        gateway.resolve("dailynews")
    assert (caught.value.code, caught.value.message) == ("INTERNAL",
                                                         "Telegram had a server-side failure")


# The session.

def test_a_dead_session_fails_fast_without_contacting_telegram(
    gateway: TelethonGateway, stand_in: StandIn,
) -> None:
    # given a session Telegram revoked during a call
    stand_in.fail("JoinChannelRequest", errors.AuthKeyUnregisteredError(request=None))
    with pytest.raises(SessionDead):
        gateway.join_public("dailynews")
    reached = list(stand_in.calls)
    # when another job calls the gateway
    with pytest.raises(SessionDead) as caught:
        gateway.leave(MARKED_INSIDE)
    # then it fails the same way and nothing more reached the client
    assert caught.value.code == "AUTH_KEY_UNREGISTERED"
    assert stand_in.calls == reached
    assert reached[-1] == "disconnect"


def test_a_dead_session_is_reported_critically_once(
    gateway: TelethonGateway, stand_in: StandIn, caplog: pytest.LogCaptureFixture,
) -> None:
    # given a dead session
    stand_in.fail("get_entity", errors.SessionRevokedError(request=None))
    # when three calls fail
    with caplog.at_level(logging.CRITICAL, logger="switchyard.telegram_user"):
        for _ in range(3):
            with pytest.raises(SessionDead):
                gateway.resolve("dailynews")
    # then one CRITICAL line says what to do, without the session
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    assert "TELEGRAM_SESSION" in critical[0].getMessage()
    assert SESSION not in caplog.text


def test_a_logged_out_session_is_dead_at_connect() -> None:
    # given a session Telegram no longer knows as logged in
    client = StandIn(authorized=False)
    gateway = TelethonGateway(42, API_HASH, SESSION, client_factory=lambda: client)
    # when the first call connects / then the session is dead before any request
    with pytest.raises(SessionDead) as caught:
        gateway.resolve("dailynews")
    gateway.close()
    assert caught.value.code == "UNAUTHORIZED"
    assert client.calls == ["connect", "is_user_authorized", "disconnect"]


def test_an_invalid_session_string_is_dead_without_a_connection() -> None:
    # given TELEGRAM_SESSION that is not a session string, and the real client factory
    gateway = TelethonGateway(42, API_HASH, "not-a-session")
    # when the first call builds the client / then the session is dead, nothing connected
    with pytest.raises(SessionDead) as caught:
        gateway.join_public("dailynews")
    gateway.close()
    assert caught.value.code == "SESSION_INVALID"


def test_the_real_client_raises_flood_waits_instead_of_sleeping() -> None:
    # given the gateway's own client factory / when it builds a client (no connection yet)
    client = TelethonGateway(42, API_HASH, "")._telethon_client()
    # then FLOOD_WAIT of any length raises, so the job is rescheduled, not the thread held
    assert client.flood_sleep_threshold == 0


# The loop and the connection.

def test_it_connects_once_on_first_use(gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given a fresh gateway: nothing connected yet
    assert stand_in.calls == []
    # when two calls run
    gateway.resolve("dailynews")
    gateway.join_public("dailynews")
    # then it connected and checked the login once
    assert stand_in.calls.count("connect") == stand_in.calls.count("is_user_authorized") == 1


def test_worker_threads_share_one_client(gateway: TelethonGateway, stand_in: StandIn) -> None:
    # given several worker threads / when they call the gateway at once
    stand_in.calls_at_once = 8
    results: list[ChannelInfo] = []
    threads = [threading.Thread(target=lambda: results.append(gateway.resolve("dailynews")))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # then every call succeeded over one connection
    assert results == [NEWS_INFO] * 8
    assert stand_in.calls.count("connect") == 1


def test_a_call_that_never_answers_times_out(stand_in: StandIn) -> None:
    # given Telegram holding the join forever, and a short gateway timeout
    stand_in.hang_on = "JoinChannelRequest"
    gateway = TelethonGateway(42, API_HASH, SESSION, client_factory=lambda: stand_in,
                              timeout_ms=200)
    # when the account joins / then the wait ends as a retryable timeout
    with pytest.raises(RetryableError) as caught:
        gateway.join_public("dailynews")
    gateway.close()
    assert caught.value.code == "timeout"


def test_a_dropped_connection_reconnects_on_the_next_call(
    gateway: TelethonGateway, stand_in: StandIn,
) -> None:
    # given a call that lost the connection
    stand_in.fail("GetFullChannelRequest", ConnectionError("Connection reset by peer"))
    with pytest.raises(RetryableError):
        gateway.resolve("dailynews")
    # when the next call runs / then it connects again and succeeds
    assert gateway.resolve("dailynews") == NEWS_INFO
    assert stand_in.calls.count("connect") == 2


def test_close_disconnects_and_stops_the_loop(stand_in: StandIn) -> None:
    # given a gateway that has run a call
    gateway = TelethonGateway(42, API_HASH, SESSION, client_factory=lambda: stand_in)
    gateway.resolve("dailynews")
    loop_threads = [t for t in threading.enumerate() if t.name == "telethon-42"]
    # when it is closed
    gateway.close()
    # then the client disconnected and the loop thread ended
    assert stand_in.calls[-1] == "disconnect"
    assert len(loop_threads) == 1 and not loop_threads[0].is_alive()


# Leaving after a restart: the access hash is not in a StringSession.

def test_leave_loads_dialogs_when_the_channel_is_not_cached(
    gateway: TelethonGateway, stand_in: StandIn,
) -> None:
    # given a channel the account is in, whose access hash a restart forgot
    stand_in.cached.discard(INSIDE)
    # when the account leaves it
    gateway.leave(MARKED_INSIDE)
    # then it loaded its dialogs once, found the channel and left
    assert stand_in.calls[2:] == ["get_input_entity", "get_dialogs", "get_input_entity",
                                  "LeaveChannelRequest"]
    assert INSIDE not in stand_in.joined


def test_leave_of_a_channel_not_in_the_dialogs_is_already_done(
    gateway: TelethonGateway, stand_in: StandIn,
) -> None:
    # given a channel the account is not in (nor has cached)
    stand_in.cached.discard(NEWS)
    # when the account leaves it by its bare id
    gateway.leave(NEWS)
    # then nothing is sent: it has already left
    assert "LeaveChannelRequest" not in stand_in.calls
    assert stand_in.calls.count("get_dialogs") == 1


def test_leave_refuses_a_basic_group_id(gateway: TelethonGateway) -> None:
    # given a basic group's marked id (no -100 prefix) / when the account leaves it
    with pytest.raises(PermanentError) as caught:
        gateway.leave(-4000000001)
    # then it is refused: LeaveChannelRequest is for channels and supergroups
    assert caught.value.code == "NOT_A_CHANNEL"


# Secrecy and settings.

def test_the_session_is_not_in_the_repr(gateway: TelethonGateway) -> None:
    # given a gateway, before and after it connected / when it is printed
    before = repr(gateway)
    gateway.resolve("dailynews")
    after = repr(gateway)
    # then neither the session nor the api hash shows
    for text in (before, after):
        assert SESSION not in text and API_HASH not in text
    assert "connected" in after


@pytest.mark.parametrize("missing", ["TELEGRAM_API_ID", "TELEGRAM_API_HASH", "TELEGRAM_SESSION"])
def test_from_settings_names_the_first_missing_setting(missing: str) -> None:
    # given settings with everything up to `missing` set
    given = {"telegram_api_id": 42, "telegram_api_hash": API_HASH, "telegram_session": SESSION}
    names = list(given)
    values = {k: (given[k] if names.index(k) < names.index(missing.lower()) else None)
              for k in names}
    # when the gateway is built / then the error names that setting
    with pytest.raises(NotConfigured) as caught:
        TelethonGateway.from_settings(load(_env_file=None, **values))
    assert caught.value.setting == missing
    assert caught.value.provider == "Telegram user"


def test_from_settings_builds_a_gateway_that_keeps_the_secrets() -> None:
    # given complete settings / when the gateway is built
    gateway = TelethonGateway.from_settings(load(
        _env_file=None, telegram_api_id=42, telegram_api_hash=API_HASH,
        telegram_session=SESSION))
    # then it is idle (nothing connected) and prints no secret
    assert repr(gateway) == "TelethonGateway(api_id=42, session=[redacted], idle)"


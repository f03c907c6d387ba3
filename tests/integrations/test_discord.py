"""The Discord client against a loopback Discord: shapes, classification, rate limits.

The client and the fake share a `Clock` the test moves, so bucket resets, cool-downs
and the invalid-request window pass without sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest

from integrations.discord import USER_AGENT, Discord
from integrations.http import HttpConfig
from switchyard.base import settings
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)
from tests.fakes.base import Reply, closed_port_url, html_error, stall
from tests.fakes.discord import DiscordFake
from tests.integrations.leaks import PAYLOAD, leaked

TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
GUILD, CHANNEL, OTHER_CHANNEL = "810000000000000001", "820000000000000001", "820000000000000002"
USER, OTHER_USER = "830000000000000001", "830000000000000002"
ROLE, ADMIN_ROLE = "840000000000000001", "840000000000000002"
APP, INTERACTION, INTERACTION_TOKEN = "850000000000000001", "860000000000000001", "aW50ZXJhY3Rpb24"
#: Tight timeouts for the stall and closed-port rows.
QUICK = HttpConfig(connect_timeout_ms=500, timeout_ms=300)
#: Everything else: loopback answers fast, but leave room for a loaded machine.
ROOMY = HttpConfig(connect_timeout_ms=2_000, timeout_ms=5_000)


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[DiscordFake]:
    with DiscordFake(TOKEN, bucket_limit=5, bucket_window=1.0, clock=clock) as server:
        server.add_role(GUILD, ROLE, "member")
        server.add_role(GUILD, ADMIN_ROLE, "admin", above_bot=True)
        server.add_member(GUILD, USER, "ann", nick="Ann")
        server.add_member(GUILD, OTHER_USER, "bob", accepts_dms=False)
        server.add_channel(CHANNEL, GUILD)
        server.add_channel(OTHER_CHANNEL, GUILD)
        server.add_interaction(INTERACTION, INTERACTION_TOKEN, APP, channel_id=CHANNEL)
        yield server


@pytest.fixture
def connect(fake: DiscordFake, clock: Clock) -> Iterator[Callable[..., Discord]]:
    """Build clients on the fake (closed afterwards); keyword arguments override."""
    clients: list[Discord] = []

    def make(token: str = TOKEN, **options: object) -> Discord:
        kwargs: dict[str, object] = {"base_url": fake.api_url, "config": ROOMY, "clock": clock}
        client = Discord(token, **{**kwargs, **options})  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def discord(connect: Callable[..., Discord]) -> Discord:
    return connect()


# Each call's success ----------------------------------------------------------------


def test_defer_acknowledges_the_interaction_without_bot_auth(
        discord: Discord, fake: DiscordFake) -> None:
    # when the job defers its reply
    discord.defer_interaction(INTERACTION, INTERACTION_TOKEN)
    # then Discord got type 5 on the callback, authenticated by the token in the path only
    request = fake.last("/callback")
    assert request.json() == {"type": 5}
    assert "authorization" not in request.headers
    assert fake.interactions[INTERACTION].acknowledged


def test_an_ephemeral_defer_sets_flag_64(discord: Discord, fake: DiscordFake) -> None:
    # when the reply is deferred as ephemeral
    discord.defer_interaction(INTERACTION, INTERACTION_TOKEN, ephemeral=True)
    # then only data.flags = 64 is added
    assert fake.last("/callback").json() == {"type": 5, "data": {"flags": 64}}
    assert fake.interactions[INTERACTION].ephemeral


def test_a_second_defer_counts_as_done(discord: Discord, fake: DiscordFake) -> None:
    # given an interaction already acknowledged (a retried job)
    discord.defer_interaction(INTERACTION, INTERACTION_TOKEN)
    # when it is deferred again, Discord answers 40060 and the client calls it success
    discord.defer_interaction(INTERACTION, INTERACTION_TOKEN)
    # then both reached Discord, and nothing was raised
    assert fake.count("/callback") == 2


def test_a_defer_after_three_seconds_is_a_final_unknown_interaction(
        discord: Discord, fake: DiscordFake) -> None:
    # given an interaction four seconds old: its token died at three
    fake.add_interaction("860000000000000009", "bGF0ZQ", APP, age=4.0)
    # when the job defers it
    with pytest.raises(PermanentError) as caught:
        discord.defer_interaction("860000000000000009", "bGF0ZQ")
    # then it fails for good with Discord's code
    assert (caught.value.code, caught.value.status) == (10062, 404)


def test_follow_up_returns_the_message(discord: Discord, fake: DiscordFake) -> None:
    # given a deferred interaction
    discord.defer_interaction(INTERACTION, INTERACTION_TOKEN)
    # when the job sends an ephemeral follow-up
    message = discord.follow_up(APP, INTERACTION_TOKEN, "Verified!", ephemeral=True)
    # then Discord's Message comes back, and it went to the interaction's webhook
    assert message["content"] == "Verified!"
    assert message["flags"] == 64
    assert message["channel_id"] == CHANNEL
    assert message["webhook_id"] == APP
    assert fake.last(f"/webhooks/{APP}/").json() == {
        "content": "Verified!", "flags": 64, "allowed_mentions": {"parse": []}}


def test_edit_original_replaces_the_thinking_reply(discord: Discord, fake: DiscordFake) -> None:
    # given a deferred interaction ("thinking...")
    discord.defer_interaction(INTERACTION, INTERACTION_TOKEN)
    # when the job edits the original reply
    message = discord.edit_original(APP, INTERACTION_TOKEN, "All done")
    # then the deferred message now says so and is no longer loading
    assert message["content"] == "All done"
    assert message["edited_timestamp"] is not None
    assert fake.interactions[INTERACTION].original == message
    assert message["flags"] & 128 == 0


def test_a_follow_up_with_a_dead_token_is_final(discord: Discord) -> None:
    # when a follow-up uses a token Discord does not know (expired after 15 minutes)
    with pytest.raises(PermanentError) as caught:
        discord.follow_up(APP, "ZXhwaXJlZA", "too late")
    # then it is Discord's 50027, which no retry can fix
    assert (caught.value.code, caught.value.status) == (50027, 401)


def test_add_role_gives_the_role_with_an_encoded_audit_reason(
        discord: Discord, fake: DiscordFake) -> None:
    # when the job assigns a role with a non-ASCII reason
    discord.add_role(GUILD, USER, ROLE, reason="verified ✓ by job")
    # then the member has it and the reason arrived URL-encoded, as Discord wants
    assert fake.roles_of(GUILD, USER) == [ROLE]
    header = fake.last("/roles/").headers["x-audit-log-reason"]
    assert header.isascii() and unquote(header) == "verified ✓ by job"
    assert fake.audit_log[-1]["reason"] == "verified ✓ by job"


def test_remove_role_takes_the_role_away(discord: Discord, fake: DiscordFake) -> None:
    # given a member with the role
    discord.add_role(GUILD, USER, ROLE)
    # when the job removes it
    discord.remove_role(GUILD, USER, ROLE)
    # then the member no longer has it, and no reason header was sent
    assert fake.roles_of(GUILD, USER) == []
    assert "x-audit-log-reason" not in fake.last("/roles/").headers


def test_get_member_returns_user_nick_roles_and_joined_at(discord: Discord) -> None:
    # when the job reads a member
    member = discord.get_member(GUILD, USER)
    # then it has Discord's member shape
    assert member["user"]["id"] == USER
    assert member["user"]["username"] == "ann"
    assert member["nick"] == "Ann"
    assert member["roles"] == []
    assert isinstance(member["joined_at"], str)


def test_open_dm_returns_the_existing_channel_the_second_time(discord: Discord) -> None:
    # given a DM channel opened once
    first = discord.open_dm(USER)
    # when it is opened again
    second = discord.open_dm(USER)
    # then Discord hands back the same DM channel (type 1)
    assert second["id"] == first["id"]
    assert second["type"] == 1


def test_send_message_posts_in_the_channel(discord: Discord, fake: DiscordFake) -> None:
    # when the job posts in a guild channel
    message = discord.send_message(CHANNEL, "hello")
    # then Discord's Message comes back and the channel has it
    assert message["channel_id"] == CHANNEL
    assert message["content"] == "hello"
    assert fake.messages[-1]["id"] == message["id"]


def test_send_dm_opens_the_channel_then_sends(discord: Discord, fake: DiscordFake) -> None:
    # when the job DMs a user
    message = discord.send_dm(USER, "psst")
    # then the message is in the user's DM channel
    assert message["channel_id"] == fake.dm_channels[USER]
    assert [r.path.split("/api/v10")[1] for r in fake.requests] == [
        "/users/@me/channels", f"/channels/{message['channel_id']}/messages"]


def test_bot_calls_carry_the_bot_token_and_discord_user_agent(
        discord: Discord, fake: DiscordFake) -> None:
    # when the job makes a bot call
    discord.get_member(GUILD, USER)
    # then it is authenticated as the bot and identifies as Discord asks
    headers = fake.last().headers
    assert headers["authorization"] == f"Bot {TOKEN}"
    assert headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("DiscordBot (")


# The reference's classification ----------------------------------------------------


def _send(client: Discord) -> object:
    return client.send_message(CHANNEL, "hi")


def _member(client: Discord) -> object:
    return client.get_member(GUILD, USER)


def _add_role(client: Discord) -> object:
    client.add_role(GUILD, USER, ROLE)
    return None


def _defer(client: Discord) -> object:
    client.defer_interaction(INTERACTION, INTERACTION_TOKEN)
    return None


def _follow_up(client: Discord) -> object:
    return client.follow_up(APP, INTERACTION_TOKEN, "done")


@dataclass(frozen=True)
class Row:
    reply: Reply | None  # None: nothing listens (connection refused)
    call: Callable[[Discord], object]
    error: type[JobError] | None  # None: success
    code: str | int | None = None
    status: int | None = None
    retry_after: float | None = None


FORM_ERRORS = {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                        "message": "Must be 2000 or fewer in length."}]}}
ROWS = {
    "429 delay in body": Row(DiscordFake.rate_limited(64.57), _send, RateLimited, None, 429,
                             64.57),
    "429 delay in Retry-After only": Row(
        html_error(429, "Too Many Requests", **{"Retry-After": "7"}), _send, RateLimited,
        None, 429, 7.0),
    "500": Row(DiscordFake.error(500, 0, "500: Internal Server Error"), _member,
               RetryableError, 0, 500),
    "502 html": Row(html_error(502, "Bad Gateway"), _member, RetryableError, None, 502),
    "504 html": Row(html_error(504, "Gateway Timeout"), _member, RetryableError, None, 504),
    "524 html": Row(html_error(524, "A Timeout Occurred"), _member, RetryableError, None, 524),
    "400 50035 invalid form body": Row(
        DiscordFake.error(400, 50035, "Invalid Form Body", FORM_ERRORS), _send,
        PermanentError, 50035, 400),
    "401 unauthorized": Row(DiscordFake.error(401, 0, "401: Unauthorized"), _member,
                            PermanentError, 0, 401),
    "403 50001 missing access": Row(DiscordFake.error(403, 50001, "Missing Access"), _member,
                                    PermanentError, 50001, 403),
    "403 50013 missing permissions": Row(DiscordFake.error(403, 50013, "Missing Permissions"),
                                         _add_role, PermanentError, 50013, 403),
    "403 50007 cannot message user": Row(
        DiscordFake.error(403, 50007, "Cannot send messages to this user"), _send,
        PermanentError, 50007, 403),
    "404 10004 unknown guild": Row(DiscordFake.error(404, 10004, "Unknown Guild"), _member,
                                   PermanentError, 10004, 404),
    "404 10007 unknown member": Row(DiscordFake.error(404, 10007, "Unknown Member"), _member,
                                    PermanentError, 10007, 404),
    "404 10011 unknown role": Row(DiscordFake.error(404, 10011, "Unknown Role"), _add_role,
                                  PermanentError, 10011, 404),
    "10062 unknown interaction": Row(DiscordFake.error(404, 10062, "Unknown interaction"),
                                     _defer, PermanentError, 10062, 404),
    "50027 invalid webhook token": Row(DiscordFake.error(401, 50027, "Invalid Webhook Token"),
                                       _follow_up, PermanentError, 50027, 401),
    "40060 on defer is success": Row(
        DiscordFake.error(400, 40060, "Interaction has already been acknowledged."), _defer,
        None),
    "stall is a timeout": Row(stall(), _member, RetryableError, "timeout"),
    "closed port is refused": Row(None, _member, RetryableError, "connect_failed"),
}


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_reference_classification(fake: DiscordFake, clock: Clock, row: Row) -> None:
    # given Discord (or the network) answering as the row says
    if row.reply is not None:
        fake.script(row.reply)
    url = fake.api_url if row.reply is not None else closed_port_url() + "/api/v10"
    client = Discord(TOKEN, base_url=url, config=QUICK, clock=clock)
    # when the call is made
    raised: JobError | None = None
    try:
        row.call(client)
    except JobError as error:
        raised = error
    finally:
        client.close()
    # then it is classified as the reference says, with Discord's code and status kept
    if row.error is None:
        assert raised is None
        return
    assert type(raised) is row.error, raised
    assert (raised.code, raised.status, raised.provider) == (row.code, row.status, "Discord")
    if row.retry_after is not None:
        assert isinstance(raised, RateLimited) and raised.retry_after == row.retry_after


def test_form_errors_name_the_field(discord: Discord) -> None:
    # when a message is too long for Discord
    with pytest.raises(PermanentError) as caught:
        discord.send_message(CHANNEL, "x" * 2_001)
    # then the error names the field and Discord's error code for it, not the content
    assert caught.value.code == 50035
    assert caught.value.message == "invalid form body (content: BASE_TYPE_MAX_LENGTH)"


def test_an_echoed_request_reaches_no_error(discord: Discord, fake: DiscordFake) -> None:
    # given Discord repeating the request in its message and its form errors
    fake.echo = True
    # when a message holding a token, a code, a phone number and an address is too long
    with pytest.raises(PermanentError) as caught:
        discord.send_message(CHANNEL, f"{PAYLOAD} {'x' * 2_000}")
    # then the error keeps Discord's class, code and status, in words of our own only
    error = caught.value
    assert (type(error), error.code, error.status) == (PermanentError, 50035, 400)
    assert leaked(error, TOKEN) == []
    assert error.message == "invalid form body (content: BASE_TYPE_MAX_LENGTH)"


def test_an_unknown_code_gets_words_of_our_own(discord: Discord, fake: DiscordFake) -> None:
    # given Discord answering a code the client has no phrase for
    fake.script(DiscordFake.error(400, 30001, "Maximum number of guilds reached (100)"))
    # when a member is read / then the code is kept, in the status class's words
    with pytest.raises(PermanentError) as caught:
        discord.get_member(GUILD, USER)
    assert (caught.value.code, caught.value.message) == (30001,
                                                         "rejected the request (HTTP 400)")


# Rate-limit buckets ------------------------------------------------------------------


def test_an_exhausted_bucket_raises_rate_limited_without_sending(
        discord: Discord, fake: DiscordFake) -> None:
    # given a channel's bucket of 2 spent
    fake.bucket_limit = 2
    discord.send_message(CHANNEL, "one")
    discord.send_message(CHANNEL, "two")
    # when a third message is sent before the reset
    with pytest.raises(RateLimited) as caught:
        discord.send_message(CHANNEL, "three")
    # then Discord never saw it, and the wait is the bucket's reset
    assert fake.count("/messages") == 2
    assert caught.value.code == "bucket_exhausted"
    assert caught.value.retry_after == pytest.approx(1.0)


def test_sending_resumes_after_the_bucket_resets(
        discord: Discord, fake: DiscordFake, clock: Clock) -> None:
    # given a spent bucket
    fake.bucket_limit = 1
    discord.send_message(CHANNEL, "one")
    with pytest.raises(RateLimited):
        discord.send_message(CHANNEL, "two")
    # when its reset time passes
    clock.advance(1.0)
    # then the next message is sent
    assert discord.send_message(CHANNEL, "two")["content"] == "two"
    assert fake.count("/messages") == 2


def test_buckets_are_split_by_channel(discord: Discord, fake: DiscordFake) -> None:
    # given one channel's bucket spent
    fake.bucket_limit = 1
    discord.send_message(CHANNEL, "one")
    with pytest.raises(RateLimited):
        discord.send_message(CHANNEL, "two")
    # when another channel is posted to (same route, other major parameter)
    message = discord.send_message(OTHER_CHANNEL, "elsewhere")
    # then it goes out
    assert message["channel_id"] == OTHER_CHANNEL


def test_a_user_429_holds_only_its_bucket(discord: Discord, fake: DiscordFake) -> None:
    # given a 429 (scope user) for the channel's messages
    fake.script(DiscordFake.rate_limited(5.0), path="/messages")
    with pytest.raises(RateLimited) as caught:
        discord.send_message(CHANNEL, "one")
    assert caught.value.retry_after == 5.0
    # when the job posts there again, and reads a member
    with pytest.raises(RateLimited):
        discord.send_message(CHANNEL, "two")
    discord.get_member(GUILD, USER)
    # then only the other route reached Discord
    assert fake.count("/messages") == 1
    assert fake.count("/members/") == 1


def test_threads_sharing_a_client_never_overrun_a_bucket(
        discord: Discord, fake: DiscordFake) -> None:
    # given a bucket of 4 with 3 left, as the client has learnt from one call
    fake.bucket_limit = 4
    discord.send_message(CHANNEL, "first")
    start = threading.Barrier(8)

    def post(n: int) -> str:
        start.wait()
        try:
            discord.send_message(CHANNEL, f"message {n}")
            return "sent"
        except RateLimited as error:
            return str(error.code)

    # when 8 worker threads post at once
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(post, range(8)))
    # then exactly the 3 left were sent, the rest held back, and Discord never said 429
    assert sorted(outcomes) == ["bucket_exhausted"] * 5 + ["sent"] * 3
    assert fake.count("/messages") == 4
    assert len(fake.messages) == 4


# Global and shared 429s ----------------------------------------------------------------


def test_a_global_429_holds_every_bot_route(discord: Discord, fake: DiscordFake) -> None:
    # given a global 429
    fake.script(DiscordFake.global_429(30.0))
    with pytest.raises(RateLimited):
        discord.get_member(GUILD, USER)
    # when another route is called
    with pytest.raises(RateLimited) as caught:
        discord.send_message(CHANNEL, "hi")
    # then it is held for the rest of the global wait without being sent
    assert caught.value.code == "global_rate_limit"
    assert caught.value.retry_after == pytest.approx(30.0)
    assert fake.count("/messages") == 0


def test_a_global_429_does_not_hold_interaction_callbacks(
        discord: Discord, fake: DiscordFake) -> None:
    # given a global 429
    fake.script(DiscordFake.global_429(30.0))
    with pytest.raises(RateLimited):
        discord.get_member(GUILD, USER)
    # when an interaction is deferred (exempt from the global limit)
    discord.defer_interaction(INTERACTION, INTERACTION_TOKEN)
    # then it went out
    assert fake.count("/callback") == 1
    assert fake.interactions[INTERACTION].acknowledged


def test_a_global_429_lifts_after_its_wait(
        discord: Discord, fake: DiscordFake, clock: Clock) -> None:
    # given a global 429 of 30 s
    fake.script(DiscordFake.global_429(30.0))
    with pytest.raises(RateLimited):
        discord.get_member(GUILD, USER)
    # when 30 s pass
    clock.advance(30.0)
    # then bot calls go out again
    assert discord.send_message(CHANNEL, "back")["content"] == "back"


def test_a_shared_429_does_not_count_toward_the_invalid_budget(
        connect: Callable[..., Discord], fake: DiscordFake) -> None:
    # given a budget of one invalid request, and a 429 on a shared resource
    discord = connect(invalid_request_budget=1)
    fake.script(DiscordFake.shared_429(2.0), path="/messages")
    with pytest.raises(RateLimited):
        discord.send_message(CHANNEL, "hi")
    # when another route is called
    member = discord.get_member(GUILD, USER)
    # then it was sent: Discord does not count shared 429s, so neither does the client
    assert member["user"]["id"] == USER


def test_a_user_429_counts_toward_the_invalid_budget(
        connect: Callable[..., Discord], fake: DiscordFake) -> None:
    # given a budget of one invalid request, and a user-scope 429
    discord = connect(invalid_request_budget=1)
    fake.script(DiscordFake.rate_limited(2.0), path="/messages")
    with pytest.raises(RateLimited):
        discord.send_message(CHANNEL, "hi")
    # when another route is called
    with pytest.raises(RateLimited) as caught:
        discord.get_member(GUILD, USER)
    # then the budget holds it back
    assert caught.value.code == "invalid_request_budget"
    assert fake.count("/members/") == 0


# Invalid requests: stop before Cloudflare bans the IP ---------------------------------


def test_after_a_401_no_bot_request_reaches_discord(
        connect: Callable[..., Discord], fake: DiscordFake) -> None:
    # given a client whose bot token Discord refuses
    discord = connect("bm90LXRoZS1yaWdodC10b2tlbg.XyZ.wrongwrongwrongwrong")
    with pytest.raises(PermanentError) as first:
        discord.get_member(GUILD, USER)
    assert (first.value.code, first.value.status) == (0, 401)
    # when more bot calls are made
    with pytest.raises(PermanentError) as again:
        discord.send_message(CHANNEL, "hi")
    with pytest.raises(PermanentError):
        discord.add_role(GUILD, USER, ROLE)
    # then they fail at once, and Discord saw only the first
    assert again.value.status == 401
    assert fake.count() == 1


def test_a_refused_bot_token_leaves_interaction_replies_working(
        connect: Callable[..., Discord], fake: DiscordFake) -> None:
    # given a client whose bot token Discord refused
    discord = connect("bm90LXRoZS1yaWdodC10b2tlbg.XyZ.wrongwrongwrongwrong")
    with pytest.raises(PermanentError):
        discord.get_member(GUILD, USER)
    # when an interaction is deferred (its token is in the path, no bot auth)
    discord.defer_interaction(INTERACTION, INTERACTION_TOKEN)
    # then it went out
    assert fake.interactions[INTERACTION].acknowledged


def test_a_repeated_403_is_not_sent_during_its_cooldown(
        discord: Discord, fake: DiscordFake) -> None:
    # given a role above the bot's: Discord answers 403 50013
    with pytest.raises(PermanentError):
        discord.add_role(GUILD, USER, ADMIN_ROLE)
    # when the same call is made again within the cool-down
    with pytest.raises(PermanentError) as again:
        discord.add_role(GUILD, USER, ADMIN_ROLE)
    # then it fails the same way without reaching Discord
    assert (again.value.code, again.value.status) == (50013, 403)
    assert fake.count("/roles/") == 1


def test_a_403_is_sent_again_after_its_cooldown(
        discord: Discord, fake: DiscordFake, clock: Clock) -> None:
    # given a 403 remembered
    with pytest.raises(PermanentError):
        discord.add_role(GUILD, USER, ADMIN_ROLE)
    # when the cool-down passes and the call is made again
    clock.advance(60.0)
    with pytest.raises(PermanentError):
        discord.add_role(GUILD, USER, ADMIN_ROLE)
    # then Discord was asked again
    assert fake.count("/roles/") == 2


def test_the_invalid_request_budget_stops_sending(
        connect: Callable[..., Discord], fake: DiscordFake) -> None:
    # given a budget of 3 and three 403s on different members
    discord = connect(invalid_request_budget=3)
    fake.script(DiscordFake.error(403, 50001, "Missing Access"), times=3)
    for user in ("1", "2", "3"):
        with pytest.raises(PermanentError):
            discord.get_member(GUILD, user)
    # when a call that would succeed is made
    with pytest.raises(RateLimited) as caught:
        discord.get_member(GUILD, USER)
    # then it is held until the oldest failure is 10 minutes old, and not sent
    assert caught.value.code == "invalid_request_budget"
    assert caught.value.retry_after == pytest.approx(600.0)
    assert fake.count() == 3


def test_the_budget_frees_up_as_failures_age_out(
        connect: Callable[..., Discord], fake: DiscordFake, clock: Clock) -> None:
    # given a spent budget of one
    discord = connect(invalid_request_budget=1)
    fake.script(DiscordFake.error(403, 50001, "Missing Access"))
    with pytest.raises(PermanentError):
        discord.get_member(GUILD, "1")
    # when the failure is 10 minutes old
    clock.advance(600.0)
    # then calls go out again
    assert discord.get_member(GUILD, USER)["user"]["id"] == USER


# Secrets and settings ----------------------------------------------------------------


def test_the_token_never_appears_in_repr_errors_or_logs(
        connect: Callable[..., Discord], fake: DiscordFake,
        caplog: pytest.LogCaptureFixture) -> None:
    # given a client whose token Discord refuses, and an answer that echoes it
    caplog.set_level(logging.DEBUG)
    token = "c2VjcmV0LXRva2VuLXNob3VsZC1oaWRl.AbCdEf.neverShowThisTokenAnywhere0123"
    discord = connect(token)
    fake.script(DiscordFake.error(400, 50035, f"bad header Authorization: Bot {token}"))
    # when calls fail, the first with the echo, then a 401, then refused locally
    errors: list[JobError] = []
    for call in (_send, _member, _member):
        with pytest.raises(JobError) as caught:
            call(discord)
        errors.append(caught.value)
    # then the token is nowhere to be seen
    shown = [repr(discord), repr(discord.limits), caplog.text]
    shown += [f"{e} {e!r} {e.as_dict()}" for e in errors]
    assert all(token not in text for text in shown)


def test_from_settings_without_a_token_is_not_configured() -> None:
    # given settings without DISCORD_BOT_TOKEN
    config = settings.load(_env_file=None, discord_bot_token=None)
    # when the client is built
    with pytest.raises(NotConfigured) as caught:
        Discord.from_settings(config)
    # then the error names the setting
    assert caught.value.setting == "DISCORD_BOT_TOKEN"
    assert caught.value.provider == "Discord"


def test_from_settings_builds_a_working_client(fake: DiscordFake) -> None:
    # given settings pointing at the fake
    config = settings.load(_env_file=None, discord_bot_token=TOKEN,
                           discord_api_url=fake.api_url, discord_invalid_request_budget=7)
    # when the client is built and used
    discord = Discord.from_settings(config)
    try:
        member = discord.get_member(GUILD, USER)
    finally:
        discord.close()
    # then it reached the fake with the bot token and took the budget
    assert member["user"]["id"] == USER
    assert discord.limits.budget == 7


# Buckets shared by every process through the state store ----------------------------


def test_a_bucket_one_process_spent_holds_another_processes_calls(
        connect: Callable[..., Discord], fake: DiscordFake, state: Any, prefix: str) -> None:
    from integrations.discord import SharedBuckets

    # given two processes' clients sharing their buckets through Redis
    first = connect(shared=SharedBuckets(state, prefix=prefix))
    second = connect(shared=SharedBuckets(state, prefix=prefix))
    fake.bucket_limit = 2
    first.send_message(CHANNEL, "one")
    first.send_message(CHANNEL, "two")
    # when the other process posts to the same channel before the reset
    with pytest.raises(RateLimited) as caught:
        second.send_message(CHANNEL, "three")
    # then Discord never saw it, the wait is the bucket's reset, another channel goes
    assert fake.count("/messages") == 2
    assert caught.value.code == "bucket_exhausted"
    assert 0.5 < caught.value.retry_after <= 1.0
    assert second.send_message(OTHER_CHANNEL, "elsewhere")["channel_id"] == OTHER_CHANNEL


def test_a_global_429_seen_by_one_process_holds_every_processes_bot_calls(
        connect: Callable[..., Discord], fake: DiscordFake, state: Any, prefix: str) -> None:
    from integrations.discord import SharedBuckets

    first = connect(shared=SharedBuckets(state, prefix=prefix))
    second = connect(shared=SharedBuckets(state, prefix=prefix))
    fake.script(DiscordFake.rate_limited(3.0, scope="global"), path="/messages")
    with pytest.raises(RateLimited):
        first.send_message(CHANNEL, "one")
    with pytest.raises(RateLimited) as caught:
        second.get_member(GUILD, USER)
    assert caught.value.code == "global_rate_limit" and caught.value.retry_after > 2.0
    assert fake.count("/members/") == 0
    # and the state it keeps expires with the windows
    assert all(state.pttl(key) > 0 for key in state.scan_iter(f"{prefix}:discord:*"))

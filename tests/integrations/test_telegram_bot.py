"""The Bot API client against a loopback Telegram: results, error mapping, secrecy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from integrations.http import Http, HttpConfig, body_json
from integrations.telegram_bot import TelegramBot
from switchyard.base.errors import (
    JobError,
    NotConfigured,
    PermanentError,
    RateLimited,
    RetryableError,
)
from switchyard.base.settings import load
from tests.fakes.base import closed_port_url, html_error, stall
from tests.fakes.telegram import TelegramFake
from tests.integrations.leaks import PAYLOAD, leaked

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
QUICK = HttpConfig(connect_timeout_ms=500, timeout_ms=300)

CHANNEL = -1001000000001  # the bot is an administrator with every right it needs
NO_RIGHTS = -1001000000002  # the bot is an administrator without invite/restrict rights
LEFT = -1001000000003  # the bot is not in this channel
KICKED = -1001000000004  # the bot was kicked out
OLD_GROUP = -4000000001  # a group upgraded to...
SUPERGROUP = -1001000000005  # ...this supergroup
UNKNOWN_CHAT = -1009999999999

OWNER, MEMBER, REQUESTER, STRANGER = 42, 1001, 1002, 1003
FAN, BLOCKER, SILENT = 2001, 2002, 2003  # started the bot / blocked it / never opened it
UNKNOWN_USER = 999_999


@pytest.fixture
def fake() -> Iterator[TelegramFake]:
    with TelegramFake(TOKEN) as server:
        assert isinstance(server, TelegramFake)
        server.add_chat(CHANNEL, "Members only")
        server.add_chat(NO_RIGHTS, "Read only", can_invite_users=False,
                        can_restrict_members=False)
        server.add_chat(LEFT, "Gone", bot_status="left")
        server.add_chat(KICKED, "Hostile", bot_status="kicked")
        server.add_chat(SUPERGROUP, "Upgraded", chat_type="supergroup")
        server.add_chat(OLD_GROUP, "Old group", chat_type="group", migrate_to=SUPERGROUP)
        server.add_member(CHANNEL, OWNER, "creator")
        server.add_member(CHANNEL, MEMBER)
        server.add_member(SUPERGROUP, MEMBER)
        server.request_join(CHANNEL, REQUESTER)
        server.add_user(STRANGER)
        server.add_user(FAN, started=True)
        server.add_user(BLOCKER, started=True, blocked=True)
        server.add_user(SILENT)
        yield server


@pytest.fixture
def bot(fake: TelegramFake) -> Iterator[TelegramBot]:
    client = TelegramBot(TOKEN, base_url=fake.url, config=QUICK)
    yield client
    client.close()


def in_an_hour() -> int:
    return int(time.time()) + 3600


# Results.

def test_get_me_returns_the_bot_user(bot: TelegramBot) -> None:
    # given a bot whose token starts with its id / when it asks who it is
    me = bot.get_me()
    # then Telegram answers with its User, whose id is the token's prefix
    assert me["id"] == bot.bot_id == 123456789
    assert me["is_bot"] is True


def test_an_invite_link_is_single_use_and_expires(bot: TelegramBot, fake: TelegramFake) -> None:
    # given a channel where the bot may invite / when it creates a link
    expire = in_an_hour()
    link = bot.create_invite_link(CHANNEL, expire_date=expire, name="order 17")
    # then the link admits one person, expires, and never asks for approval
    assert link["invite_link"].startswith("https://t.me/+")
    assert (link["member_limit"], link["expire_date"], link["name"]) == (1, expire, "order 17")
    assert link["creates_join_request"] is False
    assert "creates_join_request" not in fake.last("createChatInviteLink").json()
    assert fake.invite_links[0]["chat_id"] == CHANNEL


def test_an_invite_link_admits_exactly_one_person(bot: TelegramBot, fake: TelegramFake) -> None:
    # given a fresh single-use link
    link = bot.create_invite_link(CHANNEL, expire_date=in_an_hour())["invite_link"]
    # when two people open it
    first, second = fake.join_by_link(link, STRANGER), fake.join_by_link(link, SILENT)
    # then only the first one gets in
    assert (first, second) == ("joined", "used up")
    assert bot.get_chat_member(CHANNEL, STRANGER)["status"] == "member"


def test_send_message_returns_the_message(bot: TelegramBot, fake: TelegramFake) -> None:
    # given a channel the bot posts in / when it sends a formatted message
    message = bot.send_message(CHANNEL, "<b>Welcome</b>", parse_mode="HTML")
    # then the Message names the chat and the text, and the fake kept it
    assert message["chat"] == {"id": CHANNEL, "title": "Members only", "type": "channel"}
    assert message["text"] == "<b>Welcome</b>"
    assert fake.messages == [message]
    assert fake.last("sendMessage").json()["parse_mode"] == "HTML"


def test_approving_a_join_request_lets_the_user_in(bot: TelegramBot, fake: TelegramFake) -> None:
    # given a pending join request / when the bot approves it
    approved = bot.approve_join_request(CHANNEL, REQUESTER)
    # then the user is a member
    assert approved is True
    assert fake.status(CHANNEL, REQUESTER) == "member"


def test_ban_member_keeps_the_user_out(bot: TelegramBot, fake: TelegramFake) -> None:
    # given a member / when the bot bans them until a date
    until = in_an_hour()
    banned = bot.ban_member(CHANNEL, MEMBER, until_date=until, revoke_messages=False)
    # then they are kicked, with that date
    assert banned is True
    assert bot.get_chat_member(CHANNEL, MEMBER) == {
        "status": "kicked", "until_date": until,
        "user": {"id": MEMBER, "is_bot": False, "first_name": "User"}}


def test_unban_member_lifts_a_ban_and_only_a_ban(bot: TelegramBot, fake: TelegramFake) -> None:
    # given a banned user and a current member
    bot.ban_member(CHANNEL, STRANGER)
    # when the bot unbans both
    results = bot.unban_member(CHANNEL, STRANGER), bot.unban_member(CHANNEL, MEMBER)
    # then the ban is gone, the member stays, and only_if_banned was always sent
    assert results == (True, True)
    assert (fake.status(CHANNEL, STRANGER), fake.status(CHANNEL, MEMBER)) == ("left", "member")
    assert fake.last("unbanChatMember").json()["only_if_banned"] is True


def test_remove_member_bans_then_unbans_so_they_can_come_back(
    bot: TelegramBot, fake: TelegramFake,
) -> None:
    # given a member / when the bot removes them
    removed = bot.remove_member(CHANNEL, MEMBER)
    # then two calls were made, ban then unban-if-banned, and they are out but not banned
    assert removed is True
    calls = [(r.path.rsplit("/", 1)[1], r.json()) for r in fake.requests]
    assert calls == [("banChatMember", {"chat_id": CHANNEL, "user_id": MEMBER}),
                     ("unbanChatMember", {"chat_id": CHANNEL, "user_id": MEMBER,
                                          "only_if_banned": True})]
    assert fake.status(CHANNEL, MEMBER) == "left"
    assert fake.banned == set()


def test_remove_member_twice_is_harmless(bot: TelegramBot, fake: TelegramFake) -> None:
    # given a member already removed / when the job runs again
    bot.remove_member(CHANNEL, MEMBER)
    again = bot.remove_member(CHANNEL, MEMBER)
    # then it succeeds and leaves the same state
    assert again is True
    assert fake.status(CHANNEL, MEMBER) == "left"


def test_get_chat_member_shows_the_bots_rights(bot: TelegramBot) -> None:
    # given a channel where the bot is an administrator / when it checks itself
    member = bot.get_chat_member(CHANNEL, bot.bot_id)
    # then its status and the rights the jobs need are there
    assert member["status"] == "administrator"
    assert member["can_invite_users"] is member["can_restrict_members"] is True
    assert member["user"]["is_bot"] is True


def test_a_lost_right_shows_in_get_chat_member(bot: TelegramBot) -> None:
    # given a channel where the bot cannot invite / when it checks itself
    member = bot.get_chat_member(NO_RIGHTS, bot.bot_id)
    # then the missing rights read false
    assert (member["can_invite_users"], member["can_restrict_members"]) == (False, False)


# Classification: every answer in the reference, through the public methods.

@dataclass
class Case:
    """One reference answer: how to provoke it, and what the client must turn it into."""

    name: str
    act: Callable[[TelegramBot, TelegramFake], Any]
    error: type[JobError] | None  # None: the call succeeds
    code: str | int | None = None
    status: int | None = None
    message: str | None = None
    retry_after: float | None = None


def scripted(reply: Any, call: Callable[[TelegramBot], Any]) -> Callable[..., Any]:
    def act(bot: TelegramBot, fake: TelegramFake) -> Any:
        fake.script(reply)
        return call(bot)
    return act


def get_me_as(token: str, url: str) -> Any:
    other = TelegramBot(token, base_url=url, config=QUICK)
    try:
        return other.get_me()
    finally:
        other.close()


def with_token(token: str) -> Callable[..., Any]:
    return lambda bot, fake: get_me_as(token, fake.url)


def refused(bot: TelegramBot, fake: TelegramFake) -> Any:
    return get_me_as(TOKEN, closed_port_url())


def member(chat: int, user: int) -> Callable[..., Any]:
    return lambda bot, fake: bot.get_chat_member(chat, user)


def ban(chat: int, user: int) -> Callable[..., Any]:
    return lambda bot, fake: bot.ban_member(chat, user)


def say(chat: int) -> Callable[..., Any]:
    return lambda bot, fake: bot.send_message(chat, "hello")


def approve(user: int) -> Callable[..., Any]:
    return lambda bot, fake: bot.approve_join_request(CHANNEL, user)


def invite(chat: int) -> Callable[..., Any]:
    return lambda bot, fake: bot.create_invite_link(chat, expire_date=in_an_hour())


CASES = [
    Case("chat not found", member(UNKNOWN_CHAT, MEMBER), PermanentError, 400, 400,
         "chat not found"),
    Case("user not found", member(CHANNEL, UNKNOWN_USER), PermanentError, 400, 400,
         "user not found"),
    Case("participant id invalid", ban(CHANNEL, UNKNOWN_USER), PermanentError, 400, 400,
         "user is not known to the chat (PARTICIPANT_ID_INVALID)"),
    Case("user id invalid", ban(CHANNEL, -5), PermanentError, 400, 400,
         "invalid user id (USER_ID_INVALID)"),
    Case("no right to restrict", ban(NO_RIGHTS, MEMBER), PermanentError, 400, 400,
         "the bot has not enough rights to restrict members"),
    Case("no right to invite", invite(NO_RIGHTS), PermanentError, 400, 400,
         "the bot has not enough rights to manage invite links"),
    Case("chat owner", ban(CHANNEL, OWNER), PermanentError, 400, 400,
         "the chat owner cannot be removed"),
    Case("bot not a member", say(LEFT), PermanentError, 403, 403,
         "the bot is not a member of the chat"),
    Case("bot kicked", say(KICKED), PermanentError, 403, 403,
         "the bot was kicked from the chat"),
    Case("bot blocked", say(BLOCKER), PermanentError, 403, 403,
         "the bot was blocked by the user"),
    Case("cannot initiate", say(SILENT), PermanentError, 403, 403,
         "the bot cannot start a conversation with the user"),
    Case("invalid token", with_token("123456789:AAwrongwrongwrongwrongwrongwrongwr"),
         PermanentError, 401, 401, "the bot token was refused"),
    Case("malformed token", with_token("not-a-token"), PermanentError, 404, 404,
         "the bot token is malformed or the method unknown"),
    Case("requester missing on approve", approve(STRANGER), None),
    Case("already participant on approve", approve(MEMBER), None),
    Case("upgraded group", say(OLD_GROUP), None),
    Case("429 delay in the body", scripted(TelegramFake.rate_limited(5, header=9),
                                           TelegramBot.get_me),
         RateLimited, 429, 429, "rate limited", retry_after=5),
    Case("429 delay in the header", scripted(
        TelegramFake.error(429, "Too Many Requests", headers={"Retry-After": "7"}),
        TelegramBot.get_me), RateLimited, 429, 429, retry_after=7),
    Case("5xx html page", scripted(html_error(502, "Bad Gateway"), TelegramBot.get_me),
         RetryableError, 502, 502, "server error (HTTP 502)"),
    Case("5xx json", scripted(TelegramFake.error(500, "Internal Server Error"),
                              TelegramBot.get_me), RetryableError, 500, 500),
    Case("stall", scripted(stall(), TelegramBot.get_me), RetryableError, "timeout"),
    Case("connection refused", refused, RetryableError, "connect_failed"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_reference_classification(case: Case, bot: TelegramBot, fake: TelegramFake) -> None:
    # given the answer the case provokes / when the client gets it
    if case.error is None:
        # then an already-done (or followed) answer is plain success
        assert case.act(bot, fake)
        return
    with pytest.raises(case.error) as caught:
        case.act(bot, fake)
    # then it is exactly the reference's class, with Telegram's code and our words for it
    error = caught.value
    assert type(error) is case.error
    assert (error.code, error.status) == (case.code, case.status)
    assert error.provider == "Telegram"
    if case.message is not None:
        assert error.message == case.message
    if case.retry_after is not None:
        assert isinstance(error, RateLimited) and error.retry_after == case.retry_after


# The overrides, one behaviour each.

def test_an_upgraded_group_is_retried_once_with_the_new_id(
    bot: TelegramBot, fake: TelegramFake, caplog: pytest.LogCaptureFixture,
) -> None:
    # given a group that moved to a supergroup
    with caplog.at_level(logging.WARNING, logger="switchyard.telegram"):
        # when the bot posts to the old id
        message = bot.send_message(OLD_GROUP, "hello")
    # then exactly two requests went out, the second to the new id, and a warning names both
    assert fake.count("sendMessage") == 2
    assert [r.json()["chat_id"] for r in fake.requests] == [OLD_GROUP, SUPERGROUP]
    assert message["chat"]["id"] == SUPERGROUP
    assert str(OLD_GROUP) in caplog.text and str(SUPERGROUP) in caplog.text


def test_a_second_migration_answer_is_not_followed(bot: TelegramBot, fake: TelegramFake) -> None:
    # given Telegram says "moved" twice in a row
    moved = TelegramFake.error(400, "Bad Request: group chat was upgraded to a supergroup chat",
                               {"migrate_to_chat_id": SUPERGROUP})
    fake.script(moved, times=2)
    # when the bot posts / then it gives up after one retry, permanently
    with pytest.raises(PermanentError) as caught:
        bot.send_message(OLD_GROUP, "hello")
    assert fake.count() == 2
    assert caught.value.status == 400


def test_approving_twice_succeeds_both_times(bot: TelegramBot, fake: TelegramFake) -> None:
    # given a join request approved once / when a retried job approves it again
    first = bot.approve_join_request(CHANNEL, REQUESTER)
    second = bot.approve_join_request(CHANNEL, REQUESTER)
    # then both count as success (the second got USER_ALREADY_PARTICIPANT)
    assert (first, second) == (True, True)
    assert fake.count("approveChatJoinRequest") == 2


def test_method_names_are_case_insensitive(fake: TelegramFake) -> None:
    # given the fake, like Telegram / when a method is named in lower case
    http = Http("Telegram", fake.url, config=QUICK)
    answer = body_json(http.request("POST", f"/bot{TOKEN}/getme", json={}))
    http.close()
    # then it is the same method
    assert answer["ok"] is True and answer["result"]["id"] == 123456789


def test_an_unknown_description_gets_words_of_our_own(bot: TelegramBot,
                                                       fake: TelegramFake) -> None:
    # given a 400 whose description the client has no phrase for
    fake.script(TelegramFake.error(400, "Bad Request: SOMETHING_NEW"))
    # when the bot calls / then the error keeps the code, in the status class's words
    with pytest.raises(PermanentError) as caught:
        bot.get_me()
    assert (caught.value.code, caught.value.message) == (400,
                                                         "rejected the request (HTTP 400)")


# Secrecy.

def test_an_echoed_request_reaches_no_error(bot: TelegramBot, fake: TelegramFake) -> None:
    # given Telegram repeating the request (the token in the URL, the text) in descriptions
    fake.echo = True
    # when a text holding a token, a code, a phone number and an address goes to no chat
    with pytest.raises(PermanentError) as caught:
        bot.send_message(UNKNOWN_CHAT, PAYLOAD)
    # then the error keeps Telegram's class, code and status, in words of our own only
    error = caught.value
    assert (type(error), error.code, error.status) == (PermanentError, 400, 400)
    assert leaked(error, TOKEN.partition(":")[2]) == []
    assert error.message == "chat not found"


def test_an_echoed_already_approved_answer_is_still_success(
    bot: TelegramBot, fake: TelegramFake,
) -> None:
    # given Telegram repeating the request after its USER_ALREADY_PARTICIPANT description
    fake.echo = True
    # when a member's join request is approved / then it is success, as without the echo
    assert bot.approve_join_request(CHANNEL, MEMBER) is True


def test_the_token_is_not_in_the_repr(bot: TelegramBot) -> None:
    # given a bot / when it is printed / then only its id shows
    assert TOKEN not in repr(bot)
    assert TOKEN.partition(":")[2] not in repr(bot)
    assert "123456789" in repr(bot)


def test_the_token_is_not_in_any_error(bot: TelegramBot, fake: TelegramFake) -> None:
    # given failures of every kind: a rate limit, a 5xx, a stall, a Telegram error, a refusal
    for reply in (TelegramFake.rate_limited(3), html_error(503, "Service Unavailable"), stall()):
        fake.script(reply)
    calls: list[Callable[[], Any]] = [bot.get_me, bot.get_me, bot.get_me,
                                      lambda: bot.get_chat_member(UNKNOWN_CHAT, 1),
                                      lambda: get_me_as(TOKEN, closed_port_url())]
    failures = []
    # when each call fails
    for call in calls:
        with pytest.raises(JobError) as caught:
            call()
        failures.append(caught.value)
    # then each is Telegram's failure with its code and text...
    assert [(error.provider, error.code) for error in failures] == [
        ("Telegram", 429), ("Telegram", 503), ("Telegram", "timeout"), ("Telegram", 400),
        ("Telegram", "connect_failed")]
    assert str(failures[3]) == "Telegram [400] chat not found"  # Telegram's description
    # ...and no error's text, repr or summary holds the token
    secret = TOKEN.partition(":")[2]
    for error in failures:
        assert str(error).startswith(f"Telegram [{error.code}] ") and error.as_dict()["message"]
        assert secret not in f"{error} {error!r} {error.as_dict()}"


# Settings.

def test_from_settings_needs_a_token() -> None:
    # given settings without TELEGRAM_BOT_TOKEN / when a bot is built / then it says which
    with pytest.raises(NotConfigured) as caught:
        TelegramBot.from_settings(load(_env_file=None, telegram_bot_token=None))
    assert caught.value.setting == "TELEGRAM_BOT_TOKEN"
    assert caught.value.provider == "Telegram"


def test_from_settings_uses_the_api_url_and_timeouts(fake: TelegramFake) -> None:
    # given settings naming the fake as the API / when the bot calls it
    settings = load(_env_file=None, telegram_bot_token=TOKEN, telegram_api_url=fake.url,
                    http_timeout_ms=1_000)
    bot = TelegramBot.from_settings(settings)
    me = bot.get_me()
    bot.close()
    # then it reached the fake
    assert me["username"] == "switchyard_test_bot"

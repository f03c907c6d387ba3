"""Bot operations (seed 001), end to end on both databases against the Bot API fake."""

from __future__ import annotations

import time

from store import subscriptions
from store.models import Listing, User
from tests.actors.conftest import World, unique
from tests.fakes.base import html_error
from tests.fakes.telegram import TelegramFake


def new_channel(world: World, *, can_invite_users: bool = True,
                can_restrict_members: bool = True) -> int:
    chat_id = -1_000_000_000_000 - int(time.time_ns() % 10**9)
    world.telegram.add_chat(chat_id, f"Paid {chat_id}", can_invite_users=can_invite_users,
                            can_restrict_members=can_restrict_members)
    return chat_id


def new_user(world: World, *, started: bool = True) -> tuple[str, int]:
    """A user of ours with a linked Telegram account; (our id, Telegram id)."""
    user_id, telegram_id = unique("u"), int(time.time_ns() % 10**9) + 10_000
    world.telegram.add_user(telegram_id, "Ann", started=started)
    with world.db.session() as session:
        session.add(User(id=user_id, telegram_user_id=telegram_id, name="Ann"))
    return user_id, telegram_id


def invite(user_id: str, chat_id: int, subscription_id: str) -> dict[str, object]:
    return {"operation": "INVITE_USER", "userId": user_id, "channelId": chat_id,
            "subscriptionId": subscription_id, "orderId": unique("order")}


def calls(world: World, method: str, chat_id: int) -> list[dict[str, object]]:
    """The Bot API calls of `method` the fake received about `chat_id`, in order."""
    return [r.json() for r in world.telegram.requests
            if r.path.lower().endswith("/" + method.lower()) and r.json().get("chat_id") == chat_id]


def test_invite_sends_a_single_use_link_and_keeps_it_on_the_subscription(world):
    # given an active subscriber who has started the bot
    chat_id, (user_id, telegram_id) = new_channel(world), new_user(world)
    subscription_id = unique("sub")
    # when the invite runs
    job = world.run("invite_user", invite(user_id, chat_id, subscription_id))
    # then the user got a single-use, expiring link in a private message
    assert job["status"] == "done", job
    assert job["result"]["notified"] is True and "inviteLink" not in job["result"]
    [link] = [x for x in world.telegram.invite_links if x["chat_id"] == chat_id]
    assert link["member_limit"] == 1 and link["expire_date"] > time.time() + 23 * 3600
    [dm] = [m for m in world.telegram.messages if m["chat"]["id"] == telegram_id]
    assert link["invite_link"] in dm["text"]
    # and the subscription holds it; it admits the user once
    with world.db.session() as session:
        sub = subscriptions.subscription(session, subscription_id)
        assert sub is not None and sub.invite_link == link["invite_link"]
    assert world.telegram.join_by_link(link["invite_link"], telegram_id) == "joined"
    assert world.telegram.join_by_link(link["invite_link"], telegram_id + 1) == "used up"


def test_a_user_who_never_started_the_bot_still_gets_a_link_on_the_subscription(world):
    chat_id, (user_id, _) = new_channel(world), new_user(world, started=False)
    subscription_id = unique("sub")
    job = world.run("invite_user", invite(user_id, chat_id, subscription_id))
    assert job["status"] == "done" and job["result"]["notified"] is False
    with world.db.session() as session:
        sub = subscriptions.subscription(session, subscription_id)
        assert sub is not None and sub.invite_link is not None


def test_the_same_invite_sent_twice_makes_one_link(world):
    # given two messages for the same subscription (a producer that retried)
    chat_id, (user_id, _) = new_channel(world), new_user(world)
    payload = invite(user_id, chat_id, unique("sub"))
    first, second = world.send("invite_user", payload), world.send("invite_user", payload)
    # then one ran and the other was skipped: one link, one message
    statuses = sorted(world.finished(m.message_id)["status"] for m in (first, second))
    assert statuses == ["done", "skipped"]
    assert len(calls(world, "createChatInviteLink", chat_id)) == 1


def test_a_rate_limit_waits_the_servers_delay_without_spending_an_attempt(world):
    chat_id, (user_id, _) = new_channel(world), new_user(world)
    world.telegram.script(TelegramFake.rate_limited(1), path="createChatInviteLink")
    job = world.run("invite_user", invite(user_id, chat_id, unique("sub")))
    assert job["status"] == "done" and job["retries"] == 0 and job["deferred_ms"] == 1000


def test_server_errors_retry_after_1_then_2_seconds(world):
    # given the Bot API fails twice with an HTML 502
    chat_id, (user_id, _) = new_channel(world), new_user(world)
    world.telegram.script(html_error(502), path="createChatInviteLink", times=2)
    # when the invite runs
    job = world.run("invite_user", invite(user_id, chat_id, unique("sub")))
    # then it succeeded on the third attempt, after backoffs of about 1 s and 2 s
    assert job["status"] == "done" and job["retries"] == 2
    at = [r.at for r in world.telegram.requests if r.path.endswith("/createChatInviteLink")
          and r.json().get("chat_id") == chat_id]
    assert len(at) == 3
    first_wait, second_wait = at[1] - at[0], at[2] - at[1]
    assert 0.9 <= first_wait < 5 and 1.8 <= second_wait < 8


def test_a_permission_error_is_final_at_once(world):
    chat_id, (user_id, _) = new_channel(world, can_invite_users=False), new_user(world)
    job = world.run("invite_user", invite(user_id, chat_id, unique("sub")))
    assert job["status"] == "failed" and job["runs"] == 1
    assert job["error"]["code"] == 400 and "not enough rights" in job["error"]["message"]


def test_an_unknown_user_is_final_at_once(world):
    chat_id = new_channel(world)
    job = world.run("invite_user", invite(unique("nobody"), chat_id, unique("sub")))
    assert job["status"] == "failed" and job["runs"] == 1
    assert job["error"]["code"] == "user_not_found"


def test_retries_stop_at_the_limit_and_dead_letter(world):
    # given a channel that keeps failing, and a job allowed one retry
    chat_id, (user_id, _) = new_channel(world), new_user(world)
    world.telegram.script(html_error(503, "Service Unavailable"), path="createChatInviteLink",
                          times=2)
    message = world.send("invite_user", invite(user_id, chat_id, unique("sub")), max_retries=1)
    job = world.finished(message.message_id)
    assert job["status"] == "failed" and job["runs"] == 2
    assert world.sy.state.dead_letters.show(message.message_id) is not None


def test_remove_for_expiry_bans_then_unbans_and_closes_the_subscription(world):
    # given a subscriber in the channel
    chat_id, (user_id, telegram_id) = new_channel(world), new_user(world)
    subscription_id = unique("sub")
    assert world.run("invite_user", invite(user_id, chat_id, subscription_id))["status"] == "done"
    world.telegram.add_member(chat_id, telegram_id)
    # when the subscription expires
    job = world.run("remove_user", {"operation": "REMOVE_USER", "userId": user_id,
                                    "channelId": chat_id, "subscriptionId": subscription_id,
                                    "reason": "expiry"})
    # then they are out but not banned, and the subscription says why
    assert job["status"] == "done", job
    assert world.telegram.status(chat_id, telegram_id) == "left"
    assert (chat_id, telegram_id) not in world.telegram.banned
    unban = calls(world, "unbanChatMember", chat_id)
    assert [c["only_if_banned"] for c in unban] == [True]
    assert len(calls(world, "banChatMember", chat_id)) == 1
    with world.db.session() as session:
        sub = subscriptions.subscription(session, subscription_id)
        assert sub is not None and (sub.status, sub.removal_reason) == ("expired", "expiry")


def test_remove_for_refund_marks_the_subscription_refunded(world):
    chat_id, (user_id, _) = new_channel(world), new_user(world)
    subscription_id = unique("sub")
    world.run("invite_user", invite(user_id, chat_id, subscription_id))
    job = world.run("remove_user", {"userId": user_id, "channelId": chat_id,
                                    "subscriptionId": subscription_id, "reason": "refund"})
    assert job["status"] == "done"
    with world.db.session() as session:
        sub = subscriptions.subscription(session, subscription_id)
        assert sub is not None and sub.status == "refunded"


def verify(world: World, chat_id: int) -> tuple[dict[str, object], Listing]:
    listing_id = unique("listing")
    job = world.run("verify_permissions", {"operation": "VERIFY_PERMISSIONS",
                                           "channelId": chat_id, "listingId": listing_id})
    assert job["status"] == "done", job
    with world.db.session() as session:
        listing = subscriptions.listing(session, listing_id)
        assert listing is not None
        return job["result"], listing


def test_verify_accepts_an_admin_bot_with_both_rights(world):
    result, listing = verify(world, new_channel(world))
    assert result["verified"] is True and result["missing"] == []
    assert listing.bot_verified is True and listing.verified_at is not None


def test_verify_names_the_missing_right_on_the_listing(world):
    result, listing = verify(world, new_channel(world, can_restrict_members=False))
    assert result["verified"] is False and result["missing"] == ["can_restrict_members"]
    assert listing.bot_verified is False
    assert "can_restrict_members" in (listing.verification_error or "")


def test_verify_where_the_bot_is_not_a_member_is_a_no_not_a_failure(world):
    chat_id = -1_000_000_000_000 - int(time.time_ns() % 10**9)  # a chat the bot never saw
    result, listing = verify(world, chat_id)
    assert result["verified"] is False and listing.bot_verified is False
    assert "chat not found" in str(result["error"])

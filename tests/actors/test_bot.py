"""Bot operations (seed 001), end to end on both databases against the Bot API fake."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest

from actors import bot
from store import subscriptions
from store.db import Database
from store.models import Listing, Subscription, User
from switchyard import boot as runtime
from switchyard.runtime.jobs import Job, jobs_of
from tests.actors.conftest import BOT_TOKEN, World, unique
from tests.fakes.base import html_error
from tests.fakes.telegram import TelegramFake
from tests.support.waiting import wait_for


def new_channel(world: World | Ops, *, can_invite_users: bool = True,
                can_restrict_members: bool = True) -> int:
    chat_id = -1_000_000_000_000 - int(time.time_ns() % 10**9)
    world.telegram.add_chat(chat_id, f"Paid {chat_id}", can_invite_users=can_invite_users,
                            can_restrict_members=can_restrict_members)
    return chat_id


def new_user(world: World | Ops, *, started: bool = True) -> tuple[str, int]:
    """A user of ours with a linked Telegram account; (our id, Telegram id)."""
    user_id, telegram_id = unique("u"), int(time.time_ns() % 10**9) + 10_000
    world.telegram.add_user(telegram_id, "Ann", started=started)
    with world.db.session() as session:
        session.add(User(id=user_id, telegram_user_id=telegram_id, name="Ann"))
    return user_id, telegram_id


def invite(user_id: str, chat_id: int, subscription_id: str) -> dict[str, object]:
    return {"operation": "INVITE_USER", "userId": user_id, "channelId": chat_id,
            "subscriptionId": subscription_id, "orderId": unique("order")}


def calls(world: World | Ops, method: str, chat_id: int) -> list[dict[str, object]]:
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


# An invite checks, when it runs, that the subscription still entitles the user (issue
# 26): on both brokers, through a retry and through a delay.

@dataclass
class Ops:
    """The bot's jobs on an in-process worker, on the parametrised broker and database."""

    sy: runtime.App
    db: Database
    telegram: TelegramFake
    queue: str

    def send(self, actor: str, payload: dict[str, Any], *, delay: int | None = None,
             **options: Any) -> dramatiq.Message[Any]:
        return self.sy.broker.enqueue(dramatiq.Message(
            queue_name=self.queue, actor_name=actor, args=(), kwargs=payload, options=options),
            delay=delay)

    def job(self, message_id: str) -> dict[str, Any] | None:
        self.sy.state.buffer.flush()
        return self.sy.state.history.get(message_id)

    def finished(self, message_id: str, timeout: float = 30) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            job = self.job(message_id)
            return job if job and job["status"] in ("done", "skipped", "failed") else None
        return wait_for(final, timeout=timeout, what=f"job {message_id} to finish")

    def subscription(self, subscription_id: str) -> Subscription:
        with self.db.session() as session:
            sub = subscriptions.subscription(session, subscription_id)
            assert sub is not None
            session.expunge(sub)
            return sub


@pytest.fixture
def ops(build_switchyard: Any, start_worker: Any, database_url: str,
        queue: str) -> Iterator[Ops]:
    telegram = TelegramFake(BOT_TOKEN)
    sy = build_switchyard(database_url=database_url, telegram_backend="api",
                          telegram_bot_token=BOT_TOKEN, telegram_api_url=telegram.url)
    # The family's jobs and options, on a queue of the test's own: RabbitMQ's queue names
    # are shared by every test run on it.
    sy.declare([Job(j.fn, j.model, j.name, queue, j.options) for j in jobs_of(bot)])
    start_worker(sy)
    yield Ops(sy, Database(database_url), telegram, queue)
    telegram.stop()


def removal(user_id: str, chat_id: int, subscription_id: str, reason: str) -> dict[str, Any]:
    return {"operation": "REMOVE_USER", "userId": user_id, "channelId": chat_id,
            "subscriptionId": subscription_id, "reason": reason}


def messages_to(ops: Ops, telegram_id: int) -> list[dict[str, Any]]:
    return [m for m in ops.telegram.messages if m["chat"]["id"] == telegram_id]


def test_an_invite_retried_after_a_refund_makes_no_link(ops):
    # given an invite whose first attempt fails with a retryable 502
    chat_id, (user_id, telegram_id) = new_channel(ops), new_user(ops)
    subscription_id = unique("sub")
    ops.telegram.script(html_error(502), path="createChatInviteLink", times=1)
    invited = ops.send("invite_user", invite(user_id, chat_id, subscription_id))
    wait_for(lambda: (ops.job(invited.message_id) or {}).get("status") == "retrying",
             what="the invite's retry")
    # when the refund is approved while it waits: the service approving it marks the
    # subscription refunded (seed 001's DisputeService) and sends the removal, which
    # runs after the invite (one subscription's operations run in the order sent)
    with ops.db.session() as session:
        sub = subscriptions.subscription(session, subscription_id)
        assert sub is not None
        sub.status = subscriptions.REFUNDED
    removed = ops.send("remove_user", removal(user_id, chat_id, subscription_id, "refund"))
    # then the retry makes no link and sends nothing, and says why
    job = ops.finished(invited.message_id)
    assert job["status"] == "done" and job["retries"] == 1, job
    assert job["result"]["skipped"] == "subscription refunded"
    assert len(calls(ops, "createChatInviteLink", chat_id)) == 1  # the failed attempt
    assert [x for x in ops.telegram.invite_links if x["chat_id"] == chat_id] == []
    assert messages_to(ops, telegram_id) == []
    # and the subscription stays refunded, with no link on it
    assert ops.finished(removed.message_id)["status"] == "done"
    sub = ops.subscription(subscription_id)
    assert (sub.status, sub.invite_link) == ("refunded", None)


def test_an_invite_sent_with_a_delay_before_a_refund_makes_no_link(ops):
    # given an invite sent with a delay, and a refund sent after it that comes due first
    chat_id, (user_id, telegram_id) = new_channel(ops), new_user(ops)
    subscription_id = unique("sub")
    invited = ops.send("invite_user", invite(user_id, chat_id, subscription_id), delay=1_500)
    removed = ops.send("remove_user", removal(user_id, chat_id, subscription_id, "refund"))
    assert ops.finished(removed.message_id)["status"] == "done"
    # when the invite comes due, after the refund
    job = ops.finished(invited.message_id)
    # then it was sent before the refund: no link, no message, still refunded
    assert job["status"] == "done", job
    assert job["result"] == {"subscriptionId": subscription_id,
                             "skipped": "subscription refunded", "inviteCreated": False,
                             "notified": False}
    assert calls(ops, "createChatInviteLink", chat_id) == []
    assert messages_to(ops, telegram_id) == []
    assert ops.subscription(subscription_id).status == "refunded"


def test_a_new_order_after_an_expiry_is_invited(ops):
    # given a subscriber invited for an order that then expired
    chat_id, (user_id, telegram_id) = new_channel(ops), new_user(ops)
    subscription_id = unique("sub")
    first = invite(user_id, chat_id, subscription_id)
    assert ops.finished(ops.send("invite_user", first).message_id)["status"] == "done"
    expired = ops.send("remove_user", removal(user_id, chat_id, subscription_id, "expiry"))
    assert ops.finished(expired.message_id)["status"] == "done"
    assert ops.subscription(subscription_id).status == "expired"
    # when the subscriber renews: a new order on the same subscription
    renewal = {**first, "orderId": unique("order")}
    job = ops.finished(ops.send("invite_user", renewal).message_id)
    # then they get a new link (the first may be used up), and the subscription is active
    assert job["status"] == "done" and job["result"]["inviteCreated"] is True, job
    links = [x["invite_link"] for x in ops.telegram.invite_links if x["chat_id"] == chat_id]
    assert len(links) == 2 and links[1] in messages_to(ops, telegram_id)[-1]["text"]
    sub = ops.subscription(subscription_id)
    assert (sub.status, sub.order_id, sub.invite_link) == (
        "active", renewal["orderId"], links[1])


def at(minutes: int) -> datetime.datetime:
    return datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        minutes=minutes)


@pytest.mark.parametrize(("status", "closed_order", "order", "sent", "entitled"), [
    ("active", "A", "A", 0, True),
    ("refunded", "A", "B", 20, False),      # a refund is final, whatever order comes
    ("expired", "A", "A", 20, False),       # the order that expired, sent again
    ("expired", "A", "B", 5, True),         # a renewal, even one sent before the removal ran
    ("expired", None, None, 5, False),      # no orders to tell: sent before the removal
    ("expired", None, None, 20, True),      # ... or after it
    ("expired", "A", None, 20, True),
    ("cancelled", None, None, 20, False),   # a state this service does not know of
])
def test_what_entitles_an_invite(status, closed_order, order, sent, entitled):
    sub = Subscription(id="s", user_id="u", channel_id=-1, status=status,
                       order_id=closed_order, removed_at=at(10))
    why = subscriptions.not_entitled(sub, order_id=order, sent_at=at(sent))
    assert (why is None) == entitled and (entitled or why == f"subscription {status}")


def refunded_subscription(session: Any, subscription_id: str) -> Subscription:
    session.add(User(id=f"u-{subscription_id}"))
    session.flush()
    sub = subscriptions.ensure_subscription(session, subscription_id,
                                            user_id=f"u-{subscription_id}", channel_id=-1,
                                            order_id="A")
    sub.status, sub.removal_reason, sub.removed_at = "refunded", "refund", at(0)
    return sub


def test_recording_an_invite_never_turns_a_refund_active(database_url):
    database = Database(database_url)
    with database.session() as session:
        sub = refunded_subscription(session, "s-invite")
        subscriptions.record_invite(sub, link="https://t.me/+x", expires_at=at(60),
                                    order_id="A")
        assert sub.status == "refunded"
    database.dispose()


def test_a_removal_after_a_refund_leaves_it_a_refund(database_url):
    database = Database(database_url)
    with database.session() as session:
        sub = refunded_subscription(session, "s-removal")
        subscriptions.record_removal(sub, "expiry", sent_at=at(5))
        assert (sub.status, sub.removal_reason, sub.removed_at) == ("refunded", "refund", at(0))
    database.dispose()

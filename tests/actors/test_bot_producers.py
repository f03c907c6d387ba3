"""The seed's four producers go through the one way in: a repeat within the
deduplication window returns the job already queued instead of queueing another."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from actors import bot
from middleware.admission import group_lane


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_repeated_operation_returns_the_job_already_queued(build_switchyard: Any) -> None:
    sy = build_switchyard()
    sy.declare([bot])
    first = bot.on_subscription_activated(sy, "u-1", -1001, "sub-1", "order-1")
    again = bot.on_subscription_activated(sy, "u-1", -1001, "sub-1", "order-1")
    other = bot.on_refund_approved(sy, "u-1", -1001, "sub-1")
    assert again == first and other != first
    # the removal waits for the invite: one subscription's operations run in order
    assert sy.queues.depth(bot.QUEUE) == 1
    assert sy.state.lanes.waiting(group_lane(bot.QUEUE, "sub-1")) == [other]
    record = sy.state.history.get(first)
    assert record is not None and record["actor"] == "invite_user"


class Sent(dramatiq.Middleware):
    """The messages a producer queued, as the broker was handed them."""

    def __init__(self) -> None:
        self.messages: list[dramatiq.Message[Any]] = []

    def after_enqueue(self, broker: Any, message: Any, delay: int | None) -> None:
        self.messages.append(message)


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_each_producer_queues_its_operation_with_the_seeds_payload(
    build_switchyard: Any, state: Any, prefix: str,
) -> None:
    # given the bot's jobs, and a record of what reaches the broker
    sy = build_switchyard()
    sy.declare([bot])
    sent = Sent()
    sy.broker.add_middleware(sent)

    # when each of the seed's four integration points is called
    ids = [
        bot.on_subscription_activated(sy, "u-1", -1001, "sub-1", "order-1"),
        bot.on_subscription_expired(sy, "u-2", -1002, "sub-2"),
        bot.on_refund_approved(sy, "u-3", -1003, "sub-3"),
        bot.on_listing_created(sy, -1004, "listing-4"),
    ]

    # then each queued its own operation on the bot's queue, with the seed's payload
    assert [m.message_id for m in sent.messages] == ids
    assert [(m.actor_name, m.queue_name) for m in sent.messages] == [
        ("invite_user", bot.QUEUE), ("remove_user", bot.QUEUE), ("remove_user", bot.QUEUE),
        ("verify_permissions", bot.QUEUE)]
    assert [m.kwargs for m in sent.messages] == [
        {"operation": "INVITE_USER", "userId": "u-1", "channelId": -1001,
         "subscriptionId": "sub-1", "orderId": "order-1"},
        {"operation": "REMOVE_USER", "userId": "u-2", "channelId": -1002,
         "subscriptionId": "sub-2", "reason": "expiry"},
        {"operation": "REMOVE_USER", "userId": "u-3", "channelId": -1003,
         "subscriptionId": "sub-3", "reason": "refund"},
        {"operation": "VERIFY_PERMISSIONS", "channelId": -1004, "listingId": "listing-4"},
    ]

    # and each holds its deduplication key for 5 minutes, the seed's SQS FIFO window
    markers = [name for name in state.scan_iter(f"{prefix}:idem:*") if name.endswith(b":queued")]
    assert len(markers) == 4
    for name in markers:
        assert 5 * 60_000 - 60_000 < state.pttl(name) <= 5 * 60_000


def test_the_bot_jobs_keep_their_keys_for_the_deduplication_window() -> None:
    # the run-time side of the window: a key marked done lives as long as the producer's
    for actor in (bot.invite_user, bot.remove_user, bot.verify_permissions):
        assert actor.options["idempotency_ttl"] == bot.DEDUPLICATION_MS == 5 * 60_000

"""The seed's four producers go through the one way in: a repeat within the
deduplication window returns the job already queued instead of queueing another."""

from __future__ import annotations

from typing import Any

import pytest

from actors import bot


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_repeated_operation_returns_the_job_already_queued(build_switchyard: Any) -> None:
    sy = build_switchyard()
    sy.declare([bot])
    first = bot.on_subscription_activated(sy, "u-1", -1001, "sub-1", "order-1")
    again = bot.on_subscription_activated(sy, "u-1", -1001, "sub-1", "order-1")
    other = bot.on_refund_approved(sy, "u-1", -1001, "sub-1")
    assert again == first and other != first
    assert sy.queues.depth(bot.QUEUE) == 2
    record = sy.state.history.get(first)
    assert record is not None and record["actor"] == "invite_user"
